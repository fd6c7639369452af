//! Pointwise non-linearities (ReLU, leaky ReLU) and their backward rules.
//!
//! The backward pass of a ReLU follows one of the three rules of
//! Springenberg et al., Figure 1 ([`ReluRule`]). A leaky ReLU with slope `a`
//! has the gate `g(x) = 1 if x > 0 else a`, and the rules generalise as
//!
//! - backprop (the true gradient): `R_in = g(f_in) * R_out`;
//! - deconvnet (the non-linearity applied to the signal): `R_in = g(R_out) * R_out`;
//! - guided: `R_in = g(f_in) * g(R_out) * R_out`,
//!
//! which for `a = 0` are exactly the paper's formulas. `Activation::None`
//! passes every signal through unchanged.
//!
//! The backward functions take `forward`, a tensor whose sign equals the sign
//! of the activation's input. For a ReLU or a leaky ReLU with `a >= 0` the
//! activation's output has that sign, so the executor passes the stored
//! output; only a negative slope needs the input kept separately
//! ([`needs_input`]).

use rayon::prelude::*;

use crate::plan::{Activation, ReluRule};

/// Values per parallel task of the pointwise kernels.
const POINTWISE_CHUNK: usize = 1 << 14;

/// The slope of the negative half, `None` for the identity.
fn slope(act: Activation) -> Option<f32> {
    match act {
        Activation::None => None,
        Activation::Relu => Some(0.0),
        Activation::LeakyRelu { slope } => Some(slope),
    }
}

/// Whether the backward pass needs the activation's input rather than its
/// output (a leaky ReLU with a negative slope flips signs).
pub fn needs_input(act: Activation) -> bool {
    matches!(act, Activation::LeakyRelu { slope } if slope < 0.0)
}

/// `act(x)` of one value.
#[inline(always)]
pub fn apply(act: Activation, x: f32) -> f32 {
    match act {
        Activation::None => x,
        Activation::Relu => x.max(0.0),
        Activation::LeakyRelu { slope } => {
            if x > 0.0 {
                x
            } else {
                slope * x
            }
        }
    }
}

/// Applies `act` in place.
pub fn forward(act: Activation, values: &mut [f32]) {
    if matches!(act, Activation::None) {
        return;
    }
    values
        .par_chunks_mut(POINTWISE_CHUNK)
        .for_each(|chunk| forward_serial(act, chunk));
}

/// Applies `act` in place on the calling thread.
pub fn forward_serial(act: Activation, values: &mut [f32]) {
    match act {
        Activation::None => {}
        Activation::Relu => values.iter_mut().for_each(|x| *x = x.max(0.0)),
        Activation::LeakyRelu { slope } => values.iter_mut().for_each(|x| {
            if *x <= 0.0 {
                *x *= slope
            }
        }),
    }
}

/// Turns the signal at the activation's output into the signal at its input,
/// in place, following `rule`. `forward` has the sign of the activation's
/// input (see the module doc) and the length of `grad`.
pub fn backward(act: Activation, rule: ReluRule, forward: &[f32], grad: &mut [f32]) {
    assert_eq!(
        forward.len(),
        grad.len(),
        "activation backward: lengths differ"
    );
    if slope(act).is_none() {
        return;
    }
    grad.par_chunks_mut(POINTWISE_CHUNK)
        .zip(forward.par_chunks(POINTWISE_CHUNK))
        .for_each(|(grad, forward)| backward_serial(act, rule, forward, grad));
}

/// [`backward`] on the calling thread.
pub fn backward_serial(act: Activation, rule: ReluRule, forward: &[f32], grad: &mut [f32]) {
    let Some(a) = slope(act) else {
        return;
    };
    let gate = |x: f32| if x > 0.0 { 1.0 } else { a };
    match rule {
        ReluRule::Backprop => {
            if a == 0.0 {
                // The common case, written so that it vectorises to a select.
                for (g, &f) in grad.iter_mut().zip(forward) {
                    *g = if f > 0.0 { *g } else { 0.0 };
                }
            } else {
                for (g, &f) in grad.iter_mut().zip(forward) {
                    *g *= gate(f);
                }
            }
        }
        ReluRule::Deconvnet => {
            for g in grad.iter_mut() {
                *g *= gate(*g);
            }
        }
        ReluRule::Guided => {
            for (g, &f) in grad.iter_mut().zip(forward) {
                *g *= gate(f) * gate(*g);
            }
        }
    }
}
