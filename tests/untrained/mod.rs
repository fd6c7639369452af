//! A model file and a checkpoint of its random initial weights, for the
//! command-line tests that need weights but not training
//! (tests/hostile_cli.rs, tests/visualize_cli.rs).

use runtime::backend::Executor;
use runtime::cpu::CpuExecutor;
use runtime::train::checkpoint::{Checkpoint, Progress};
use std::path::{Path, PathBuf};

/// Writes `text` as `NAME.net` and a checkpoint of its random initial
/// weights into `dir`.
pub fn model_and_checkpoint(dir: &Path, text: &str) -> (PathBuf, PathBuf) {
    let plan = allcnnc::driver::Model::from_text("model.net", text)
        .expect("model")
        .plan;
    let model = dir.join(format!("{}.net", plan.name));
    std::fs::write(&model, text).unwrap();
    let exec = CpuExecutor::new(plan.clone(), 3).unwrap();
    let checkpoint = Checkpoint {
        model_hash: plan.model_hash.clone(),
        model: plan.name.clone(),
        params: exec.read_params().unwrap(),
        momentum: Vec::new(),
        preprocess: None,
        class_names: Vec::new(),
        progress: Progress::default(),
    };
    let weights = dir.join(format!("{}.safetensors", plan.name));
    checkpoint.save(&plan, &weights).unwrap();
    (model, weights)
}
