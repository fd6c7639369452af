//! Checkpoints: weights, optimizer state, fitted preprocessing and training
//! progress in one safetensors file, written atomically.
//!
//! Tensor names: `LAYER.weight` / `LAYER.bias` (parameters, HWIO weights),
//! `momentum.LAYER.weight` (SGD state), `preprocess.*` (fitted
//! preprocessing). Metadata (strings): `model_hash`, `model`, `epoch` (epochs
//! finished), `batch` (batches done in the current epoch), `seed`, the partial
//! epoch's running sums, the best test accuracy and the preprocessing header.
//!
//! Invariant: a checkpoint on disk is always whole. It is written to a
//! temporary file in the same folder, synced, then renamed over the old one,
//! so a failed or interrupted write leaves the previous checkpoint intact.

use crate::data::preprocess::{NamedTensor, Preprocess, PreprocessHeader};
use crate::plan::Plan;
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    File(#[from] crate::file::FileError),
    #[error("checkpoint {path} is truncated or corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "checkpoint {path} does not fit model `{model}`: layer `{layer}` has {found} in the checkpoint, the model needs {expected}"
    )]
    Mismatch {
        path: PathBuf,
        model: String,
        layer: String,
        found: String,
        expected: String,
    },
    #[error("cannot write checkpoint {path}: {source} (the previous checkpoint is unchanged)")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Training progress stored beside the weights.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Epochs finished.
    pub epoch: u32,
    /// Batches finished in epoch `epoch` (0 at an epoch boundary).
    pub batch: usize,
    pub seed: u64,
    /// Running sums of the unfinished epoch: loss, correct, images, seconds.
    pub loss_sum: f64,
    pub correct: u64,
    pub seen: u64,
    pub seconds: f64,
    pub best_accuracy: f64,
}

/// Everything a checkpoint holds.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub model_hash: String,
    pub model: String,
    pub params: Vec<Vec<f32>>,
    /// Empty when the checkpoint holds no optimizer state.
    pub momentum: Vec<Vec<f32>>,
    pub preprocess: Option<Preprocess>,
    /// Names of the classes of the data set it was trained on.
    pub class_names: Vec<String>,
    pub progress: Progress,
}

/// The largest checkpoint `plan` can have: weights and momentum, the
/// preprocessing's tensors (at most a ZCA matrix and two vectors over one
/// image's values) and 16 MiB for the header and metadata. A longer file is
/// refused before it is read whole (a checkpoint named by mistake, or
/// `/dev/zero`).
fn max_bytes(plan: &Plan) -> u64 {
    let params: u64 = plan.params().iter().map(|s| s.len() as u64).sum();
    let image = plan.input.len() as u64;
    let values = 2 * params + image * image + 2 * image;
    values.saturating_mul(4).saturating_add(16 << 20)
}

fn shape_text(dims: &[usize]) -> String {
    dims.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join("x")
}

