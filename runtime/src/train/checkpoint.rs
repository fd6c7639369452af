//! Checkpoints: weights, optimizer state, fitted preprocessing and training
//! progress in one safetensors file, written atomically.
//!
//! Tensor names: `LAYER.weight` / `LAYER.bias` (parameters, HWIO weights),
//! `momentum.LAYER.weight` (SGD state), `preprocess.*` (fitted
//! preprocessing). Metadata (strings): `format_version` ([`FORMAT_VERSION`];
//! the whole format is in docs/checkpoint.md), `model_hash`, `model`, `class_names`
//! (a JSON list), `preprocess` (the JSON preprocessing header, `null` for
//! none), `epoch` (epochs finished), `batch` (batches done in the current
//! epoch), `seed`, the partial epoch's running sums (`loss_sum`, `correct`,
//! `seen`, `seconds`) and `best_accuracy`.
//!
//! Invariant: a checkpoint on disk is always whole. It is written to a
//! temporary file in the same folder, synced, then renamed over the old one,
//! so a failed or interrupted write leaves the previous checkpoint intact.
//!
//! Invariant: a checkpoint is loaded exactly or refused with the reason.
//! [`Checkpoint::save`] writes every tensor as F32 and every metadata key
//! above, and [`Checkpoint::load`] gives back the same values bit for bit;
//! anything else is an error naming the file and what is wrong with it:
//! a tensor of another dtype (never reinterpreted), a missing tensor, a
//! tensor the model does not have (a checkpoint of another model), part of
//! the optimizer state, a missing or malformed metadata key (never a
//! default), a non-finite value, a standard deviation that is not positive,
//! a count out of range. A bad checkpoint so stops `eval`, `predict`,
//! `visualize` and `--resume` before it gives silent garbage. Metadata keys
//! this module does not know are ignored (safetensors writers add their own,
//! e.g. `format`).

use crate::data::preprocess::{NamedTensor, Preprocess, PreprocessHeader, TENSOR_PREFIX};
use crate::data::DataError;
use crate::plan::{ParamSpec, Plan};
use safetensors::tensor::{Dtype, TensorView};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The most epochs a checkpoint may say are finished. Far beyond any real
/// run: a larger count is a damaged or hand-edited file, and resuming from
/// it would skip the whole run.
pub const MAX_EPOCH: u32 = 1_000_000;

/// The version of the checkpoint format this build writes and the newest it
/// reads (metadata `format_version`; docs/checkpoint.md). Files written
/// before the key existed have the same layout and read as version 1.
pub const FORMAT_VERSION: u32 = 1;

