//! Shared helpers of the CPU backend tests (included by `cpu_*.rs` test files
//! through `#[path]`): random tensors, a naive direct convolution, finite
//! differences and small plans built by hand.
#![allow(dead_code)]

use runtime::plan::{Activation, Op, Padding, Plan, Shape, Window};
use runtime::rng::SplitMix64;

/// `len` values uniform in `[-1, 1)`, from a seeded stream.
pub fn random_vec(seed: u64, len: usize) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..len).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
}

/// A window with the given kernel, stride and padding.
pub fn window(kh: usize, kw: usize, stride: usize, pad: [usize; 4]) -> Window {
    Window {
        kh,
        kw,
        stride_h: stride,
        stride_w: stride,
        pad: Padding {
            top: pad[0],
            left: pad[1],
            bottom: pad[2],
            right: pad[3],
        },
    }
}

/// Output size of a convolution along one axis (floor rounding).
pub fn conv_out(
    size: usize,
    k: usize,
    stride: usize,
    pad_before: usize,
    pad_after: usize,
) -> usize {
    (size + pad_before + pad_after - k) / stride + 1
}

/// Output size of a Caffe pooling layer along one axis (ceil rounding, the
/// last window starting inside the padded input).
pub fn pool_out(size: usize, k: usize, stride: usize, pad: usize) -> usize {
    let mut out = (size + 2 * pad - k).div_ceil(stride) + 1;
    if pad > 0 && (out - 1) * stride >= size + pad {
        out -= 1;
    }
    out
}

