//! CPU kernels against finite differences and a naive direct convolution.
//!
//! Finite differences are central, with the function evaluated in `f64` from
//! the kernels' `f32` outputs; tolerances are stated per test. The
//! convolution is checked against the naive loops of `cpu_support.rs` for
//! random shapes, strides and asymmetric paddings with proptest.

#[path = "cpu_support.rs"]
mod support;

#[path = "../../tests/skip/mod.rs"]
mod skip;

/// The tests live in `cpu` so that `cargo test cpu` selects them.
mod cpu {
    use super::support::*;
    use proptest::prelude::*;
    use runtime::cpu::activation;
    use runtime::cpu::conv::{ConvAlgorithm, ConvBackward, ConvForward, ConvGeometry};
    use runtime::cpu::dropout::{dropout_backward, dropout_forward};
    use runtime::cpu::pool::{
        avg_pool_backward, avg_pool_forward, global_avg_pool_backward, global_avg_pool_forward,
        max_pool_backward, max_pool_forward, PoolGeometry,
    };
    use runtime::cpu::softmax::{cross_entropy, softmax_backward, softmax_forward};
    use runtime::cpu::Operands;
    use runtime::plan::{Activation, ReluRule, Shape, Window};

    /// Runs the conv forward; returns the output.
    fn conv_forward(
        geom: &ConvGeometry,
        n: usize,
        x: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
        act: Activation,
        (algorithm, operands): (ConvAlgorithm, Operands),
    ) -> Vec<f32> {
        let mut y = vec![f32::NAN; n * geom.out_shape.len()];
        ConvForward {
            geom: *geom,
            n,
            input: x,
            weight: w,
            bias: b,
            act,
            output: &mut y,
            algorithm,
            operands,
        }
        .run(&mut Vec::new());
        y
    }

    /// Runs the conv backward with a plain (ungated) signal; returns dX, dW, db.
    fn conv_grads(
        geom: &ConvGeometry,
        n: usize,
        x: &[f32],
        w: &[f32],
        dy: &[f32],
        algorithm: ConvAlgorithm,
        operands: Operands,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut dx = vec![f32::NAN; x.len()];
        let mut dw = vec![f32::NAN; w.len()];
        let mut db = vec![f32::NAN; geom.out_shape.c];
        let mut grad_out = dy.to_vec();
        ConvBackward {
            geom: *geom,
            n,
            input: x,
            weight: w,
            grad_out: &mut grad_out,
            act: Activation::None,
            rule: ReluRule::Backprop,
            act_forward: dy,
            grad_input: Some(&mut dx),
            grad_weight: Some(&mut dw),
            grad_bias: Some(&mut db),
            algorithm,
            operands,
        }
        .run(&mut Vec::new());
        (dx, dw, db)
    }

    /// Tolerance of the bf16 products, relative to a tensor's largest
    /// value: each operand carries up to 2^-9 relative rounding error
    /// (the largest errors seen were about 5e-3; Winograd layers keep f32
    /// products).
    const BF16_TOL: f64 = 1e-2;

    /// Whether the bf16 products can run here; a CPU without them records
    /// a counted skip (the f32 checks still run).
    fn bf16_supported() -> bool {
        let supported = runtime::cpu::peak::Features::detect().avx512_bf16;
        if !supported {
            crate::skip::skip("no AVX512-BF16 on this CPU: the bf16 convolutions are not checked");
        }
        supported
    }

