//! Max pooling (with argmax switches), average pooling and global averaging.
//!
//! Window placement follows Caffe: output `o` covers input rows
//! `o * stride - pad_before .. + k`, the output size comes from the plan's
//! `out_shape` (Caffe rounds it up, so the last window may run past the
//! input), and
//!
//! - max pooling takes the maximum over the part of the window inside the
//!   input (padding never wins) and records its position, the "switch";
//! - average pooling sums the part inside the input and divides by the number
//!   of window elements inside the *padded* input (Caffe's divisor rule).
//!
//! A max-pool window with no element inside the input (only a malformed plan
//! makes one) outputs 0 and records [`NO_SWITCH`]. All kernels run in parallel
//! over images; the backward passes add into one image at a time, so
//! overlapping windows never race.

use rayon::prelude::*;

use crate::plan::{Shape, Window};

/// The switch of a window that saw no input element.
pub const NO_SWITCH: u32 = u32::MAX;

/// The shapes of one pooling layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolGeometry {
    pub in_shape: Shape,
    pub out_shape: Shape,
    pub window: Window,
}

/// One axis of a window: the clipped input range and the divisor of Caffe's
/// average pool.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    divisor: usize,
}

/// The span of output index `o` along an axis of length `size`.
fn span(
    o: usize,
    k: usize,
    stride: usize,
    pad_before: usize,
    pad_after: usize,
    size: usize,
) -> Span {
    let start = (o * stride) as isize - pad_before as isize;
    let end = (start + k as isize).min((size + pad_after) as isize);
    let divisor = (end - start).max(0) as usize;
    Span {
        start: start.clamp(0, size as isize) as usize,
        end: end.clamp(0, size as isize) as usize,
        divisor,
    }
}

impl PoolGeometry {
    fn rows(&self, oh: usize) -> Span {
        let w = &self.window;
        span(
            oh,
            w.kh,
            w.stride_h,
            w.pad.top,
            w.pad.bottom,
            self.in_shape.h,
        )
    }

    fn cols(&self, ow: usize) -> Span {
        let w = &self.window;
        span(
            ow,
            w.kw,
            w.stride_w,
            w.pad.left,
            w.pad.right,
            self.in_shape.w,
        )
    }

    fn check(&self, n: usize, input: usize, output: usize) {
        assert_eq!(self.in_shape.c, self.out_shape.c, "pooling keeps channels");
        assert_eq!(input, n * self.in_shape.len(), "pool input size");
        assert_eq!(output, n * self.out_shape.len(), "pool output size");
    }
}

/// Max pooling of `n` images; `switches` (like `output`) receives, per
/// output value, the index within its image of the input value chosen.
pub fn max_pool_forward(
    geom: &PoolGeometry,
    n: usize,
    input: &[f32],
    output: &mut [f32],
    switches: &mut [u32],
) {
    geom.check(n, input.len(), output.len());
    assert_eq!(switches.len(), output.len(), "switches size");
    let (in_len, out_len) = (geom.in_shape.len(), geom.out_shape.len());
    if out_len == 0 {
        return;
    }
    let (c, in_w, out_w) = (geom.in_shape.c, geom.in_shape.w, geom.out_shape.w);
    output
        .par_chunks_mut(out_len)
        .zip(switches.par_chunks_mut(out_len))
        .enumerate()
        .for_each(|(image, (out, sw))| {
            let x = &input[image * in_len..(image + 1) * in_len];
            for (pos, (best, arg)) in out
                .chunks_exact_mut(c)
                .zip(sw.chunks_exact_mut(c))
                .enumerate()
            {
                let (rows, cols) = (geom.rows(pos / out_w), geom.cols(pos % out_w));
                best.fill(f32::NEG_INFINITY);
                arg.fill(NO_SWITCH);
                for ih in rows.start..rows.end {
                    for iw in cols.start..cols.end {
                        let base = (ih * in_w + iw) * c;
                        for (ch, (b, a)) in best.iter_mut().zip(arg.iter_mut()).enumerate() {
                            let v = x[base + ch];
                            if v > *b || *a == NO_SWITCH {
                                *b = v;
                                *a = (base + ch) as u32;
                            }
                        }
                    }
                }
                for (b, a) in best.iter_mut().zip(arg.iter()) {
                    if *a == NO_SWITCH {
                        *b = 0.0;
                    }
                }
            }
        });
}

/// Backward max pooling: routes each output's signal to its switch.
/// `grad_input` is overwritten.
pub fn max_pool_backward(
    geom: &PoolGeometry,
    n: usize,
    grad_out: &[f32],
    switches: &[u32],
    grad_input: &mut [f32],
) {
    geom.check(n, grad_input.len(), grad_out.len());
    assert_eq!(switches.len(), grad_out.len(), "switches size");
    let (in_len, out_len) = (geom.in_shape.len(), geom.out_shape.len());
    if in_len == 0 {
        return;
    }
    grad_input
        .par_chunks_mut(in_len)
        .enumerate()
        .for_each(|(image, gi)| {
            gi.fill(0.0);
            let span = image * out_len..(image + 1) * out_len;
            for (&g, &s) in grad_out[span.clone()].iter().zip(&switches[span]) {
                if s != NO_SWITCH {
                    gi[s as usize] += g;
                }
            }
        });
}