/// Naive direct convolution (no bias, no activation), in `f64`:
/// `y[n, oh, ow, o] = sum x[n, oh*s + kh - pt, ow*s + kw - pl, c] * w[kh, kw, c, o]`.
pub fn naive_conv(
    x: &[f32],
    w: &[f32],
    n: usize,
    in_shape: Shape,
    out_shape: Shape,
    win: &Window,
) -> Vec<f64> {
    let (h, wd, c) = (in_shape.h, in_shape.w, in_shape.c);
    let (oh_n, ow_n, o_n) = (out_shape.h, out_shape.w, out_shape.c);
    let mut y = vec![0.0f64; n * out_shape.len()];
    for img in 0..n {
        for oh in 0..oh_n {
            for ow in 0..ow_n {
                for o in 0..o_n {
                    let mut acc = 0.0f64;
                    for kh in 0..win.kh {
                        for kw in 0..win.kw {
                            let ih = (oh * win.stride_h + kh) as isize - win.pad.top as isize;
                            let iw = (ow * win.stride_w + kw) as isize - win.pad.left as isize;
                            if ih < 0 || iw < 0 || ih >= h as isize || iw >= wd as isize {
                                continue;
                            }
                            for ci in 0..c {
                                let xv = x[((img * h + ih as usize) * wd + iw as usize) * c + ci];
                                let wv = w[((kh * win.kw + kw) * c + ci) * o_n + o];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    y[((img * oh_n + oh) * ow_n + ow) * o_n + o] = acc;
                }
            }
        }
    }
    y
}

/// The gradients of `sum(dy * conv(x, w))` with respect to `x` and `w`, by
/// the naive loops (the adjoint of [`naive_conv`]), in `f64`.
pub fn naive_conv_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    n: usize,
    in_shape: Shape,
    out_shape: Shape,
    win: &Window,
) -> (Vec<f64>, Vec<f64>) {
    let (h, wd, c) = (in_shape.h, in_shape.w, in_shape.c);
    let (oh_n, ow_n, o_n) = (out_shape.h, out_shape.w, out_shape.c);
    let mut dx = vec![0.0f64; x.len()];
    let mut dw = vec![0.0f64; w.len()];
    for img in 0..n {
        for oh in 0..oh_n {
            for ow in 0..ow_n {
                for o in 0..o_n {
                    let g = dy[((img * oh_n + oh) * ow_n + ow) * o_n + o] as f64;
                    for kh in 0..win.kh {
                        for kw in 0..win.kw {
                            let ih = (oh * win.stride_h + kh) as isize - win.pad.top as isize;
                            let iw = (ow * win.stride_w + kw) as isize - win.pad.left as isize;
                            if ih < 0 || iw < 0 || ih >= h as isize || iw >= wd as isize {
                                continue;
                            }
                            for ci in 0..c {
                                let xi = ((img * h + ih as usize) * wd + iw as usize) * c + ci;
                                let wi = ((kh * win.kw + kw) * c + ci) * o_n + o;
                                dx[xi] += g * w[wi] as f64;
                                dw[wi] += g * x[xi] as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dw)
}

/// Central finite differences of `f` at `x` for every coordinate, with `f`
/// evaluated in `f64` on an `f32` point.
pub fn finite_differences(x: &[f32], eps: f32, mut f: impl FnMut(&[f32]) -> f64) -> Vec<f64> {
    let mut point = x.to_vec();
    (0..x.len())
        .map(|i| {
            let orig = point[i];
            point[i] = orig + eps;
            let plus = f(&point);
            point[i] = orig - eps;
            let minus = f(&point);
            point[i] = orig;
            // The step actually taken, after rounding to f32.
            let step = (orig + eps) as f64 - (orig - eps) as f64;
            (plus - minus) / step
        })
        .collect()
}

/// Asserts `|got - want| <= abs + rel * |want|` elementwise (`what` names
/// the check in the failure message).
pub fn assert_close(what: &str, got: &[f32], want: &[f64], abs: f64, rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= abs + rel * w.abs(),
            "{what}[{i}]: got {g}, want {w} (error {err})"
        );
    }
}

/// `sum(r * y)` in `f64`.
pub fn dot(r: &[f32], y: &[f32]) -> f64 {
    r.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Builds a plan from `(name, op, out_shape)` triples, chaining shapes from
/// `input`.
pub fn plan_of(input: Shape, classes: usize, layers: Vec<(&str, Op, Shape)>) -> Plan {
    Plan::chain("test", input, classes, layers)
}

/// A "same" convolution op (odd kernel, stride `stride`).
pub fn conv(out_channels: usize, k: usize, stride: usize, act: Activation) -> Op {
    let p = k / 2;
    Op::Conv {
        out_channels,
        window: window(k, k, stride, [p, p, p, p]),
        bias: true,
        act,
    }
}

/// conv(3x3, relu) - maxpool(3x3/2) - conv(3x3, relu) - gap - softmax on a
/// `3 x size x size` input.
pub fn small_pool_net(size: usize, width: usize, classes: usize) -> Plan {
    let pooled = pool_out(size, 3, 2, 0);
    plan_of(
        Shape::new(3, size, size),
        classes,
        vec![
            (
                "conv1",
                conv(width, 3, 1, Activation::Relu),
                Shape::new(width, size, size),
            ),
            (
                "pool1",
                Op::MaxPool {
                    window: window(3, 3, 2, [0; 4]),
                },
                Shape::new(width, pooled, pooled),
            ),
            (
                "conv2",
                conv(classes, 3, 1, Activation::Relu),
                Shape::new(classes, pooled, pooled),
            ),
            ("gap", Op::GlobalAvgPool, Shape::new(classes, 1, 1)),
            ("softmax", Op::Softmax, Shape::new(classes, 1, 1)),
        ],
    )
}

/// dropout - conv(3x3 stride 2, leaky) - dropout - conv(3x3, leaky) -
/// conv(1x1, none) - gap - softmax on a `3 x size x size` input.
pub fn small_strided_net(size: usize, width: usize, classes: usize, slope: f32) -> Plan {
    let act = Activation::LeakyRelu { slope };
    let half = conv_out(size, 3, 2, 1, 1);
    plan_of(
        Shape::new(3, size, size),
        classes,
        vec![
            ("drop0", Op::Dropout { p: 0.2 }, Shape::new(3, size, size)),
            (
                "conv1",
                conv(width, 3, 2, act),
                Shape::new(width, half, half),
            ),
            (
                "drop1",
                Op::Dropout { p: 0.5 },
                Shape::new(width, half, half),
            ),
            (
                "conv2",
                conv(width, 3, 1, act),
                Shape::new(width, half, half),
            ),
            (
                "conv3",
                conv(classes, 1, 1, Activation::None),
                Shape::new(classes, half, half),
            ),
            ("gap", Op::GlobalAvgPool, Shape::new(classes, 1, 1)),
            ("softmax", Op::Softmax, Shape::new(classes, 1, 1)),
        ],
    )
}