/// The prefix of the optimizer state's tensor names.
const MOMENTUM_PREFIX: &str = "momentum.";

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
    #[error(
        "checkpoint {path}: tensor `{tensor}` is {dtype}; allcnnc checkpoints hold F32 tensors"
    )]
    Dtype {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },
    #[error("checkpoint {path} has no tensor `{tensor}`: {reason}")]
    MissingTensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    #[error(
        "checkpoint {path} holds tensor `{tensor}`, which is neither a parameter or momentum of model `{model}` nor a tensor of its `{preprocessing}` preprocessing (a checkpoint of another model?)"
    )]
    Unexpected {
        path: PathBuf,
        tensor: String,
        model: String,
        preprocessing: String,
    },
    #[error("checkpoint {path}: metadata `{key}` {reason}")]
    Metadata {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error(
        "checkpoint {path}: tensor `{tensor}` holds {value} at index {index}; weights, momentum and preprocessing must be finite"
    )]
    NonFinite {
        path: PathBuf,
        tensor: String,
        index: usize,
        value: f32,
    },
    #[error("checkpoint {path}: {source}")]
    Preprocess {
        path: PathBuf,
        source: Box<DataError>,
    },
    #[error(
        "checkpoint {path} was trained on the classes [{}] but data set {data} has the classes [{}] ({how}): its outputs would be read as the wrong classes. Use a data set with the classes the checkpoint was trained on",
        .checkpoint.join(", "),
        .data_names.join(", ")
    )]
    ClassNames {
        path: PathBuf,
        data: PathBuf,
        /// Boxed with `data_names`, to keep the error small.
        checkpoint: Box<[String]>,
        data_names: Box<[String]>,
        how: &'static str,
    },
    #[error(
        "checkpoint {path} has finished {epoch} epochs and the run has {epochs}: nothing to resume. Train longer with a larger --epochs, or start a fresh run without --resume"
    )]
    Finished {
        path: PathBuf,
        epoch: u32,
        epochs: u32,
    },
    #[error(
        "checkpoint {path} stopped after batch {batch} of epoch {}, but an epoch now has {batches} batches (another --batch or --limit than the run's?); resuming would skip or repeat images",
        .epoch.saturating_add(1)
    )]
    BatchOutOfRange {
        path: PathBuf,
        epoch: u32,
        batch: usize,
        batches: usize,
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
    /// Epochs finished (at most [`MAX_EPOCH`] in a loaded checkpoint).
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

impl Progress {
    /// Checks that a run of `epochs` epochs of `batches` batches each can
    /// continue from here, so that `--resume` never runs an empty or a
    /// repeated epoch: a run that has finished every epoch (or more) is
    /// refused, and so is a mid-epoch batch index that is not inside an
    /// epoch of this run (the batch size or the training set changed).
    /// `path` names the checkpoint in the message.
    pub fn check_resume(
        &self,
        path: &Path,
        epochs: u32,
        batches: usize,
    ) -> Result<(), CheckpointError> {
        if self.epoch >= epochs {
            return Err(CheckpointError::Finished {
                path: path.to_path_buf(),
                epoch: self.epoch,
                epochs,
            });
        }
        if self.batch >= batches.max(1) {
            return Err(CheckpointError::BatchOutOfRange {
                path: path.to_path_buf(),
                epoch: self.epoch,
                batch: self.batch,
                batches,
            });
        }
        Ok(())
    }
}

/// Everything a checkpoint holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub model_hash: String,
    pub model: String,
    pub params: Vec<Vec<f32>>,
    /// Empty when the checkpoint holds no optimizer state.
    pub momentum: Vec<Vec<f32>>,
    pub preprocess: Option<Preprocess>,
    /// Names of the classes of the data set it was trained on; empty when
    /// the weights come from no data set (e.g. random weights written by a
    /// test or a tool).
    pub class_names: Vec<String>,
    pub progress: Progress,
}

/// The largest checkpoint `plan` can have: weights and momentum, the
/// preprocessing's tensors (at most a ZCA matrix and two vectors over one
/// image's values) and 16 MiB for the header and metadata. A longer file is
/// refused before it is read whole (a checkpoint named by mistake, or
/// `/dev/zero`).
/// The bound is also at most the memory budget: a ZCA matrix over a large
/// input (150,528 values for 3x224x224: 90 GB) would otherwise allow
/// reading more than the machine holds.
fn max_bytes(plan: &Plan) -> u64 {
    let params: u64 = plan.params().iter().map(|s| s.len() as u64).sum();
    let image = plan.input.len() as u64;
    let values = (2 * params).saturating_add(image.saturating_mul(image) + 2 * image);
    let bound = values.saturating_mul(4).saturating_add(16 << 20);
    crate::budget::Budget::current().map_or(bound, |budget| bound.min(budget.bytes))
}

fn shape_text(dims: &[usize]) -> String {
    dims.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join("x")
}

