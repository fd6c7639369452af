//! Inverted dropout with a seeded, thread-count-independent mask.
//!
//! In training each value is kept with probability `1 - p` and scaled by
//! `1 / (1 - p)`, so inference is the identity. Image `i` draws its mask from
//! its own [`SplitMix64`] stream keyed by `derive_key(seed, i)`: the mask
//! depends on the seed and the image's position in the batch only.

use rayon::prelude::*;

use crate::rng::{derive_key, SplitMix64};

/// Training-mode dropout of `n` images of `image_len` values each. `mask`
/// receives 1 for kept values and 0 for dropped ones.
pub fn dropout_forward(
    p: f32,
    seed: u64,
    image_len: usize,
    input: &[f32],
    output: &mut [f32],
    mask: &mut [u8],
) {
    assert_eq!(input.len(), output.len(), "dropout sizes");
    assert_eq!(mask.len(), output.len(), "dropout mask size");
    assert!(
        (0.0..1.0).contains(&p),
        "dropout probability {p} outside [0, 1)"
    );
    if image_len == 0 {
        return;
    }
    let scale = 1.0 / (1.0 - p);
    output
        .par_chunks_mut(image_len)
        .zip(mask.par_chunks_mut(image_len))
        .zip(input.par_chunks(image_len))
        .enumerate()
        .for_each(|(image, ((out, mask), x))| {
            let mut rng = SplitMix64::new(derive_key(seed, image as u64));
            for ((o, m), &v) in out.iter_mut().zip(mask.iter_mut()).zip(x) {
                let keep = rng.next_f32() >= p;
                *m = keep as u8;
                *o = if keep { v * scale } else { 0.0 };
            }
        });
}

/// Backward of [`dropout_forward`]: `grad_input = grad_out * mask / (1 - p)`.
pub fn dropout_backward(p: f32, mask: &[u8], grad_out: &[f32], grad_input: &mut [f32]) {
    assert_eq!(grad_out.len(), grad_input.len(), "dropout sizes");
    assert_eq!(mask.len(), grad_out.len(), "dropout mask size");
    let scale = 1.0 / (1.0 - p);
    grad_input
        .par_chunks_mut(1 << 14)
        .zip(grad_out.par_chunks(1 << 14))
        .zip(mask.par_chunks(1 << 14))
        .for_each(|((gi, go), m)| {
            for ((d, &g), &m) in gi.iter_mut().zip(go).zip(m) {
                *d = if m != 0 { g * scale } else { 0.0 };
            }
        });
}
