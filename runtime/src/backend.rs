//! The backend abstraction: one trait every device implements.
//!
//! The trainer, evaluator and visualiser talk only to an [`Executor`]: a model
//! (a [`Plan`] with its parameters and optimizer state) instantiated on one
//! device. The CPU backend implements it now; the CUDA backend implements the
//! same trait, so the trainer does not change when it arrives.

use crate::budget::{self, human};
use crate::plan::{Plan, ReluRule, Shape};

/// Errors a backend reports.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("batch holds {got} values, expected {expected} ({n} images of {shape})")]
    BatchSize {
        got: usize,
        expected: usize,
        n: usize,
        shape: String,
    },
    #[error("label {label} of image {index} is out of range for {classes} classes")]
    LabelOutOfRange {
        label: u32,
        index: usize,
        classes: usize,
    },
    #[error("parameter `{name}` has {got} values, expected {expected}")]
    ParamSize {
        name: String,
        got: usize,
        expected: usize,
    },
    #[error("expected {expected} parameter tensors, got {got}")]
    ParamCount { expected: usize, got: usize },
    #[error("no layer named `{0}`")]
    UnknownLayer(String),
    #[error("{0}")]
    Device(String),
    /// A batch whose buffers would not fit the memory budget; refused
    /// before allocating.
    #[error(transparent)]
    Memory(#[from] crate::budget::BudgetError),
}

pub type Result<T> = std::result::Result<T, BackendError>;

/// One mini-batch: `n` images, channels-last (`N x H x W x C`), and labels.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub images: &'a [f32],
    pub labels: &'a [u32],
    pub n: usize,
}

/// Checks that `images` holds `n` images of `plan`'s input shape.
pub fn check_images(plan: &Plan, images: &[f32], n: usize) -> Result<()> {
    let expected = n * plan.input.len();
    if images.len() != expected {
        return Err(BackendError::BatchSize {
            got: images.len(),
            expected,
            n,
            shape: plan.input.to_string(),
        });
    }
    Ok(())
}

/// Checks that the per-image buffers of a batch of `n` images of `plan`,
/// `per_image` bytes each, fit `budget`; the message names the batch, the
/// model and the size per image.
pub fn check_batch_memory(
    plan: &Plan,
    n: usize,
    per_image: u64,
    budget: &budget::Budget,
) -> Result<()> {
    budget.check(
        format_args!(
            "a batch of {n} images (the activations of model `{}`, {} per image)",
            plan.name,
            human(u128::from(per_image))
        ),
        budget::product(&[n as u128, u128::from(per_image)]),
    )?;
    Ok(())
}

/// Checks a training batch against `plan`: image count and size, one label
/// per image, every label a class of the model.
pub fn check_batch(plan: &Plan, batch: &Batch<'_>) -> Result<()> {
    let n = batch.n;
    check_images(plan, batch.images, n)?;
    if batch.labels.len() != n {
        return Err(BackendError::Device(format!(
            "batch has {} labels for {n} images",
            batch.labels.len()
        )));
    }
    let classes = plan.classes;
    if let Some((index, &label)) = batch
        .labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= classes)
    {
        return Err(BackendError::LabelOutOfRange {
            label,
            index,
            classes,
        });
    }
    Ok(())
}

/// What an executor's activation buffers hold: what `backward_to_input`
/// (and dropout's backward) may continue from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarded {
    Nothing,
    /// A training step of `n` images (dropout masks in use).
    Train {
        n: usize,
    },
    /// An inference pass of `n` images through layer `last_layer`.
    Infer {
        n: usize,
        last_layer: usize,
    },
}

impl Forwarded {
    /// The batch size of the inference pass `backward_to_input` from layer
    /// `layer_idx` continues, after checking that `signal` is one value per
    /// element of that layer's output (`out_shape`, per image).
    pub fn backward_from(
        self,
        layer_idx: usize,
        out_shape: Shape,
        signal: &[f32],
    ) -> Result<usize> {
        let n = match self {
            Forwarded::Infer { n, last_layer } if last_layer >= layer_idx => n,
            _ => {
                return Err(BackendError::Device(format!(
                    "backward_to_input from layer #{layer_idx} needs a forward_to that reached it"
                )))
            }
        };
        let out_len = n * out_shape.len();
        if signal.len() != out_len {
            return Err(BackendError::BatchSize {
                got: signal.len(),
                expected: out_len,
                n,
                shape: out_shape.to_string(),
            });
        }
        Ok(n)
    }
}

