//! Checkpoints of random weights for tests that need weights but no
//! training: the He-normal initialisation of seed 7, as `train` would start.

use allcnnc::driver::Model;
use runtime::backend::Executor;
use runtime::cpu::CpuExecutor;
use runtime::data::Preprocess;
use runtime::train::checkpoint::{Checkpoint, Progress};

/// A checkpoint of `model`'s He-normal weights (seed 7) with `preprocess`
/// and `class_names`.
pub fn random_checkpoint(
    model: &Model,
    preprocess: Option<Preprocess>,
    class_names: Vec<String>,
) -> Checkpoint {
    let exec = CpuExecutor::new(model.plan.clone(), 7).unwrap();
    Checkpoint {
        model_hash: model.plan.model_hash.clone(),
        model: model.plan.name.clone(),
        params: exec.read_params().unwrap(),
        momentum: Vec::new(),
        preprocess,
        class_names,
        progress: Progress::default(),
    }
}
