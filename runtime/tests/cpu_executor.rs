//! The CPU executor through the `Executor` API: whole-network gradients
//! against finite differences, the visualisation path, SGD, determinism
//! across seeds and thread counts, training on a separable problem, errors.

#[path = "cpu_support.rs"]
mod support;

#[path = "../../tests/skip/mod.rs"]
mod skip;

/// The tests live in `cpu` so that `cargo test cpu` selects them.
mod cpu {
    use super::support::*;
    use runtime::backend::{BackendError, Batch, Executor, SgdStep};
    use runtime::cpu::{CpuExecutor, Operands};
    use runtime::plan::{Activation, Op, Plan, ReluRule, Shape};

    fn executor(plan: Plan, seed: u64) -> CpuExecutor {
        CpuExecutor::new(plan, seed).expect("valid plan")
    }

    /// Random biases (zero at initialisation) so that the bias gradients are
    /// exercised away from special points.
    fn randomise_biases(exec: &mut CpuExecutor, seed: u64) {
        let specs = exec.plan().params();
        let mut params = exec.read_params().unwrap();
        for (i, (spec, p)) in specs.iter().zip(&mut params).enumerate() {
            if spec.dims.len() == 1 {
                *p = random_vec(seed + i as u64, p.len())
                    .iter()
                    .map(|v| v * 0.1)
                    .collect();
            }
        }
        exec.write_params(&params).unwrap();
    }

    /// Every parameter gradient of `forward_backward` against central finite
    /// differences of the mean loss (same dropout seed for every evaluation).
    /// `eps = 3e-4`, small enough that the steps cross no ReLU kink or max-pool
    /// switch for these seeds (at `3e-3` the error grows tenfold, the signature
    /// of kinks), large enough for `f32` round-off; tolerance `abs + 1e-2 |g|`
    /// for every coordinate, where `abs` covers the round-off of the `f32`
    /// loss divided by the step (about `1e-7 / 3e-4` per unit of loss noise).
    /// At most `max_misses` coordinates per tensor may miss (kinks crossed).
    fn check_network_gradients(plan: Plan, n: usize, seed: u64, abs: f64, max_misses: usize) {
        let input = plan.input;
        let classes = plan.classes;
        let mut exec = executor(plan, seed);
        randomise_biases(&mut exec, seed);
        let images = random_vec(seed + 100, n * input.len());
        let labels: Vec<u32> = (0..n).map(|i| (i % classes) as u32).collect();
        let batch = Batch {
            images: &images,
            labels: &labels,
            n,
        };
        let step_seed = 77;
        exec.forward_backward_stats(&batch, step_seed).unwrap();
        let grads = exec.read_grads().unwrap();
        let params = exec.read_params().unwrap();
        let specs = exec.plan().params();
        for (t, spec) in specs.iter().enumerate() {
            let fd = finite_differences(&params[t], 3e-4, |value| {
                let mut p = params.clone();
                p[t] = value.to_vec();
                exec.write_params(&p).unwrap();
                exec.forward_backward_stats(&batch, step_seed)
                    .unwrap()
                    .loss_sum
                    / n as f64
            });
            let misses: Vec<usize> = (0..fd.len())
                .filter(|&i| (grads[t][i] as f64 - fd[i]).abs() > abs + 1e-2 * fd[i].abs())
                .collect();
            assert!(
                misses.len() <= max_misses,
                "{}: {} coordinates differ, e.g. #{}: got {}, want {}",
                spec.name,
                misses.len(),
                misses[0],
                grads[t][misses[0]],
                fd[misses[0]]
            );
        }
    }

    #[test]
    fn pool_network_gradients_match_finite_differences() {
        check_network_gradients(small_pool_net(8, 4, 3), 3, 1, 5e-4, 0);
    }

    #[test]
    fn strided_leaky_network_gradients_match_finite_differences() {
        check_network_gradients(small_strided_net(9, 5, 4, 0.1), 3, 2, 5e-4, 0);
    }

    /// The same network with 16 channels, so that its 3x3 stride-1 layer
    /// takes the Winograd path. More units mean more loss round-off
    /// (`abs = 1e-3`) and more kinks: a conv2 weight moves 128
    /// pre-activations, so about 1% of its coordinates straddle a leaky-ReLU
    /// kink. With conv2 forced onto im2col the same 12 of 2304 coordinates
    /// miss with the same values, so up to 24 misses per tensor are allowed.
    #[test]
    fn winograd_network_gradients_match_finite_differences() {
        let plan = small_strided_net(16, 16, 3, 0.1);
        let conv2 = &plan.layers[3];
        let runtime::plan::Op::Conv { window, .. } = conv2.op else {
            unreachable!("layer 3 is conv2")
        };
        let geom = runtime::cpu::conv::ConvGeometry {
            in_shape: conv2.in_shape,
            out_shape: conv2.out_shape,
            window,
        };
        assert!(geom.uses_winograd());
        check_network_gradients(plan, 2, 3, 1e-3, 24);
    }