/// The safetensors bytes of F32 `tensors` (each `dims` and as many values)
/// with `metadata`: what [`Checkpoint::save`] writes, and what the exports
/// of other layouts reuse.
pub fn serialize_f32(
    tensors: Vec<NamedTensor>,
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>, safetensors::SafeTensorError> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .into_iter()
        .map(|(name, dims, values)| {
            let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name, raw, dims)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, raw, dims)| {
            TensorView::new(Dtype::F32, dims.clone(), raw).map(|view| (name.clone(), view))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, Some(metadata))
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
                format!("{MOMENTUM_PREFIX}{}", spec.name),
                spec.dims.clone(),
                values.clone(),
            ));
        }
        let mut metadata: HashMap<String, String> = HashMap::new();
        if let Some(preprocess) = &self.preprocess {
            tensors.extend(preprocess.to_tensors());
        }
        // Always written (`null` for none), so that a missing key means a
        // damaged file, never "no preprocessing".
        let header = self.preprocess.as_ref().map(Preprocess::header);
        metadata.insert(
            "preprocess".into(),
            serde_json::to_string(&header).expect("header serialises"),
        );
        let p = &self.progress;
        metadata.insert("format_version".into(), FORMAT_VERSION.to_string());
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
        let data = serialize_f32(tensors, metadata)
            .map_err(|err| write_err(std::io::Error::other(err.to_string())))?;
        crate::file::write_atomically(path, |out| out.write_all(&data)).map_err(write_err)
    }

    /// Reads a checkpoint and checks it against `plan`: the values come
    /// back exactly as saved, or the file is refused naming what is wrong
    /// (see the module doc). A tensor of another shape is an error naming
    /// the layer and both shapes.
    ///
    /// Momentum is all or nothing: a file with no `momentum.*` tensor holds
    /// inference weights (`momentum` empty); one with some holds the
    /// optimizer state, and a missing one is refused by name rather than
    /// dropping the state and resuming with momentum zero. A tensor that is
    /// no parameter, momentum or preprocessing tensor of this model and
    /// checkpoint is refused too: it most likely belongs to a model with
    /// more layers whose first layers happen to have the same shapes.
    pub fn load(plan: &Plan, path: &Path) -> Result<Checkpoint, CheckpointError> {
        let bytes = crate::file::read_limited(
            path,
            max_bytes(plan),
            &format!("a checkpoint of model `{}`", plan.name),
        )?;
        Self::from_bytes(plan, path, &bytes)
    }

    /// [`Checkpoint::load`] of a file's bytes; `path` names it in messages.
    pub fn from_bytes(
        plan: &Plan,
        path: &Path,
        bytes: &[u8],
    ) -> Result<Checkpoint, CheckpointError> {
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let (_, header) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| corrupt(e.to_string()))?;
        let file =
            safetensors::SafeTensors::deserialize(bytes).map_err(|e| corrupt(e.to_string()))?;
        let meta = Metadata {
            path,
            values: header.metadata().clone().unwrap_or_default(),
        };
        meta.check_version()?;
        let tensors = Tensors { path, file };

        let specs = plan.params();
        let mismatch = |name: &str, spec: &ParamSpec, found: String| CheckpointError::Mismatch {
            path: path.to_path_buf(),
            model: plan.name.clone(),
            layer: plan.layers[spec.layer].name.clone(),
            found,
            expected: format!("`{name}` {}", shape_text(&spec.dims)),
        };
        // Tensor `name` (a parameter or its momentum) in the shape of
        // `spec`; `None` when absent.
        let shaped = |name: &str, spec: &ParamSpec| match tensors.read(name)? {
            Some((dims, values)) if dims == spec.dims => Ok(Some(values)),
            Some((dims, _)) => Err(mismatch(
                name,
                spec,
                format!("`{name}` {}", shape_text(&dims)),
            )),
            None => Ok(None),
        };
        let mut params = Vec::with_capacity(specs.len());
        for spec in &specs {
            let name = &spec.name;
            let values = shaped(name, spec)?
                .ok_or_else(|| mismatch(name, spec, format!("no tensor `{name}`")))?;
            params.push(values);
        }

        let momentum_names: Vec<String> = specs
            .iter()
            .map(|spec| format!("{MOMENTUM_PREFIX}{}", spec.name))
            .collect();
        let mut momentum = Vec::new();
        if let Some(present) = momentum_names.iter().find(|name| tensors.has(name)) {
            for (spec, name) in specs.iter().zip(&momentum_names) {
                let values = shaped(name, spec)?.ok_or_else(|| CheckpointError::MissingTensor {
                    path: path.to_path_buf(),
                    tensor: name.clone(),
                    reason: format!(
                        "the optimizer state is partial (it has `{present}`); momentum is saved for every parameter or for none"
                    ),
                })?;
                momentum.push(values);
            }
        }

        let preprocess = match meta
            .json::<Option<PreprocessHeader>>("preprocess", "a preprocessing header or null")?
        {
            Some(header) => {
                if header.shape != plan.input {
                    return Err(meta.error(
                        "preprocess",
                        format!(
                            "is for images of {} but model `{}` takes {}",
                            header.shape, plan.name, plan.input
                        ),
                    ));
                }
                let mut named: Vec<NamedTensor> = Vec::new();
                for name in tensors.names() {
                    if !name.starts_with(TENSOR_PREFIX) {
                        continue;
                    }
                    if let Some((dims, values)) = tensors.read(name)? {
                        named.push((name.to_string(), dims, values));
                    }
                }
                let preprocess = Preprocess::from_tensors(&header, &named).map_err(|source| {
                    CheckpointError::Preprocess {
                        path: path.to_path_buf(),
                        source: Box::new(source),
                    }
                })?;
                Some(preprocess)
            }
            None => None,
        };

        // Every tensor in the file must be one of those read above.
        let preprocess_names: Vec<&str> = preprocess
            .iter()
            .flat_map(Preprocess::tensor_names)
            .collect();
        let has_momentum = !momentum.is_empty();
        for name in tensors.names() {
            let known = specs.iter().any(|spec| spec.name == name)
                || (has_momentum && momentum_names.iter().any(|m| m == name))
                || preprocess_names.contains(&name);
            if !known {
                let kind = preprocess.as_ref().map_or("none", |p| p.kind().name());
                return Err(CheckpointError::Unexpected {
                    path: path.to_path_buf(),
                    tensor: name.to_string(),
                    model: plan.name.clone(),
                    preprocessing: kind.to_string(),
                });
            }
        }

        let class_names: Vec<String> = meta.json("class_names", "a JSON list of strings")?;
        if class_names.len() > plan.classes {
            return Err(meta.error(
                "class_names",
                format!(
                    "names {} classes but model `{}` has {}",
                    class_names.len(),
                    plan.name,
                    plan.classes
                ),
            ));
        }
        if let Some((i, name)) = class_names
            .iter()
            .enumerate()
            .find(|(i, name)| class_names[..*i].contains(name))
        {
            return Err(meta.error(
                "class_names",
                format!("names class {i} `{name}` a second time"),
            ));
        }
        Ok(Checkpoint {
            model_hash: meta.text("model_hash")?,
            model: meta.text("model")?,
            params,
            momentum,
            preprocess,
            class_names,
            progress: meta.progress()?,
        })
    }

    /// Checks that `data_names`, the class names of the data set at `data`,
    /// are the checkpoint's, in the same order: label `i` of the data set
    /// must mean the class the checkpoint learnt as output `i`. Another set
    /// or order is an error naming both lists, never a silent permutation
    /// of the labels. A checkpoint that records no class names (weights
    /// from no data set) matches any data set. `path` names the checkpoint.
    ///
    /// IDX data sets take their names from their folder (one whose name
    /// contains `fashion` has Fashion-MNIST's, others the digits), so a
    /// Fashion-MNIST copy in a folder named otherwise is refused: the
    /// message shows both lists.
    pub fn check_class_names(
        &self,
        path: &Path,
        data: &Path,
        data_names: &[String],
    ) -> Result<(), CheckpointError> {
        if self.class_names.is_empty() || self.class_names == data_names {
            return Ok(());
        }
        let mut ours = self.class_names.clone();
        let mut theirs = data_names.to_vec();
        ours.sort();
        theirs.sort();
        let how = if ours == theirs {
            "the same classes in another order"
        } else {
            "other classes"
        };
        Err(CheckpointError::ClassNames {
            path: path.to_path_buf(),
            data: data.to_path_buf(),
            checkpoint: self.class_names.clone().into(),
            data_names: data_names.into(),
            how,
        })
    }
}

