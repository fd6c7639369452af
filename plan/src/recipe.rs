//! The training recipe: the `train { ... }` section of a `.net` file, which
//! the compiler parses and checks and the runtime's trainer consumes.
//!
//! Only the data lives here (with the pure functions of it: the learning
//! rate at a point of the run, the command-line names); fitting the
//! preprocessing, initialising and the loop itself are the runtime's
//! (`runtime::data::preprocess`, `runtime::train`).
//!
//! Invariant: the compiler and the runtime share these types; there is no
//! second copy and no conversion between them.

use serde::{Deserialize, Serialize};

/// The learning-rate schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Schedule {
    Constant,
    /// Multiply by `gamma` at each milestone epoch (the paper: 0.1 at 200, 250, 300).
    Step {
        gamma: f64,
        milestones: Vec<u32>,
    },
    /// Cosine decay from the base rate to zero over the run.
    Cosine,
}

/// How to train a model: the `train { ... }` section of a `.net` file, which
/// the compiler fills in (command-line flags override it). The loop reads
/// the optimiser, schedule, batch and augmentation; the caller fits
/// [`preprocess`](Self::preprocess) on the training set and, for a fresh
/// run, calibrates with `runtime::train::init::lsuv` when [`init`](Self::init) asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    pub momentum: f64,
    pub nesterov: bool,
    pub lr: f64,
    pub schedule: Schedule,
    pub epochs: u32,
    pub batch: u32,
    pub weight_decay: f64,
    /// Preprocessing fitted on the training set.
    pub preprocess: PreprocessKind,
    /// Random horizontal flips.
    pub flip: bool,
    /// Random translations of up to this many pixels.
    pub translate: u32,
    /// Epochs of linear learning-rate warm-up from lr/10 (0: none).
    pub warmup: u32,
    /// Initialisation of a fresh run.
    #[serde(default)]
    pub init: Init,
}

impl Default for Recipe {
    fn default() -> Self {
        Self {
            momentum: 0.9,
            nesterov: false,
            lr: 0.01,
            schedule: Schedule::Constant,
            epochs: 10,
            batch: 128,
            weight_decay: 0.0,
            preprocess: PreprocessKind::Normalize,
            flip: false,
            translate: 0,
            warmup: 0,
            init: Init::Lsuv,
        }
    }
}

impl Recipe {
    /// Images per training step.
    pub fn batch_size(&self) -> usize {
        self.batch as usize
    }

    /// Learning rate at `epoch` (0-based) with `progress` in 0..1 through it.
    pub fn lr_at(&self, epoch: u32, progress: f64) -> f64 {
        let t = epoch as f64 + progress.clamp(0.0, 1.0);
        let base = match &self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Step { gamma, milestones } => {
                let passed = milestones.iter().filter(|&&m| epoch >= m).count();
                self.lr * gamma.powi(passed as i32)
            }
            Schedule::Cosine => {
                0.5 * self.lr * (1.0 + (std::f64::consts::PI * t / self.epochs.max(1) as f64).cos())
            }
        };
        if self.warmup > 0 && t < self.warmup as f64 {
            base * (0.1 + 0.9 * t / self.warmup as f64)
        } else {
            base
        }
    }
}

/// The ranges of the settings, enforced alike on a `train` section and on
/// the command line's overrides of it, so that a value is refused with the
/// same rule and the same words wherever it comes from.
pub mod ranges {
    /// `lr`: what [`learning_rate`] accepts.
    pub const LEARNING_RATE: &str = "above 0 and below 100";
    /// `epochs`, `batch` and the command line's counts.
    pub const COUNT: &str = "at least 1";

    /// `schedule step gamma=G`: what [`gamma`] accepts.
    pub const GAMMA: &str = "above 0 and at most 1";

    /// A learning rate that can train (NaN and infinities are outside).
    pub fn learning_rate(lr: f64) -> bool {
        lr > 0.0 && lr < 100.0
    }

    /// A step schedule's factor: it decays the rate, never flips its sign.
    pub fn gamma(gamma: f64) -> bool {
        gamma > 0.0 && gamma <= 1.0
    }
}

/// Weight initialisation of a fresh run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Init {
    /// He-normal weights, zero biases (`runtime::train::init::he_normal`).
    He,
    /// He-normal, then layer-sequential unit variance on training images
    /// (`runtime::train::init::lsuv`), with class scores that start active.
    #[default]
    Lsuv,
}

impl Init {
    pub fn name(self) -> &'static str {
        match self {
            Init::He => "he",
            Init::Lsuv => "lsuv",
        }
    }
}

/// Which preprocessing to fit: the recipe's choice
/// ([`Recipe::preprocess`]).
///
/// Serialised by variant name (`"Normalize"`) in a recipe, and by its
/// command-line [`name`](Self::name) (`"mean-std"`) in a checkpoint's
/// `runtime::data::preprocess::PreprocessHeader`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PreprocessKind {
    /// The images stay `u8 / 255`.
    None,
    /// Per-channel mean/std normalisation (`mean-std`).
    Normalize,
    /// Global contrast normalisation + ZCA whitening (the paper).
    GcnZca,
}

impl PreprocessKind {
    /// All kinds with their command-line names.
    pub const ALL: [(PreprocessKind, &'static str); 3] = [
        (PreprocessKind::None, "none"),
        (PreprocessKind::Normalize, "mean-std"),
        (PreprocessKind::GcnZca, "gcn-zca"),
    ];

    pub fn name(self) -> &'static str {
        match self {
            PreprocessKind::None => "none",
            PreprocessKind::Normalize => "mean-std",
            PreprocessKind::GcnZca => "gcn-zca",
        }
    }
}

impl std::fmt::Display for PreprocessKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for PreprocessKind {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .iter()
            .find(|(_, name)| *name == text)
            .map(|(kind, _)| *kind)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|(_, name)| *name).collect();
                format!(
                    "unknown preprocessing `{text}`, expected one of {}",
                    names.join(", ")
                )
            })
    }
}