    /// `backward_to_input` with the backprop rule is the gradient of
    /// `sum(signal * forward_to(x, layer))` with respect to the image (through
    /// max-pool switches and a strided conv), checked by finite differences
    /// (`eps = 1e-3`, tolerance `2e-3 + 1e-2 |g|` for every pixel; the largest
    /// error seen is 5e-4 on gradients up to 3).
    #[test]
    fn backward_to_input_is_the_input_gradient() {
        for (plan, layer_idx) in [
            (small_pool_net(8, 4, 3), 2),
            (small_pool_net(7, 3, 2), 1),
            (small_strided_net(9, 5, 4, 0.1), 4),
        ] {
            let n = 2;
            let input = plan.input;
            let mut exec = executor(plan, 5);
            randomise_biases(&mut exec, 5);
            let images = random_vec(6, n * input.len());
            let out = exec.forward_to(&images, n, layer_idx).unwrap();
            let signal = random_vec(7, out.len());
            let grad = exec
                .backward_to_input(layer_idx, &signal, ReluRule::Backprop)
                .unwrap();
            let fd = finite_differences(&images, 1e-3, |x| {
                dot(&signal, &exec.forward_to(x, n, layer_idx).unwrap())
            });
            let misses = (0..fd.len())
                .filter(|&i| (grad[i] as f64 - fd[i]).abs() > 2e-3 + 1e-2 * fd[i].abs())
                .count();
            assert!(misses == 0, "layer {layer_idx}: {misses} misses");
        }
    }

    /// The three rules through the executor: a 1x1 identity conv with a ReLU,
    /// so the signal at the image is the rule applied to the signal.
    #[test]
    fn relu_rules_through_executor() {
        let plan = plan_of(
            Shape::new(4, 1, 1),
            4,
            vec![
                (
                    "conv",
                    Op::Conv {
                        out_channels: 4,
                        window: window(1, 1, 1, [0; 4]),
                        bias: false,
                        act: Activation::Relu,
                    },
                    Shape::new(4, 1, 1),
                ),
                ("softmax", Op::Softmax, Shape::new(4, 1, 1)),
            ],
        );
        let mut exec = executor(plan, 0);
        let identity: Vec<f32> = (0..16)
            .map(|i| if i % 5 == 0 { 1.0 } else { 0.0 })
            .collect();
        exec.write_params(&[identity]).unwrap();
        let out = exec.forward_to(&[1.0, -1.0, 2.0, -2.0], 1, 0).unwrap();
        assert_eq!(out, [1.0, 0.0, 2.0, 0.0]);
        let signal = [1.0, 1.0, -1.0, -1.0];
        for (rule, want) in [
            (ReluRule::Backprop, [1.0, 0.0, -1.0, 0.0]),
            (ReluRule::Deconvnet, [1.0, 1.0, 0.0, 0.0]),
            (ReluRule::Guided, [1.0, 0.0, 0.0, 0.0]),
        ] {
            assert_eq!(
                exec.backward_to_input(0, &signal, rule).unwrap(),
                want,
                "{rule:?}"
            );
        }
    }

    /// A batch for the determinism and update tests.
    fn batch_data(plan: &Plan, n: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
        let images = random_vec(seed, n * plan.input.len());
        let labels = (0..n).map(|i| (i * 7 % plan.classes) as u32).collect();
        (images, labels)
    }

    const STEP: SgdStep = SgdStep {
        lr: 0.05,
        momentum: 0.9,
        nesterov: false,
        weight_decay: 1e-3,
    };

    /// Three SGD steps from `seed`; returns the parameters.
    fn train_three_steps(plan: &Plan, seed: u64) -> Vec<Vec<f32>> {
        train_three_steps_with(plan, seed, Operands::F32)
    }

    fn train_three_steps_with(plan: &Plan, seed: u64, operands: Operands) -> Vec<Vec<f32>> {
        let mut exec =
            CpuExecutor::with_operands(plan.clone(), seed, operands).expect("valid plan");
        let n = 20;
        for step in 0..3 {
            let (images, labels) = batch_data(plan, n, step);
            let batch = Batch {
                images: &images,
                labels: &labels,
                n,
            };
            exec.forward_backward(&batch, seed ^ step).unwrap();
            exec.sgd_update(&STEP).unwrap();
        }
        exec.read_params().unwrap()
    }