/// Average pooling of `n` images (Caffe's divisor rule).
pub fn avg_pool_forward(geom: &PoolGeometry, n: usize, input: &[f32], output: &mut [f32]) {
    geom.check(n, input.len(), output.len());
    let (in_len, out_len) = (geom.in_shape.len(), geom.out_shape.len());
    if out_len == 0 {
        return;
    }
    let (c, in_w, out_w) = (geom.in_shape.c, geom.in_shape.w, geom.out_shape.w);
    output
        .par_chunks_mut(out_len)
        .enumerate()
        .for_each(|(image, out)| {
            let x = &input[image * in_len..(image + 1) * in_len];
            for (pos, acc) in out.chunks_exact_mut(c).enumerate() {
                let (rows, cols) = (geom.rows(pos / out_w), geom.cols(pos % out_w));
                acc.fill(0.0);
                for ih in rows.start..rows.end {
                    for iw in cols.start..cols.end {
                        let base = (ih * in_w + iw) * c;
                        acc.iter_mut()
                            .zip(&x[base..base + c])
                            .for_each(|(a, v)| *a += v);
                    }
                }
                let divisor = rows.divisor * cols.divisor;
                let scale = if divisor == 0 {
                    0.0
                } else {
                    1.0 / divisor as f32
                };
                acc.iter_mut().for_each(|a| *a *= scale);
            }
        });
}

/// Backward average pooling; `grad_input` is overwritten.
pub fn avg_pool_backward(geom: &PoolGeometry, n: usize, grad_out: &[f32], grad_input: &mut [f32]) {
    geom.check(n, grad_input.len(), grad_out.len());
    let (in_len, out_len) = (geom.in_shape.len(), geom.out_shape.len());
    if in_len == 0 {
        return;
    }
    let (c, in_w, out_w) = (geom.in_shape.c, geom.in_shape.w, geom.out_shape.w);
    grad_input
        .par_chunks_mut(in_len)
        .enumerate()
        .for_each(|(image, gi)| {
            gi.fill(0.0);
            let go = &grad_out[image * out_len..(image + 1) * out_len];
            for (pos, g) in go.chunks_exact(c).enumerate() {
                let (rows, cols) = (geom.rows(pos / out_w), geom.cols(pos % out_w));
                let divisor = rows.divisor * cols.divisor;
                if divisor == 0 {
                    continue;
                }
                let scale = 1.0 / divisor as f32;
                for ih in rows.start..rows.end {
                    for iw in cols.start..cols.end {
                        let base = (ih * in_w + iw) * c;
                        gi[base..base + c]
                            .iter_mut()
                            .zip(g)
                            .for_each(|(d, g)| *d += g * scale);
                    }
                }
            }
        });
}

/// Global average pooling: `output[n, c]` is the mean of `input[n, :, :, c]`.
pub fn global_avg_pool_forward(in_shape: Shape, n: usize, input: &[f32], output: &mut [f32]) {
    let (c, positions) = (in_shape.c, in_shape.h * in_shape.w);
    assert_eq!(input.len(), n * in_shape.len(), "global pool input size");
    assert_eq!(output.len(), n * c, "global pool output size");
    if c == 0 {
        return;
    }
    let scale = 1.0 / positions.max(1) as f32;
    output
        .par_chunks_mut(c)
        .zip(input.par_chunks(in_shape.len().max(1)))
        .for_each(|(out, x)| {
            out.fill(0.0);
            for row in x.chunks_exact(c) {
                out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
            }
            out.iter_mut().for_each(|o| *o *= scale);
        });
}

/// Backward global average pooling; `grad_input` is overwritten.
pub fn global_avg_pool_backward(
    in_shape: Shape,
    n: usize,
    grad_out: &[f32],
    grad_input: &mut [f32],
) {
    let (c, positions) = (in_shape.c, in_shape.h * in_shape.w);
    assert_eq!(
        grad_input.len(),
        n * in_shape.len(),
        "global pool grad_input size"
    );
    assert_eq!(grad_out.len(), n * c, "global pool grad_out size");
    if c == 0 || positions == 0 {
        return;
    }
    let scale = 1.0 / positions as f32;
    grad_input
        .par_chunks_mut(in_shape.len())
        .zip(grad_out.par_chunks(c))
        .for_each(|(gi, g)| {
            for row in gi.chunks_exact_mut(c) {
                row.iter_mut().zip(g).for_each(|(d, g)| *d = g * scale);
            }
        });
}