impl Checkpoint {
    /// Writes atomically to `path`.
    pub fn save(&self, plan: &Plan, path: &Path) -> Result<(), CheckpointError> {
        let write_err = |source| CheckpointError::Write {
            path: path.to_path_buf(),
            source,
        };
        let specs = plan.params();
        let mut tensors: Vec<NamedTensor> = Vec::new();
        for (spec, values) in specs.iter().zip(&self.params) {
            tensors.push((spec.name.clone(), spec.dims.clone(), values.clone()));
        }
        for (spec, values) in specs.iter().zip(&self.momentum) {
            tensors.push((
                format!("momentum.{}", spec.name),
                spec.dims.clone(),
                values.clone(),
            ));
        }
        let mut metadata: HashMap<String, String> = HashMap::new();
        if let Some(preprocess) = &self.preprocess {
            tensors.extend(preprocess.to_tensors());
            metadata.insert(
                "preprocess".into(),
                serde_json::to_string(&preprocess.header()).expect("header serialises"),
            );
        }
        let p = &self.progress;
        metadata.insert("model_hash".into(), self.model_hash.clone());
        metadata.insert("model".into(), self.model.clone());
        metadata.insert(
            "class_names".into(),
            serde_json::to_string(&self.class_names).expect("names serialise"),
        );
        metadata.insert("epoch".into(), p.epoch.to_string());
        metadata.insert("batch".into(), p.batch.to_string());
        metadata.insert("seed".into(), p.seed.to_string());
        metadata.insert("loss_sum".into(), format!("{:e}", p.loss_sum));
        metadata.insert("correct".into(), p.correct.to_string());
        metadata.insert("seen".into(), p.seen.to_string());
        metadata.insert("seconds".into(), format!("{:e}", p.seconds));
        metadata.insert("best_accuracy".into(), format!("{:e}", p.best_accuracy));
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
            .into_iter()
            .map(|(name, dims, values)| {
                let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                (name, raw, dims)
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = bytes
            .iter()
            .map(|(name, raw, dims)| {
                let view = TensorView::new(Dtype::F32, dims.clone(), raw)
                    .expect("sizes agree by construction");
                (name.clone(), view)
            })
            .collect();
        let data = safetensors::serialize(views, Some(metadata))
            .map_err(|err| write_err(std::io::Error::other(err.to_string())))?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.tmp",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("checkpoint")
        ));
        let result = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&data)?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(err) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(write_err(err));
        }
        Ok(())
    }

    /// Reads a checkpoint and checks it against `plan`: a tensor missing or
    /// of another shape is an error naming the layer and both shapes.
    pub fn load(plan: &Plan, path: &Path) -> Result<Checkpoint, CheckpointError> {
        let bytes = crate::file::read_limited(
            path,
            max_bytes(plan),
            &format!("a checkpoint of model `{}`", plan.name),
        )?;
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let (_, header) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let tensors =
            safetensors::SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let read = |name: &str| -> Option<(Vec<usize>, Vec<f32>)> {
            let view = tensors.tensor(name).ok()?;
            let values = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Some((view.shape().to_vec(), values))
        };
        let mut params = Vec::new();
        let mut momentum = Vec::new();
        for spec in plan.params() {
            let layer = plan.layers[spec.layer].name.clone();
            let mismatch = |found: String| CheckpointError::Mismatch {
                path: path.to_path_buf(),
                model: plan.name.clone(),
                layer: layer.clone(),
                found,
                expected: format!("`{}` {}", spec.name, shape_text(&spec.dims)),
            };
            match read(&spec.name) {
                Some((dims, values)) if dims == spec.dims => params.push(values),
                Some((dims, _)) => {
                    return Err(mismatch(format!("`{}` {}", spec.name, shape_text(&dims))))
                }
                None => return Err(mismatch(format!("no tensor `{}`", spec.name))),
            }
            if let Some((dims, values)) = read(&format!("momentum.{}", spec.name)) {
                if dims == spec.dims {
                    momentum.push(values);
                }
            }
        }
        if momentum.len() != params.len() {
            momentum.clear();
        }
        let preprocess = match metadata.get("preprocess") {
            Some(json) => {
                let header: PreprocessHeader = serde_json::from_str(json)
                    .map_err(|e| corrupt(format!("preprocessing header: {e}")))?;
                let named: Vec<NamedTensor> = tensors
                    .names()
                    .into_iter()
                    .filter(|name| name.starts_with("preprocess."))
                    .filter_map(|name| {
                        read(name).map(|(dims, values)| (name.to_string(), dims, values))
                    })
                    .collect();
                Some(
                    Preprocess::from_tensors(&header, &named)
                        .map_err(|e| corrupt(e.to_string()))?,
                )
            }
            None => None,
        };
        let num = |key: &str| {
            metadata
                .get(key)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let progress = Progress {
            epoch: num("epoch") as u32,
            batch: num("batch") as usize,
            seed: metadata
                .get("seed")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            loss_sum: num("loss_sum"),
            correct: num("correct") as u64,
            seen: num("seen") as u64,
            seconds: num("seconds"),
            best_accuracy: num("best_accuracy"),
        };
        Ok(Checkpoint {
            model_hash: metadata.get("model_hash").cloned().unwrap_or_default(),
            model: metadata.get("model").cloned().unwrap_or_default(),
            params,
            momentum,
            preprocess,
            class_names: metadata
                .get("class_names")
                .and_then(|json| serde_json::from_str(json).ok())
                .unwrap_or_default(),
            progress,
        })
    }
}
