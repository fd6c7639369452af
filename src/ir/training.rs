//! The training recipe of a `.net` file's `train { ... }` section.
//!
//! The compiler only parses, checks and shows it; the runtime's trainer
//! consumes it (command-line flags override it).

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
        }
    }
}

impl Training {
    /// Learning rate at `epoch` (0-based) of a run of `epochs` epochs, with
    /// `progress` in 0..1 inside the epoch (used by cosine and warm-up).
    pub fn lr_at(&self, epoch: u32, progress: f64) -> f64 {
        let t = epoch as f64 + progress.clamp(0.0, 1.0);
        let base = match &self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Step { gamma, milestones } => {
                let passed = milestones.iter().filter(|&&m| epoch >= m).count();
                self.lr * gamma.powi(passed as i32)
            }
            Schedule::Cosine => {
                let total = self.epochs.max(1) as f64;
                0.5 * self.lr * (1.0 + (std::f64::consts::PI * t / total).cos())
            }
        };
        if self.warmup > 0 && t < self.warmup as f64 {
            let frac = t / self.warmup as f64;
            base * (0.1 + 0.9 * frac)
        } else {
            base
        }
    }
}