/// One timed kernel launch (see [`Executor::set_profiling`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KernelTime {
    /// The kernel's name in the generated source.
    pub kernel: String,
    /// What it computes (`forward`, `backward_data`, ...).
    pub role: String,
    /// The plan layers it implements.
    pub layers: Vec<String>,
    /// Wall time from a finished device to the launch's end.
    pub seconds: f64,
    /// Floating-point operations and device-memory bytes of the launch
    /// (the code generator's counts for this batch size).
    pub flops: u64,
    pub bytes: u64,
}

/// What one forward/backward step measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepStats {
    /// Sum over the batch of the per-image cross-entropy.
    pub loss_sum: f64,
    /// Number of images whose top-1 prediction equals the label.
    pub correct: usize,
}

/// Hyper-parameters of one SGD update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdStep {
    pub lr: f32,
    pub momentum: f32,
    pub nesterov: bool,
    /// L2 weight decay, applied to weights (not biases).
    pub weight_decay: f32,
}

/// A model instantiated on a device.
pub trait Executor {
    fn plan(&self) -> &Plan;

    /// Device name for logs (`cpu (2 threads)`, `cuda:0 NVIDIA H100`).
    fn device_name(&self) -> String;

    /// `Ok` when the per-image buffers of a batch of `n` images
    /// (activations, ReLU inputs, switches, masks, gradients) fit the memory
    /// they live in: the host's budget ([`crate::budget`]) on the CPU and
    /// the emulator, the GPU's free memory under CUDA. Every pass checks its
    /// batch this way before growing its buffers, so a batch too large is an
    /// error ([`BackendError::Memory`]), never an allocation failure; a
    /// command calls it first, before it loads data or builds inputs for
    /// `n` images, to refuse a `--batch` at once.
    fn fits_batch(&self, n: usize) -> Result<()>;

    /// Forward and backward pass over a batch in training mode (dropout active,
    /// seeded by `seed`): the gradients of the mean cross-entropy replace the
    /// previous ones. The batch's summed loss and top-1 hits are added to the
    /// executor's running statistics ([`Executor::take_stats`]); nothing is
    /// returned, so a device backend need not wait for the step to finish.
    fn forward_backward(&mut self, batch: &Batch<'_>, seed: u64) -> Result<()>;

    /// The statistics of the `forward_backward` calls since the last call
    /// (or since creation), which it resets. On a device this reads back,
    /// the one synchronisation point of a training loop.
    fn take_stats(&mut self) -> Result<StepStats>;

    /// Starts (`true`) or stops timing every kernel launch: each launch then
    /// waits for the device before and after it, so a profiled run is
    /// slower, and the times include the launch itself. Returns false where
    /// the backend has no kernels of its own to time (the CPU).
    fn set_profiling(&mut self, _on: bool) -> bool {
        false
    }

    /// The launches timed since profiling started or the last call.
    fn take_profile(&mut self) -> Vec<KernelTime> {
        Vec::new()
    }

    /// `forward_backward` then `take_stats`: the statistics of this step
    /// plus any not taken before (tests and one-off steps).
    fn forward_backward_stats(&mut self, batch: &Batch<'_>, seed: u64) -> Result<StepStats> {
        self.forward_backward(batch, seed)?;
        self.take_stats()
    }

    /// Applies one SGD step with the gradients of the last `forward_backward`.
    fn sgd_update(&mut self, step: &SgdStep) -> Result<()>;

    /// Inference: class probabilities, `n x classes`, row-major.
    fn infer(&mut self, images: &[f32], n: usize) -> Result<Vec<f32>>;

    /// Parameter values, in `Plan::params()` order.
    fn read_params(&self) -> Result<Vec<Vec<f32>>>;
    fn write_params(&mut self, values: &[Vec<f32>]) -> Result<()>;

    /// Momentum buffers, in `Plan::params()` order.
    fn read_momentum(&self) -> Result<Vec<Vec<f32>>>;
    fn write_momentum(&mut self, values: &[Vec<f32>]) -> Result<()>;

    /// Gradients of the last `forward_backward`, in `Plan::params()` order.
    fn read_grads(&self) -> Result<Vec<Vec<f32>>>;

    /// Forward pass in inference mode that returns the output of layer
    /// `layer_idx` (`n x H x W x C`) and keeps what a later
    /// [`Executor::backward_to_input`] needs (ReLU inputs, max-pool switches).
    fn forward_to(&mut self, images: &[f32], n: usize, layer_idx: usize) -> Result<Vec<f32>>;

    /// Propagates `signal` (shaped like the output of `layer_idx` of the last
    /// `forward_to`) back to the input image with the given ReLU rule; returns
    /// `n x H x W x C` of the input.
    fn backward_to_input(
        &mut self,
        layer_idx: usize,
        signal: &[f32],
        rule: ReluRule,
    ) -> Result<Vec<f32>>;
}
