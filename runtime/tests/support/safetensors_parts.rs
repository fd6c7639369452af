//! A safetensors file taken apart to be edited and written back, for the
//! tests that damage checkpoints (`runtime/tests/checkpoint.rs`,
//! `tests/train_cli.rs`, which includes this file by path).
#![allow(dead_code)]

use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::Path;

/// A tensor: name, dtype, dims and raw little-endian bytes.
pub type Tensor = (String, Dtype, Vec<usize>, Vec<u8>);

/// The tensors (sorted by name) and metadata of a safetensors file.
#[derive(Clone)]
pub struct Parts {
    pub tensors: Vec<Tensor>,
    pub metadata: HashMap<String, String>,
}

impl Parts {
    pub fn of(bytes: &[u8]) -> Parts {
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
        let file = safetensors::SafeTensors::deserialize(bytes).unwrap();
        let mut tensors: Vec<Tensor> = file
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                let (dtype, dims) = (view.dtype(), view.shape().to_vec());
                (name, dtype, dims, view.data().to_vec())
            })
            .collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let metadata = header.metadata().clone().unwrap_or_default();
        Parts { tensors, metadata }
    }

    pub fn read(path: &Path) -> Parts {
        Parts::of(&std::fs::read(path).unwrap())
    }

    pub fn bytes(&self) -> Vec<u8> {
        let views: Vec<(String, TensorView<'_>)> = self
            .tensors
            .iter()
            .map(|(name, dtype, dims, data)| {
                let view = TensorView::new(*dtype, dims.clone(), data).unwrap();
                (name.clone(), view)
            })
            .collect();
        safetensors::serialize(views, Some(self.metadata.clone())).unwrap()
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.bytes()).unwrap();
    }

    pub fn tensor(&mut self, name: &str) -> &mut Tensor {
        let tensor = self.tensors.iter_mut().find(|t| t.0 == name);
        tensor.unwrap_or_else(|| panic!("no tensor {name}"))
    }

    /// Sets value `index` of the F32 tensor `name`.
    pub fn set(&mut self, name: &str, index: usize, value: f32) {
        self.tensor(name).3[index * 4..index * 4 + 4].copy_from_slice(&value.to_le_bytes());
    }

    /// Turns the F32 tensor `name` into BF16 (the upper half of each
    /// value), as a converter would.
    pub fn make_bf16(&mut self, name: &str) {
        let tensor = self.tensor(name);
        tensor.1 = Dtype::BF16;
        tensor.3 = tensor
            .3
            .chunks_exact(4)
            .flat_map(|b| [b[2], b[3]])
            .collect();
    }

    /// The bytes of a copy changed by `edit`.
    pub fn edited(&self, edit: impl FnOnce(&mut Parts)) -> Vec<u8> {
        let mut parts = self.clone();
        edit(&mut parts);
        parts.bytes()
    }
}
