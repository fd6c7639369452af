//! Initialisation: the starting weights every executor loads
//! ([`he_normal`]), and data-dependent rescaling by layer-sequential unit
//! variance ([`lsuv`]).
//!
//! [`he_normal`] is a function of the plan and the seed only: the CPU
//! executor and the plan executor (CUDA or emulated) both start from it, so a
//! run on a device and one on the CPU start from the same weights.
//!
//! Mishkin & Matas, "All you need is a good init" (ICLR 2016), report that
//! deep plain ReLU nets, All-CNN-C among them, start learning at once when each
//! convolution is rescaled, in order from the input, so that its output has
//! unit variance on a batch of training data. He-normal weights assume
//! unit-variance inputs; the paper's GCN + ZCA whitening does not give them
//! (components with eigenvalues below the ZCA bias are shrunk), so under He
//! initialisation the logits of All-CNN-C start tiny, every weight gradient is
//! scaled down with them, and the paper's dropout keeps the net on the
//! `ln 10` plateau for hundreds of steps.
//!
//! [`lsuv`] runs after the executor's He-normal initialisation: for each
//! convolution, in layer order, it runs the net in inference mode up to that
//! layer on the calibration images and multiplies its weights (and biases) by
//! `sqrt(target / mean(out^2))`, where `target` is the second moment of the
//! activation of a zero-mean unit-variance pre-activation: 1/2 after a ReLU,
//! `(1 + slope^2) / 2` after a leaky ReLU, 1 without activation. Convolution,
//! (leaky) ReLU, pooling and dropout are positively homogeneous, and biases
//! start at zero, so one pass per layer hits the target exactly.
//!
//! Invariant: LSUV's result depends only on the executor's parameters and the
//! calibration images, so a seeded run stays reproducible. A layer whose
//! output is all zero (or not finite) keeps its weights and is reported.

use crate::backend::{Executor, Result};
use crate::plan::{Activation, Op, Plan};
use crate::rng::{derive_key, SplitMix64};
pub use ::plan::recipe::Init;
use serde::Serialize;

/// Key of the parameter-initialisation streams (mixed with the user's seed).
const INIT_STREAM: u64 = 0x696e_6974; // "init"

/// The standard deviation of the He/Kaiming normal initialiser for a layer
/// followed by `act`: `gain / sqrt(fan_in)` with gain `sqrt(2)` for a ReLU,
/// `sqrt(2 / (1 + slope^2))` for a leaky ReLU and 1 without activation.
fn he_std(act: Activation, fan_in: usize) -> f64 {
    let gain_sq = match act {
        Activation::None => 1.0,
        Activation::Relu => 2.0,
        Activation::LeakyRelu { slope } => 2.0 / (1.0 + (slope as f64).powi(2)),
    };
    (gain_sq / fan_in.max(1) as f64).sqrt()
}

/// Fresh parameters of `plan`, in [`Plan::params`] order: convolution
/// weights He-normal (see [`he_std`]), biases zero.
///
/// Parameter `idx` draws from its own SplitMix64 stream keyed by
/// `(seed, idx)`, so the values depend only on the seed and the plan.
pub fn he_normal(plan: &Plan, seed: u64) -> Vec<Vec<f32>> {
    plan.params()
        .iter()
        .enumerate()
        .map(|(idx, spec)| {
            if spec.dims.len() != 4 {
                return vec![0.0; spec.len()];
            }
            let act = match &plan.layers[spec.layer].op {
                Op::Conv { act, .. } => *act,
                _ => Activation::None,
            };
            let std = he_std(act, spec.fan_in);
            let mut rng = SplitMix64::new(derive_key(derive_key(seed, INIT_STREAM), idx as u64));
            (0..spec.len())
                .map(|_| (rng.next_normal() * std) as f32)
                .collect()
        })
        .collect()
}

/// Images used for calibration by default.
pub const CALIBRATION_IMAGES: usize = 256;

/// What LSUV did to one convolution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerScale {
    pub layer: String,
    /// Root-mean-square of the layer's output before rescaling.
    pub rms_before: f64,
    /// The factor its weights were multiplied by (1 when left alone).
    pub factor: f64,
}

/// The second moment of `act(x)` for `x ~ N(0, 1)`.
fn target_second_moment(act: Activation) -> f64 {
    match act {
        Activation::None => 1.0,
        Activation::Relu => 0.5,
        Activation::LeakyRelu { slope } => 0.5 * (1.0 + f64::from(slope).powi(2)),
    }
}

/// Offset, in pre-activation standard deviations, given to the class-score
/// convolution when a ReLU follows it (see [`lsuv`]).
pub const CLASS_SCORE_OFFSET: f64 = 2.0;