    /// Same seed, same parameters after three steps (with dropout and more
    /// images than weight-gradient groups), on one and on two rayon threads;
    /// another seed, other parameters.
    #[test]
    fn training_is_deterministic_across_thread_counts() {
        let plan = small_strided_net(16, 24, 5, 0.1);
        let on_threads = |threads: usize, seed: u64| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| train_three_steps(&plan, seed))
        };
        let one = on_threads(1, 3);
        assert_eq!(one, on_threads(2, 3), "1 vs 2 threads");
        assert_eq!(one, on_threads(3, 3), "1 vs 3 threads");
        assert_eq!(one, train_three_steps(&plan, 3), "global pool");
        assert_ne!(one, train_three_steps(&plan, 4), "another seed");
        let pooled = small_pool_net(12, 8, 3);
        let two = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap()
            .install(|| train_three_steps(&pooled, 9));
        assert_eq!(train_three_steps(&pooled, 9), two);
    }

    /// bf16 products: deterministic across thread counts like f32, and
    /// three steps end near the f32 parameters without equalling them (the
    /// strided layers take bf16 operands).
    #[test]
    fn bf16_training_is_deterministic_and_near_f32() {
        if !runtime::cpu::peak::Features::detect().avx512_bf16 {
            return crate::skip::skip("no AVX512-BF16 on this CPU: bf16 training not checked");
        }
        let plan = small_strided_net(16, 24, 5, 0.1);
        let bf16 = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| train_three_steps_with(&plan, 3, Operands::Bf16))
        };
        let one = bf16(1);
        assert_eq!(one, bf16(2), "bf16: 1 vs 2 threads");
        let f32 = train_three_steps(&plan, 3);
        assert_ne!(one, f32, "bf16 ran f32 products");
        for (a, b) in one.iter().zip(&f32) {
            let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let worst = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(
                worst <= 1e-2 * scale,
                "bf16 {worst} from f32 at scale {scale}"
            );
        }
    }

    /// Initial weights are He-normal: zero-mean with variance `2 / fan_in`.
    #[test]
    fn initialisation_is_he_normal() {
        let plan = plan_of(
            Shape::new(64, 4, 4),
            10,
            vec![
                (
                    "conv",
                    conv(10, 3, 1, Activation::Relu),
                    Shape::new(10, 4, 4),
                ),
                ("gap", Op::GlobalAvgPool, Shape::new(10, 1, 1)),
                ("softmax", Op::Softmax, Shape::new(10, 1, 1)),
            ],
        );
        let params = executor(plan, 1).read_params().unwrap();
        let w = &params[0];
        let mean = w.iter().map(|&v| v as f64).sum::<f64>() / w.len() as f64;
        let var = w.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / w.len() as f64;
        let want = 2.0 / (3.0 * 3.0 * 64.0);
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!(
            (var / want - 1.0).abs() < 0.1,
            "variance {var}, want {want}"
        );
        assert!(params[1].iter().all(|&b| b == 0.0), "zero biases");
    }

    /// `sgd_update` follows `v = m v + g + wd w; w -= lr v` (weight decay on
    /// weights only) and the Nesterov form `w -= lr (g + wd w + m v)`.
    #[test]
    fn sgd_update_follows_the_documented_formulas() {
        for nesterov in [false, true] {
            let plan = small_pool_net(8, 4, 3);
            let specs = plan.params();
            let step = SgdStep { nesterov, ..STEP };
            let mut exec = executor(plan.clone(), 1);
            assert!(exec.sgd_update(&step).is_err(), "no gradients yet");
            let mut v: Vec<Vec<f32>> = specs.iter().map(|s| vec![0.0; s.len()]).collect();
            for round in 0..2 {
                let (images, labels) = batch_data(&plan, 4, round);
                let batch = Batch {
                    images: &images,
                    labels: &labels,
                    n: 4,
                };
                exec.forward_backward(&batch, round).unwrap();
                let w0 = exec.read_params().unwrap();
                let g = exec.read_grads().unwrap();
                exec.sgd_update(&step).unwrap();
                let w1 = exec.read_params().unwrap();
                for (t, spec) in specs.iter().enumerate() {
                    let wd = if spec.dims.len() == 4 {
                        step.weight_decay
                    } else {
                        0.0
                    };
                    for i in 0..spec.len() {
                        let d = g[t][i] + wd * w0[t][i];
                        v[t][i] = step.momentum * v[t][i] + d;
                        let update = if nesterov {
                            d + step.momentum * v[t][i]
                        } else {
                            v[t][i]
                        };
                        let want = w0[t][i] - step.lr * update;
                        assert!((w1[t][i] - want).abs() <= 1e-6 * (1.0 + want.abs()));
                    }
                }
                assert_eq!(exec.read_momentum().unwrap(), v);
            }
        }
    }

    /// Two classes, told apart by which half of the image is bright: the loss
    /// must fall well below chance within 40 steps.
    #[test]
    fn loss_falls_on_a_separable_problem() {
        let plan = small_pool_net(8, 8, 2);
        let mut exec = executor(plan, 11);
        let n = 32;
        let mut rng = runtime::rng::SplitMix64::new(5);
        let mut first_loss = None;
        let mut last = (0.0, 0);
        for step in 0..40 {
            let mut images = vec![0.0; n * 3 * 8 * 8];
            let mut labels = vec![0u32; n];
            for (i, label) in labels.iter_mut().enumerate() {
                *label = (rng.next_u64() % 2) as u32;
                for pos in 0..64 {
                    let bright = (pos % 8 < 4) == (*label == 0);
                    for c in 0..3 {
                        let noise = rng.next_f32() - 0.5;
                        images[(i * 64 + pos) * 3 + c] = if bright { 1.0 } else { -1.0 } + noise;
                    }
                }
            }
            let batch = Batch {
                images: &images,
                labels: &labels,
                n,
            };
            let stats = exec.forward_backward_stats(&batch, step).unwrap();
            let mean = stats.loss_sum / n as f64;
            first_loss.get_or_insert(mean);
            last = (mean, stats.correct);
            exec.sgd_update(&SgdStep {
                lr: 0.05,
                momentum: 0.9,
                nesterov: true,
                weight_decay: 1e-4,
            })
            .unwrap();
        }
        let first = first_loss.unwrap();
        assert!(
            last.0 < 0.2 && last.0 < first / 3.0,
            "loss {first} -> {}",
            last.0
        );
        assert!(last.1 >= n - 1, "{} of {n} correct", last.1);
    }

    /// `infer` returns probability rows equal to the training forward without
    /// dropout, in chunks larger than the buffers hold.
    #[test]
    fn infer_returns_probabilities() {
        let plan = small_strided_net(9, 5, 4, 0.1);
        let mut exec = executor(plan.clone(), 3);
        let n = 300;
        let (images, _) = batch_data(&plan, n, 1);
        let probs = exec.infer(&images, n).unwrap();
        assert_eq!(probs.len(), n * 4);
        for row in probs.chunks(4) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        let last_layer = plan.layers.len() - 1;
        let single = exec
            .forward_to(&images[..plan.input.len()], 1, last_layer)
            .unwrap();
        assert_eq!(single, probs[..4]);
    }

    #[test]
    fn errors_are_reported() {
        let plan = small_pool_net(8, 4, 3);
        let mut exec = executor(plan.clone(), 1);
        let images = vec![0.0; 2 * plan.input.len()];
        let bad = Batch {
            images: &images[1..],
            labels: &[0, 1],
            n: 2,
        };
        assert!(matches!(
            exec.forward_backward(&bad, 0),
            Err(BackendError::BatchSize { .. })
        ));
        let bad_label = Batch {
            images: &images,
            labels: &[0, 3],
            n: 2,
        };
        assert!(matches!(
            exec.forward_backward(&bad_label, 0),
            Err(BackendError::LabelOutOfRange {
                label: 3,
                index: 1,
                ..
            })
        ));
        assert!(matches!(
            exec.write_params(&[]),
            Err(BackendError::ParamCount { .. })
        ));
        let mut params = exec.read_params().unwrap();
        params[0].pop();
        assert!(matches!(
            exec.write_params(&params),
            Err(BackendError::ParamSize { .. })
        ));
        assert!(matches!(
            exec.forward_to(&images, 2, 9),
            Err(BackendError::UnknownLayer(_))
        ));
        exec.forward_to(&images, 2, 1).unwrap();
        assert!(exec
            .backward_to_input(2, &[0.0; 10], ReluRule::Guided)
            .is_err());
        let mut no_softmax = plan;
        no_softmax.layers.pop();
        assert!(CpuExecutor::new(no_softmax, 0).is_err());
    }
}