/// A tensor's dims and values.
type DimsValues = (Vec<usize>, Vec<f32>);

/// The tensors of a checkpoint being read.
struct Tensors<'a> {
    path: &'a Path,
    file: safetensors::SafeTensors<'a>,
}

impl Tensors<'_> {
    /// Names of all tensors, sorted (so that the first bad one named in an
    /// error does not depend on hashing).
    fn names(&self) -> Vec<&str> {
        let mut names = self.file.names();
        names.sort_unstable();
        names
    }

    fn has(&self, name: &str) -> bool {
        self.file.tensor(name).is_ok()
    }

    /// Tensor `name` as dims and values, `None` when absent; refused when
    /// it is not F32 or holds a NaN or an infinity.
    fn read(&self, name: &str) -> Result<Option<DimsValues>, CheckpointError> {
        let Ok(view) = self.file.tensor(name) else {
            return Ok(None);
        };
        if view.dtype() != Dtype::F32 {
            return Err(CheckpointError::Dtype {
                path: self.path.to_path_buf(),
                tensor: name.to_string(),
                dtype: view.dtype().to_string(),
            });
        }
        // safetensors has checked that the data is 4 bytes per element.
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(CheckpointError::NonFinite {
                path: self.path.to_path_buf(),
                tensor: name.to_string(),
                index,
                value,
            });
        }
        Ok(Some((view.shape().to_vec(), values)))
    }
}

