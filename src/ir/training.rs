//! The training recipe of a `.net` file's `train { ... }` section.
//!
//! The compiler only parses, checks and shows it; the runtime's trainer
//! consumes it as a `runtime::train::Recipe` (command-line flags override
//! it), which also computes the learning rate of each step.

use serde::{Deserialize, Serialize};

/// The learning-rate schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Schedule {
    Constant,
    /// Multiply by `gamma` at each of `milestones` (epochs), as in the paper.
    Step {
        gamma: f64,
        milestones: Vec<u32>,
    },
    /// Cosine decay from the base rate to zero over the run.
    Cosine,
}

/// Preprocessing fitted on the training set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Preprocess {
    None,
    /// Per-channel mean/std normalisation.
    Normalize,
    /// Global contrast normalisation + ZCA whitening (the paper).
    GcnZca,
}

/// Weight initialisation of a fresh run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Init {
    /// He-normal weights, zero biases.
    He,
    /// He-normal, then layer-sequential unit variance on training images
    /// (Mishkin & Matas 2016), with class scores that start active.
    #[default]
    Lsuv,
}

/// Training recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Training {
    pub momentum: f64,
    pub nesterov: bool,
    pub lr: f64,
    pub schedule: Schedule,
    pub epochs: u32,
    pub batch: u32,
    pub weight_decay: f64,
    pub preprocess: Preprocess,
    pub flip: bool,
    pub translate: u32,
    /// Epochs of linear learning-rate warm-up from lr/10 (0: none).
    pub warmup: u32,
    /// Initialisation of a fresh run.
    #[serde(default)]
    pub init: Init,
}

impl Init {
    /// The keyword of the `init` setting.
    pub fn keyword(self) -> &'static str {
        match self {
            Init::He => "he",
            Init::Lsuv => "lsuv",
        }
    }
}

impl Default for Training {
    fn default() -> Self {
        Self {
            momentum: 0.9,
            nesterov: false,
            lr: 0.01,
            schedule: Schedule::Constant,
            epochs: 10,
            batch: 128,
            weight_decay: 0.0,
            preprocess: Preprocess::Normalize,
            flip: false,
            translate: 0,
            warmup: 0,
            init: Init::Lsuv,
        }
    }
}
