//! Softmax over classes, the mean cross-entropy loss and their gradients.
//!
//! Rows are images (`n x classes`, row-major). The loss is computed from the
//! logits with a log-sum-exp in `f64`, so a confident wrong prediction gives
//! a large finite loss instead of `-ln(0)`.

/// `probs[i, :] = softmax(logits[i, :])`.
pub fn softmax_forward(classes: usize, logits: &[f32], probs: &mut [f32]) {
    assert_eq!(logits.len(), probs.len(), "softmax sizes");
    if classes == 0 {
        return;
    }
    for (z, p) in logits
        .chunks_exact(classes)
        .zip(probs.chunks_exact_mut(classes))
    {
        let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for (p, &z) in p.iter_mut().zip(z) {
            *p = (z - max).exp();
            sum += *p;
        }
        let inv = 1.0 / sum;
        p.iter_mut().for_each(|p| *p *= inv);
    }
}

/// The loss of one batch: the sum of the per-image cross-entropies and the
/// number of images whose top-1 class (the first maximal logit) is the label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossSum {
    pub loss_sum: f64,
    pub correct: usize,
}

/// Cross-entropy of `probs = softmax(logits)` against `labels`, and
/// `grad = d(mean loss)/d(logits) = (probs - onehot(labels)) / n`.
///
/// # Panics
///
/// Panics on a label `>= classes` (the executor checks labels first).
pub fn cross_entropy(
    classes: usize,
    logits: &[f32],
    probs: &[f32],
    labels: &[u32],
    grad: &mut [f32],
) -> LossSum {
    let n = labels.len();
    assert_eq!(logits.len(), n * classes, "cross-entropy logits size");
    assert_eq!(probs.len(), n * classes, "cross-entropy probs size");
    assert_eq!(grad.len(), n * classes, "cross-entropy grad size");
    let mut total = LossSum {
        loss_sum: 0.0,
        correct: 0,
    };
    if n == 0 || classes == 0 {
        return total;
    }
    let inv_n = 1.0 / n as f32;
    for (image, &label) in labels.iter().enumerate() {
        let label = label as usize;
        assert!(label < classes, "label {label} out of range");
        let span = image * classes..(image + 1) * classes;
        let z = &logits[span.clone()];
        let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = z.iter().map(|&z| (z as f64 - max).exp()).sum();
        total.loss_sum += max + sum.ln() - z[label] as f64;
        let top = z
            .iter()
            .enumerate()
            .fold(0, |best, (i, &v)| if v > z[best] { i } else { best });
        total.correct += usize::from(top == label);
        for (c, (g, &p)) in grad[span.clone()].iter_mut().zip(&probs[span]).enumerate() {
            let target = if c == label { 1.0 } else { 0.0 };
            *g = (p - target) * inv_n;
        }
    }
    total
}

/// Backward of [`softmax_forward`] for an arbitrary signal:
/// `grad_input = probs * (grad_out - <grad_out, probs>)` per row.
pub fn softmax_backward(classes: usize, probs: &[f32], grad_out: &[f32], grad_input: &mut [f32]) {
    assert_eq!(probs.len(), grad_out.len(), "softmax backward sizes");
    assert_eq!(probs.len(), grad_input.len(), "softmax backward sizes");
    if classes == 0 {
        return;
    }
    for ((p, g), d) in probs
        .chunks_exact(classes)
        .zip(grad_out.chunks_exact(classes))
        .zip(grad_input.chunks_exact_mut(classes))
    {
        let dot: f32 = p.iter().zip(g).map(|(p, g)| p * g).sum();
        for ((d, &p), &g) in d.iter_mut().zip(p).zip(g) {
            *d = p * (g - dot);
        }
    }
}