/// A bias added while probing pre-activations: large enough that the ReLU
/// passes everything, so the output minus the probe is the pre-activation.
const PROBE: f32 = 1024.0;

/// Rescales every convolution of `exec` in layer order (see the module doc)
/// using the `n` preprocessed channels-last `images`.
///
/// A convolution with a bias is measured before its activation: its bias is
/// raised by a large probe so the (leaky) ReLU passes every value, and the
/// output minus the probe is the pre-activation. The class-score convolution
/// (the last one) followed by a ReLU then also gets per-channel biases that
/// put each class's mean pre-activation [`CLASS_SCORE_OFFSET`] standard
/// deviations above zero. Without that, All-CNN-C's final ReLU (Table 2 of
/// the paper) dies early in training: every class is the wrong one for 90%
/// of the images, its score is pushed below zero everywhere, and a score map
/// that is zero everywhere gets no gradient again (the loss then sits at
/// exactly `ln 10`). While every score is active the bias gradients sum to
/// zero over the classes, so they cannot all sink together.
pub fn lsuv(exec: &mut dyn Executor, images: &[f32], n: usize) -> Result<Vec<LayerScale>> {
    let plan = exec.plan().clone();
    let specs = plan.params();
    let last_conv = plan
        .layers
        .iter()
        .rposition(|l| matches!(l.op, Op::Conv { .. }));
    let mut report = Vec::new();
    for (idx, layer) in plan.layers.iter().enumerate() {
        let Op::Conv {
            act, out_channels, ..
        } = layer.op
        else {
            continue;
        };
        let bias_idx = specs
            .iter()
            .position(|s| s.layer == idx && s.dims.len() == 1);
        let Some(weight) = specs
            .iter()
            .position(|s| s.layer == idx && s.dims.len() == 4)
        else {
            continue;
        };
        let mut params = exec.read_params()?;
        let mut probed = None;
        if let (Some(b), true) = (bias_idx, act != Activation::None) {
            let saved = params[b].clone();
            params[b].iter_mut().for_each(|v| *v += PROBE);
            exec.write_params(&params)?;
            let out = exec.forward_to(images, n, idx)?;
            params[b] = saved;
            exec.write_params(&params)?;
            if out.iter().all(|&v| v > 0.0 && v.is_finite()) {
                // The response of the weights alone: output - probe - bias.
                let shift: Vec<f64> = params[b].iter().map(|&v| f64::from(v + PROBE)).collect();
                probed = Some(channel_moments(&out, &shift));
            }
        }
        let (mean_sq, target, channel_means) = match probed {
            Some((mean_sq, means)) => (mean_sq, 1.0, Some(means)),
            None => {
                let out = exec.forward_to(images, n, idx)?;
                let (mean_sq, _) = channel_moments(&out, &vec![0.0; out_channels.max(1)]);
                (mean_sq, target_second_moment(act), None)
            }
        };
        let rms_before = mean_sq.sqrt();
        let factor = if mean_sq > 0.0 && mean_sq.is_finite() {
            (target / mean_sq).sqrt()
        } else {
            1.0
        };
        params[weight]
            .iter_mut()
            .for_each(|v| *v = (f64::from(*v) * factor) as f32);
        let class_scores = Some(idx) == last_conv && act == Activation::Relu;
        if let Some(b) = bias_idx {
            match (&channel_means, class_scores) {
                (Some(means), true) => {
                    // The pre-activation mean of channel c becomes
                    // factor * mean_c + b_new; make it the offset.
                    for (value, mean) in params[b].iter_mut().zip(means) {
                        *value = (CLASS_SCORE_OFFSET - factor * mean) as f32;
                    }
                }
                _ => params[b]
                    .iter_mut()
                    .for_each(|v| *v = (f64::from(*v) * factor) as f32),
            }
        }
        exec.write_params(&params)?;
        report.push(LayerScale {
            layer: layer.name.clone(),
            rms_before,
            factor,
        });
    }
    Ok(report)
}

/// Mean square of `out - shift[c]` over everything, and per-channel means of
/// it (channels-last: `shift.len()` channels innermost).
fn channel_moments(out: &[f32], shift: &[f64]) -> (f64, Vec<f64>) {
    let channels = shift.len().max(1);
    let mut sums = vec![0.0f64; channels];
    let mut sum_sq = 0.0f64;
    for row in out.chunks_exact(channels) {
        for ((sum, &v), s) in sums.iter_mut().zip(row).zip(shift) {
            let z = f64::from(v) - s;
            *sum += z;
            sum_sq += z * z;
        }
    }
    let rows = (out.len() / channels).max(1) as f64;
    (
        sum_sq / out.len().max(1) as f64,
        sums.iter().map(|s| s / rows).collect(),
    )
}
