//! A checkpoint for PyTorch: inference weights as safetensors in PyTorch's
//! layout, and a generated `MODEL.py` that builds the same network as a
//! `torch.nn.Sequential` and loads them.
//!
//! The safetensors file holds, all float32:
//! - `LAYER.weight` (`C_out x C_in x KH x KW`, OIHW, transposed from the
//!   checkpoint's HWIO) and `LAYER.bias` of each convolution: no momentum,
//!   nothing of training;
//! - the fitted preprocessing under the checkpoint's names:
//!   `preprocess.mean`, `preprocess.std` (`[C]`) or `preprocess.zca_mean`
//!   (`[D]`) and `preprocess.zca_matrix` (`[D, D]`), whose features are in
//!   the runtime's `H x W x C` order (the generated module transposes);
//! - metadata: `model`, `model_hash`, `class_names` (JSON), `preprocessing`
//!   (`none`, `mean-std`, `gcn-zca`), `gcn` (JSON, for gcn-zca), `input`
//!   (`CxHxW`), `format` (`pt`).
//!
//! The state-dict keys of the generated `Sequential` are these tensor names,
//! so `load_state_dict` takes the file as it is. See [`script`] for the
//! module.

mod script;

pub use script::script;

use plan::{Op, Plan};
use runtime::data::preprocess::{Method, NamedTensor};
use runtime::train::checkpoint::{serialize_f32, Checkpoint};
use std::collections::HashMap;

use crate::onnx::export::{hwio_to_oihw, ExportError};

/// The inference tensors of `checkpoint` in PyTorch's layout, by name:
/// `(name, dims, values)` in layer order, then the preprocessing's.
pub fn tensors(plan: &Plan, checkpoint: &Checkpoint) -> Result<Vec<NamedTensor>, ExportError> {
    crate::onnx::export::check_params(plan, checkpoint)?;
    let mut tensors = Vec::new();
    for (spec, values) in plan.params().iter().zip(&checkpoint.params) {
        let layer = &plan.layers[spec.layer];
        match (&layer.op, spec.dims.as_slice()) {
            (Op::Conv { .. }, &[kh, kw, c_in, c_out]) => tensors.push((
                spec.name.clone(),
                vec![c_out, c_in, kh, kw],
                hwio_to_oihw(values, kh, kw, c_in, c_out),
            )),
            _ => tensors.push((spec.name.clone(), spec.dims.clone(), values.clone())),
        }
    }
    if let Some(preprocess) = &checkpoint.preprocess {
        tensors.extend(preprocess.to_tensors_whole());
    }
    Ok(tensors)
}

/// The safetensors bytes of [`tensors`] with the metadata of the module doc.
pub fn safetensors(plan: &Plan, checkpoint: &Checkpoint) -> Result<Vec<u8>, ExportError> {
    let tensors = tensors(plan, checkpoint)?;
    let mut metadata: HashMap<String, String> =
        crate::onnx::export::model_metadata(plan, checkpoint)
            .into_iter()
            .map(|(key, value)| (key.to_string(), value))
            .collect();
    if let Some(Method::GcnZca { gcn, .. }) = checkpoint.preprocess.as_ref().map(|p| &p.method) {
        metadata.insert(
            "gcn".to_string(),
            serde_json::to_string(gcn).expect("numbers serialise"),
        );
    }
    metadata.insert("input".to_string(), plan.input.to_string());
    metadata.insert("format".to_string(), "pt".to_string());
    Ok(serialize_f32(tensors, metadata).expect("F32 tensors whose sizes agree with their dims"))
}