    /// Checks forward and backward of one convolution, with each algorithm,
    /// against the naive loops. Tolerance: `tol * max(1, max |want|)` per
    /// tensor (f32 sums of up to a few thousand terms vs f64; the rounding
    /// error scales with the tensor's magnitude, and Winograd's transforms
    /// add a little).
    fn check_conv_against_naive(
        n: usize,
        in_shape: Shape,
        out_c: usize,
        win: Window,
        seed: u64,
        tol: f64,
    ) {
        let out_shape = Shape::new(
            out_c,
            conv_out(
                in_shape.h,
                win.kh,
                win.stride_h,
                win.pad.top,
                win.pad.bottom,
            ),
            conv_out(
                in_shape.w,
                win.kw,
                win.stride_w,
                win.pad.left,
                win.pad.right,
            ),
        );
        let geom = ConvGeometry {
            in_shape,
            out_shape,
            window: win,
        };
        let x = random_vec(seed, n * in_shape.len());
        let w = random_vec(seed + 1, geom.weight_len());
        let b = random_vec(seed + 2, out_c);
        let dy = random_vec(seed + 3, n * out_shape.len());
        let mut want = naive_conv(&x, &w, n, in_shape, out_shape, &win);
        for (i, v) in want.iter_mut().enumerate() {
            *v += b[i % out_c] as f64;
        }
        let (want_dx, want_dw) = naive_conv_backward(&x, &w, &dy, n, in_shape, out_shape, &win);
        let mut want_db = vec![0.0f64; out_c];
        for (i, &g) in dy.iter().enumerate() {
            want_db[i % out_c] += g as f64;
        }
        // The fused activation (forward) and the gate (backward), checked
        // against the naive results with the leaky ReLU applied by hand.
        let slope = 0.1;
        let leaky = Activation::LeakyRelu { slope };
        let want_act: Vec<f64> = want
            .iter()
            .map(|&v| if v > 0.0 { v } else { slope as f64 * v })
            .collect();
        let gate = |signs: &mut dyn Iterator<Item = bool>| -> Vec<f32> {
            dy.iter()
                .zip(signs)
                .map(|(&g, positive)| if positive { g } else { slope * g })
                .collect()
        };
        let gated = gate(&mut want.iter().map(|&v| v > 0.0));
        let want_gated = naive_conv_backward(&x, &w, &gated, n, in_shape, out_shape, &win);
        let formats = if bf16_supported() {
            &[Operands::F32, Operands::Bf16][..]
        } else {
            &[Operands::F32]
        };
        for (&operands, algorithm) in formats
            .iter()
            .flat_map(|o| [ConvAlgorithm::Auto, ConvAlgorithm::Im2col].map(|a| (o, a)))
        {
            let tol = match operands {
                Operands::F32 => tol,
                Operands::Bf16 => BF16_TOL,
            };
            let check = |what: String, got: &[f32], want: &[f64]| {
                let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                assert_close(&format!("{operands:?} {what}"), got, want, tol * scale, 0.0);
            };
            let y = conv_forward(
                &geom,
                n,
                &x,
                &w,
                Some(&b),
                Activation::None,
                (algorithm, operands),
            );
            check(format!("{algorithm:?} forward"), &y, &want);
            let (dx, dw, db) = conv_grads(&geom, n, &x, &w, &dy, algorithm, operands);
            check(format!("{algorithm:?} grad input"), &dx, &want_dx);
            check(format!("{algorithm:?} grad weight"), &dw, &want_dw);
            check(format!("{algorithm:?} grad bias"), &db, &want_db);

            let y = conv_forward(&geom, n, &x, &w, Some(&b), leaky, (algorithm, operands));
            check(format!("{algorithm:?} leaky forward"), &y, &want_act);
            let (mut dx, mut dw) = (vec![f32::NAN; x.len()], vec![f32::NAN; w.len()]);
            let mut grad_out = dy.clone();
            ConvBackward {
                geom,
                n,
                input: &x,
                weight: &w,
                grad_out: &mut grad_out,
                act: leaky,
                rule: ReluRule::Backprop,
                act_forward: &y,
                grad_input: Some(&mut dx),
                grad_weight: Some(&mut dw),
                grad_bias: None,
                algorithm,
                operands,
            }
            .run(&mut Vec::new());
            // The gate follows the computed output's signs: where rounding
            // flipped the sign of a value near zero, the reference must too.
            let gated_here = gate(&mut y.iter().map(|&v| v > 0.0));
            let (want_gated_dx, want_gated_dw) = if gated_here == gated {
                want_gated.clone()
            } else {
                naive_conv_backward(&x, &w, &gated_here, n, in_shape, out_shape, &win)
            };
            let what = format!("{algorithm:?} gated");
            check(format!("{what} input"), &dx, &want_gated_dx);
            check(format!("{what} weight"), &dw, &want_gated_dw);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn conv_matches_naive_reference(
            n in 1usize..4,
            c_in in 1usize..6,
            h in 1usize..10,
            w in 1usize..10,
            out_c in 1usize..7,
            kh in 1usize..5,
            kw in 1usize..5,
            stride_h in 1usize..4,
            stride_w in 1usize..4,
            pad in proptest::array::uniform4(0usize..3),
            seed in any::<u64>(),
        ) {
            prop_assume!(h + pad[0] + pad[2] >= kh && w + pad[1] + pad[3] >= kw);
            let mut win = window(kh, kw, 1, pad);
            win.stride_h = stride_h;
            win.stride_w = stride_w;
            check_conv_against_naive(n, Shape::new(c_in, h, w), out_c, win, seed, 1e-5);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Shapes that take the Winograd path (3x3, stride 1, >= 16
        /// channels), including partial edge tiles and every padding up to 2.
        #[test]
        fn winograd_conv_matches_naive_reference(
            n in 1usize..3,
            c_in in 16usize..21,
            out_c in 16usize..21,
            h in 4usize..11,
            w in 4usize..11,
            pad in proptest::array::uniform4(0usize..3),
            seed in any::<u64>(),
        ) {
            let win = window(3, 3, 1, pad);
            let out_h = conv_out(h, 3, 1, pad[0], pad[2]);
            let out_w = conv_out(w, 3, 1, pad[1], pad[3]);
            let geom = ConvGeometry {
                in_shape: Shape::new(c_in, h, w),
                out_shape: Shape::new(out_c, out_h, out_w),
                window: win,
            };
            prop_assume!(geom.uses_winograd());
            check_conv_against_naive(n, geom.in_shape, out_c, win, seed, 5e-5);
        }
    }

    /// Frozen cases: a pointwise conv (no im2col), shapes big enough for
    /// several row chunks per image and more images than weight-gradient
    /// groups, and Winograd layers with several tile chunks (forward and
    /// weight gradient) shaped like All-CNN-C's.
    #[test]
    fn conv_regression_cases() {
        let cases = [
            (3, Shape::new(7, 5, 4), 6, window(1, 1, 1, [0; 4])),
            (2, Shape::new(4, 5, 5), 3, window(1, 1, 2, [0; 4])),
            (2, Shape::new(2, 3, 3), 2, window(3, 3, 1, [2, 2, 2, 2])),
            (20, Shape::new(32, 32, 32), 8, window(3, 3, 1, [1; 4])),
            (18, Shape::new(3, 9, 11), 5, window(3, 2, 2, [0, 1, 1, 0])),
            (9, Shape::new(16, 16, 16), 24, window(3, 3, 1, [1; 4])),
            (40, Shape::new(16, 8, 8), 16, window(3, 3, 1, [0; 4])),
        ];
        for (seed, (n, in_shape, out_c, win)) in cases.into_iter().enumerate() {
            check_conv_against_naive(n, in_shape, out_c, win, seed as u64, 5e-5);
        }
    }

    /// Conv with a fused activation against finite differences of
    /// `sum(r * act(conv(x, w) + b))`; `eps = 1e-2`, tolerance `2e-3 + 1e-2 |g|`.
    /// The data is the first seeded draw whose pre-activations all lie at least
    /// `0.05` from the kink, where a finite difference would straddle it.
    #[test]
    fn conv_with_activation_matches_finite_differences() {
        for act in [
            Activation::Relu,
            Activation::LeakyRelu { slope: 0.1 },
            Activation::LeakyRelu { slope: -0.3 },
        ] {
            let n = 2;
            let in_shape = Shape::new(3, 5, 4);
            let win = window(3, 2, 2, [1, 0, 1, 1]);
            let out_shape = Shape::new(4, conv_out(5, 3, 2, 1, 1), conv_out(4, 2, 2, 0, 1));
            let geom = ConvGeometry {
                in_shape,
                out_shape,
                window: win,
            };
            let forward = |x: &[f32], w: &[f32], b: &[f32], act: Activation| {
                conv_forward(
                    &geom,
                    n,
                    x,
                    w,
                    Some(b),
                    act,
                    (ConvAlgorithm::Auto, Operands::F32),
                )
            };
            // The first seed whose pre-activations all keep away from the kink.
            let (x, w, b, pre) = (0..)
                .map(|seed: u64| {
                    let x = random_vec(seed, n * in_shape.len());
                    let w = random_vec(seed + 1000, geom.weight_len());
                    let b = random_vec(seed + 2000, 4);
                    let pre = forward(&x, &w, &b, Activation::None);
                    (x, w, b, pre)
                })
                .find(|(.., pre)| pre.iter().all(|p| p.abs() >= 0.05))
                .expect("some seed avoids the kink");
            let r = random_vec(7, n * out_shape.len());
            let forward = |x: &[f32], w: &[f32], b: &[f32]| forward(x, w, b, act);
            let y = forward(&x, &w, &b);
            let act_forward = if activation::needs_input(act) {
                &pre
            } else {
                &y
            };
            let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; 4]);
            let mut grad_out = r.clone();
            ConvBackward {
                geom,
                n,
                input: &x,
                weight: &w,
                grad_out: &mut grad_out,
                act,
                rule: ReluRule::Backprop,
                act_forward,
                grad_input: Some(&mut dx),
                grad_weight: Some(&mut dw),
                grad_bias: Some(&mut db),
                algorithm: ConvAlgorithm::Auto,
                operands: Operands::F32,
            }
            .run(&mut Vec::new());
            let fd_x = finite_differences(&x, 1e-2, |x| dot(&r, &forward(x, &w, &b)));
            let fd_w = finite_differences(&w, 1e-2, |w| dot(&r, &forward(&x, w, &b)));
            let fd_b = finite_differences(&b, 1e-2, |b| dot(&r, &forward(&x, &w, b)));
            assert_close("conv+act dx", &dx, &fd_x, 2e-3, 1e-2);
            assert_close("conv+act dw", &dw, &fd_w, 2e-3, 1e-2);
            assert_close("conv+act db", &db, &fd_b, 2e-3, 1e-2);
        }
    }

    /// The three ReLU rules on a hand-computed example (Springenberg et al.,
    /// Figure 1), for a ReLU and a leaky ReLU with slope 0.1.
    #[test]
    fn relu_rules_hand_example() {
        let f_in = [1.0, -1.0, 2.0, -2.0];
        let r_out = [1.0, 1.0, -1.0, -1.0];
        let cases: [(Activation, ReluRule, [f32; 4]); 7] = [
            (Activation::Relu, ReluRule::Backprop, [1.0, 0.0, -1.0, 0.0]),
            (Activation::Relu, ReluRule::Deconvnet, [1.0, 1.0, 0.0, 0.0]),
            (Activation::Relu, ReluRule::Guided, [1.0, 0.0, 0.0, 0.0]),
            (
                Activation::LeakyRelu { slope: 0.1 },
                ReluRule::Backprop,
                [1.0, 0.1, -1.0, -0.1],
            ),
            (
                Activation::LeakyRelu { slope: 0.1 },
                ReluRule::Deconvnet,
                [1.0, 1.0, -0.1, -0.1],
            ),
            (
                Activation::LeakyRelu { slope: 0.1 },
                ReluRule::Guided,
                [1.0, 0.1, -0.1, -0.01],
            ),
            (Activation::None, ReluRule::Guided, [1.0, 1.0, -1.0, -1.0]),
        ];
        for (act, rule, want) in cases {
            let mut grad = r_out;
            activation::backward(act, rule, &f_in, &mut grad);
            for (g, w) in grad.iter().zip(want) {
                assert!(
                    (g - w).abs() < 1e-6,
                    "{act:?} {rule:?}: got {grad:?}, want {want:?}"
                );
            }
        }
    }

    /// Distinct values `0.01` apart in shuffled order, so max-pool windows have
    /// unique maxima that a `1e-3` step cannot reorder.
    fn distinct_values(seed: u64, len: usize) -> Vec<f32> {
        let keys = random_vec(seed, len);
        let mut order: Vec<usize> = (0..len).collect();
        order.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]));
        let mut values = vec![0.0; len];
        for (rank, &i) in order.iter().enumerate() {
            values[i] = rank as f32 * 0.01 - 0.5 * len as f32 * 0.01;
        }
        values
    }

    /// Max pooling with Caffe ceil windows and padding against finite
    /// differences (`eps = 1e-3`, tolerance `1e-3`), plus its output values.
    #[test]
    fn max_pool_matches_finite_differences() {
        for (size, k, stride, pad) in [(8, 3, 2, 0), (7, 3, 2, 1), (5, 2, 2, 0), (6, 3, 1, 1)] {
            let n = 2;
            let out = pool_out(size, k, stride, pad);
            let geom = PoolGeometry {
                in_shape: Shape::new(3, size, size),
                out_shape: Shape::new(3, out, out),
                window: window(k, k, stride, [pad; 4]),
            };
            let x = distinct_values(size as u64, n * geom.in_shape.len());
            let r = random_vec(99, n * geom.out_shape.len());
            let forward = |x: &[f32]| {
                let mut y = vec![0.0; n * geom.out_shape.len()];
                let mut sw = vec![0; y.len()];
                max_pool_forward(&geom, n, x, &mut y, &mut sw);
                (y, sw)
            };
            let (y, switches) = forward(&x);
            // Output values: the maximum over the clipped window.
            for (i, &v) in y.iter().enumerate() {
                let (img, pos, ch) = (i / geom.out_shape.len(), (i / 3) % (out * out), i % 3);
                let (oh, ow) = (pos / out, pos % out);
                let mut best = f32::NEG_INFINITY;
                for ih in (oh * stride).saturating_sub(pad)..(oh * stride + k - pad).min(size) {
                    for iw in (ow * stride).saturating_sub(pad)..(ow * stride + k - pad).min(size) {
                        best = best.max(x[img * geom.in_shape.len() + (ih * size + iw) * 3 + ch]);
                    }
                }
                assert_eq!(v, best, "max pool output {i}");
            }
            let mut dx = vec![f32::NAN; x.len()];
            max_pool_backward(&geom, n, &r, &switches, &mut dx);
            let fd = finite_differences(&x, 1e-3, |x| dot(&r, &forward(x).0));
            assert_close("max pool dx", &dx, &fd, 1e-3, 0.0);
        }
    }

    /// Average pooling (Caffe divisor: window elements inside the padded input)
    /// against finite differences (`eps = 1e-2`, tolerance `1e-3`), and one
    /// hand-computed corner value.
    #[test]
    fn avg_pool_matches_finite_differences() {
        for (size, k, stride, pad) in [(8, 3, 2, 0), (7, 3, 2, 1), (4, 3, 2, 1), (6, 2, 1, 0)] {
            let n = 2;
            let out = pool_out(size, k, stride, pad);
            let geom = PoolGeometry {
                in_shape: Shape::new(2, size, size),
                out_shape: Shape::new(2, out, out),
                window: window(k, k, stride, [pad; 4]),
            };
            let x = random_vec(size as u64, n * geom.in_shape.len());
            let r = random_vec(7, n * geom.out_shape.len());
            let forward = |x: &[f32]| {
                let mut y = vec![0.0; n * geom.out_shape.len()];
                avg_pool_forward(&geom, n, x, &mut y);
                y
            };
            let mut dx = vec![f32::NAN; x.len()];
            avg_pool_backward(&geom, n, &r, &mut dx);
            let fd = finite_differences(&x, 1e-2, |x| dot(&r, &forward(x)));
            assert_close("avg pool dx", &dx, &fd, 1e-3, 0.0);
        }
        // 4x4 of ones, 3x3 windows, stride 2, pad 1: output 2x2. Window (0, 0)
        // covers rows and columns -1..2: 9 elements of the padded input, 4 of
        // them inside the image, so 4/9. Window (1, 1) covers 1..4, all inside.
        let geom = PoolGeometry {
            in_shape: Shape::new(1, 4, 4),
            out_shape: Shape::new(1, 2, 2),
            window: window(3, 3, 2, [1; 4]),
        };
        let mut y = vec![0.0; 4];
        avg_pool_forward(&geom, 1, &[1.0; 16], &mut y);
        assert!((y[0] - 4.0 / 9.0).abs() < 1e-6, "{y:?}");
        assert!((y[3] - 1.0).abs() < 1e-6, "{y:?}");
        // 5x5 with a 2x2/2 window and no padding: the last window (rows 4..6) is
        // clipped by the ceil rounding and divides by 1 (Caffe: min(start + k,
        // H + pad) = 5), so it equals the corner value.
        let geom = PoolGeometry {
            in_shape: Shape::new(1, 5, 5),
            out_shape: Shape::new(1, 3, 3),
            window: window(2, 2, 2, [0; 4]),
        };
        let x: Vec<f32> = (0..25).map(|i| i as f32).collect();
        let mut y = vec![0.0; 9];
        avg_pool_forward(&geom, 1, &x, &mut y);
        assert_eq!(y[8], 24.0);
        assert_eq!(y[0], (0.0 + 1.0 + 5.0 + 6.0) / 4.0);
    }

    /// Global average pooling against finite differences (`eps = 1e-2`, tolerance `1e-4`).
    #[test]
    fn global_avg_pool_matches_finite_differences() {
        let (n, shape) = (3, Shape::new(4, 3, 5));
        let x = random_vec(5, n * shape.len());
        let r = random_vec(6, n * shape.c);
        let forward = |x: &[f32]| {
            let mut y = vec![0.0; n * shape.c];
            global_avg_pool_forward(shape, n, x, &mut y);
            y
        };
        let mut dx = vec![f32::NAN; x.len()];
        global_avg_pool_backward(shape, n, &r, &mut dx);
        let fd = finite_differences(&x, 1e-2, |x| dot(&r, &forward(x)));
        assert_close("gap dx", &dx, &fd, 1e-4, 0.0);
    }

    /// Dropout: deterministic given the seed, drops about `p`, scales the kept
    /// values, and its backward matches finite differences (the mask is fixed by
    /// the seed; `eps = 1e-2`, tolerance `1e-4`).
    #[test]
    fn dropout_is_seeded_and_matches_finite_differences() {
        let (p, image_len, n) = (0.3, 1000, 5);
        let x = random_vec(1, n * image_len);
        let forward = |x: &[f32], seed: u64| {
            let mut y = vec![0.0; x.len()];
            let mut mask = vec![0u8; x.len()];
            dropout_forward(p, seed, image_len, x, &mut y, &mut mask);
            (y, mask)
        };
        let (y, mask) = forward(&x, 42);
        assert_eq!(forward(&x, 42).0, y, "same seed, same mask");
        assert_ne!(forward(&x, 43).1, mask, "another seed, another mask");
        let dropped = mask.iter().filter(|&&m| m == 0).count() as f64 / mask.len() as f64;
        assert!((dropped - 0.3).abs() < 0.03, "dropped fraction {dropped}");
        for ((&v, &m), &o) in x.iter().zip(&mask).zip(&y) {
            let want = if m == 1 { v / 0.7 } else { 0.0 };
            assert!((o - want).abs() < 1e-6);
        }
        let small = &x[..2 * 10];
        let r = random_vec(2, small.len());
        let mut dx = vec![0.0; small.len()];
        let small_mask = forward(small, 9).1;
        dropout_backward(p, &small_mask, &r, &mut dx);
        let fd = finite_differences(small, 1e-2, |x| dot(&r, &forward(x, 9).0));
        assert_close("dropout dx", &dx, &fd, 1e-4, 0.0);
    }

    /// Softmax + mean cross-entropy against finite differences of the mean loss
    /// (`eps = 1e-2`, tolerance `1e-4 + 1e-3 |g|`), the loss value against the
    /// definition, and softmax's own backward against finite differences.
    #[test]
    fn softmax_cross_entropy_matches_finite_differences() {
        let (n, classes) = (4, 5);
        let z: Vec<f32> = random_vec(3, n * classes).iter().map(|v| v * 3.0).collect();
        let labels = [0u32, 4, 2, 2];
        let loss_of = |z: &[f32]| {
            let mut p = vec![0.0; z.len()];
            softmax_forward(classes, z, &mut p);
            let mut g = vec![0.0; z.len()];
            cross_entropy(classes, z, &p, &labels, &mut g)
        };
        let mut probs = vec![0.0; z.len()];
        softmax_forward(classes, &z, &mut probs);
        let mut grad = vec![0.0; z.len()];
        let loss = cross_entropy(classes, &z, &probs, &labels, &mut grad);
        let mut want_loss = 0.0;
        let mut want_correct = 0;
        for (i, &label) in labels.iter().enumerate() {
            let row = &z[i * classes..(i + 1) * classes];
            let lse = row.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
            want_loss += lse - row[label as usize] as f64;
            let top = (0..classes)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap();
            want_correct += usize::from(top == label as usize);
        }
        assert!((loss.loss_sum - want_loss).abs() < 1e-5);
        assert_eq!(loss.correct, want_correct);
        let fd = finite_differences(&z, 1e-2, |z| loss_of(z).loss_sum / n as f64);
        assert_close("cross-entropy grad", &grad, &fd, 1e-4, 1e-3);

        let r = random_vec(4, z.len());
        let mut dz = vec![0.0; z.len()];
        softmax_backward(classes, &probs, &r, &mut dz);
        let fd = finite_differences(&z, 1e-2, |z| {
            let mut p = vec![0.0; z.len()];
            softmax_forward(classes, z, &mut p);
            dot(&r, &p)
        });
        assert_close("softmax backward", &dz, &fd, 1e-4, 1e-3);
    }

    /// ReLU and leaky ReLU alone against finite differences (`eps = 1e-3`, points
    /// at least `0.01` from the kink, tolerance `1e-3`).
    #[test]
    fn activation_matches_finite_differences() {
        let x: Vec<f32> = random_vec(8, 50)
            .into_iter()
            .map(|v| if v.abs() < 0.01 { 0.5 } else { v })
            .collect();
        let r = random_vec(9, 50);
        for act in [Activation::Relu, Activation::LeakyRelu { slope: 0.2 }] {
            let forward = |x: &[f32]| {
                let mut y = x.to_vec();
                activation::forward(act, &mut y);
                y
            };
            let y = forward(&x);
            let mut g = r.clone();
            activation::backward(act, ReluRule::Backprop, &y, &mut g);
            let fd = finite_differences(&x, 1e-3, |x| dot(&r, &forward(x)));
            assert_close("activation", &g, &fd, 1e-3, 0.0);
        }
    }
}