/// The metadata of a checkpoint being read: every key is required, and a
/// missing or malformed one is refused by name (a default would resume at
/// the wrong epoch or label classes wrongly).
struct Metadata<'a> {
    path: &'a Path,
    values: HashMap<String, String>,
}

impl Metadata<'_> {
    fn error(&self, key: &str, reason: String) -> CheckpointError {
        CheckpointError::Metadata {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            reason,
        }
    }

    fn get(&self, key: &str) -> Result<&str, CheckpointError> {
        self.values
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| self.error(key, "is missing".to_string()))
    }

    fn text(&self, key: &str) -> Result<String, CheckpointError> {
        self.get(key).map(str::to_string)
    }

    /// `key` parsed as `T` (integers: digits only, no `1e3`, no sign but
    /// `+`), `what` saying what it should be.
    fn parse<T: FromStr>(&self, key: &str, what: &str) -> Result<T, CheckpointError> {
        let value = self.get(key)?;
        value
            .parse()
            .map_err(|_| self.error(key, format!("is {value:?}, not {what}")))
    }

    /// A finite real of at least 0 (and at most `max`).
    fn real(&self, key: &str, max: f64, what: &str) -> Result<f64, CheckpointError> {
        let value = self.parse::<f64>(key, what)?;
        if value.is_finite() && (0.0..=max).contains(&value) {
            Ok(value)
        } else {
            Err(self.error(key, format!("is {:?}, not {what}", self.get(key)?)))
        }
    }

    fn json<T: DeserializeOwned>(&self, key: &str, what: &str) -> Result<T, CheckpointError> {
        let value = self.get(key)?;
        serde_json::from_str(value).map_err(|err| self.error(key, format!("is not {what}: {err}")))
    }

    /// `Ok` for a format this build reads: `format_version` from 1 to
    /// [`FORMAT_VERSION`], or absent (files from before the key, format 1).
    fn check_version(&self) -> Result<(), CheckpointError> {
        if !self.values.contains_key("format_version") {
            return Ok(());
        }
        let what = format!("a format version from 1 to {FORMAT_VERSION}");
        let version: u32 = self.parse("format_version", &what)?;
        if version == 0 {
            return Err(self.error("format_version", format!("is \"0\", not {what}")));
        }
        if version > FORMAT_VERSION {
            return Err(self.error(
                "format_version",
                format!(
                    "is {version}: the file was written by a newer allcnnc, and this one reads \
                     formats up to {FORMAT_VERSION}; use the newer allcnnc"
                ),
            ));
        }
        Ok(())
    }

    /// The training progress, every count an integer in range.
    fn progress(&self) -> Result<Progress, CheckpointError> {
        let epochs = format!("a whole number of epochs from 0 to {MAX_EPOCH}");
        let epoch: u32 = self.parse("epoch", &epochs)?;
        if epoch > MAX_EPOCH {
            return Err(self.error("epoch", format!("is \"{epoch}\", not {epochs}")));
        }
        let count = "a whole number of at least 0";
        let progress = Progress {
            epoch,
            batch: self.parse("batch", count)?,
            seed: self.parse("seed", "a whole number from 0 to 2^64-1")?,
            loss_sum: self.real("loss_sum", f64::MAX, "a finite sum of losses of at least 0")?,
            correct: self.parse("correct", count)?,
            seen: self.parse("seen", count)?,
            seconds: self.real("seconds", f64::MAX, "finite seconds of at least 0")?,
            best_accuracy: self.real("best_accuracy", 1.0, "an accuracy from 0 to 1")?,
        };
        if progress.correct > progress.seen {
            return Err(self.error(
                "correct",
                format!(
                    "is {} but only {} images were seen (`seen`)",
                    progress.correct, progress.seen
                ),
            ));
        }
        Ok(progress)
    }
}
