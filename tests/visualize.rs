//! The visualisation's backward pass (PAPER.md, "Guided backpropagation"):
//!
//! - tiny plans built by hand, with hand-set weights, where backprop,
//!   deconvnet and guided backpropagation differ exactly where their formulas
//!   say (`R_in = [f_in > 0] R_out`, `[R_out > 0] R_out`,
//!   `[f_in > 0][R_out > 0] R_out`), including through max-pool switches;
//! - on real models from `models/` with random weights, the reconstruction of
//!   one unit is exactly zero outside that unit's receptive field as the
//!   compiler's `stats` pass computes it, for all three rules.

use allcnnc::diagnostic::Source;
use allcnnc::vis::field::receptive_fields;
use allcnnc::vis::search::{reconstruct, SeedValue, Unit};
use allcnnc::vis::{rule_name, RULES};
use runtime::backend::Executor;
use runtime::cpu::CpuExecutor;
use runtime::plan::{Activation, Op, Padding, Plan, ReluRule, Shape, Window};

fn window(k: usize, stride: usize) -> Window {
    Window {
        kh: k,
        kw: k,
        stride_h: stride,
        stride_w: stride,
        pad: Padding::default(),
    }
}

fn conv(out_channels: usize, k: usize, act: Activation) -> Op {
    Op::Conv {
        out_channels,
        window: window(k, 1),
        bias: false,
        act,
    }
}

/// A plan of `layers` (name, op, output shape) followed by a softmax.
fn plan_of(input: Shape, mut layers: Vec<(&str, Op, Shape)>) -> Plan {
    let last = layers.last().map_or(input, |l| l.2);
    layers.push(("softmax", Op::Softmax, last));
    Plan::chain("hand", input, last.c, layers)
}

/// An executor of `plan` with the given weights (one tensor per conv, HWIO).
fn executor(plan: Plan, weights: Vec<Vec<f32>>) -> CpuExecutor {
    let mut exec = CpuExecutor::new(plan, 0).expect("valid plan");
    exec.write_params(&weights).expect("weights fit");
    exec
}

/// The reconstruction of `unit` of layer `layer_idx` for each rule, one image.
fn signals(
    exec: &mut CpuExecutor,
    layer_idx: usize,
    image: &[f32],
    unit: Unit,
    value: SeedValue,
) -> Vec<(ReluRule, Vec<f32>)> {
    let recons = reconstruct(exec, layer_idx, image, &[unit], &RULES, value).unwrap();
    RULES
        .iter()
        .zip(recons)
        .map(|(&rule, mut per_image)| (rule, per_image.remove(0)))
        .collect()
}

/// Four hidden ReLUs, one per case of the formulas. The input has four
/// channels of value 1; `conv1` (1x1) multiplies them by `[1, 1, -1, -1]`,
/// so the hidden pre-activations are `f_in = [1, 1, -1, -1]`; `conv2` (1x1,
/// no ReLU) sums them with weights `[2, -3, 5, -7]`, so a signal 1 at its
/// output arrives at the hidden ReLUs as `R_out = [2, -3, 5, -7]`:
///
/// | hidden | f_in | R_out | backprop | deconvnet | guided |
/// |---|---|---|---|---|---|
/// | 0 | + | 2 | 2 | 2 | 2 |
/// | 1 | + | -3 | -3 | 0 | 0 |
/// | 2 | - | 5 | 0 | 5 | 0 |
/// | 3 | - | -7 | 0 | 0 | 0 |
///
/// and `conv1` maps `R_in` back to the image as `[R0, R1, -R2, -R3]`.
fn four_cases(top_act: Activation) -> CpuExecutor {
    let one = Shape::new(4, 1, 1);
    let plan = plan_of(
        one,
        vec![
            ("conv1", conv(4, 1, Activation::Relu), one),
            ("conv2", conv(1, 1, top_act), Shape::new(1, 1, 1)),
        ],
    );
    let mut diag = vec![0.0; 16];
    for (i, d) in [1.0, 1.0, -1.0, -1.0].into_iter().enumerate() {
        diag[i * 4 + i] = d; // HWIO: [c_in][c_out]
    }
    executor(plan, vec![diag, vec![2.0, -3.0, 5.0, -7.0]])
}

const TOP: Unit = Unit {
    channel: 0,
    y: 0,
    x: 0,
};

#[test]
fn the_three_rules_differ_where_the_formulas_say() {
    let mut exec = four_cases(Activation::None);
    let got = signals(&mut exec, 1, &[1.0; 4], TOP, SeedValue::One);
    let want = [
        (ReluRule::Backprop, vec![2.0, -3.0, 0.0, 0.0]),
        (ReluRule::Deconvnet, vec![2.0, 0.0, -5.0, 0.0]),
        (ReluRule::Guided, vec![2.0, 0.0, 0.0, 0.0]),
    ];
    assert_eq!(got, want);
}

/// The visualised unit's own ReLU applies the rule too: `conv2` with a ReLU
/// has `f_in = 2 - 3 = -1`, so backprop and guided stop at the unit while
/// the deconvnet (forward ignored) passes the positive signal down; seeded
/// with its activation (0) every rule gives zero.
#[test]
fn the_units_own_relu_follows_the_rule() {
    let mut exec = four_cases(Activation::Relu);
    let got = signals(&mut exec, 1, &[1.0; 4], TOP, SeedValue::One);
    let want = [
        (ReluRule::Backprop, vec![0.0; 4]),
        (ReluRule::Deconvnet, vec![2.0, 0.0, -5.0, 0.0]),
        (ReluRule::Guided, vec![0.0; 4]),
    ];
    assert_eq!(got, want);
    for (rule, signal) in signals(&mut exec, 1, &[1.0; 4], TOP, SeedValue::Activation) {
        assert_eq!(signal, vec![0.0; 4], "{rule:?}");
    }
}

/// `conv1` (1x1, weight 1, no ReLU) -> 2x2/2 max-pool -> `conv2` (1x1,
/// weight 1, ReLU) -> `conv3` (2x2 valid, weights `[[1, 3], [-2, 4]]`, no
/// ReLU). The pool's switches decide which image pixel each pooled signal
/// returns to; the ReLU after the pool sees the pooled maxima.
fn pool_net() -> CpuExecutor {
    let plan = plan_of(
        Shape::new(1, 4, 4),
        vec![
            ("conv1", conv(1, 1, Activation::None), Shape::new(1, 4, 4)),
            (
                "pool1",
                Op::MaxPool {
                    window: window(2, 2),
                },
                Shape::new(1, 2, 2),
            ),
            ("conv2", conv(1, 1, Activation::Relu), Shape::new(1, 2, 2)),
            ("conv3", conv(1, 2, Activation::None), Shape::new(1, 1, 1)),
        ],
    );
    executor(plan, vec![vec![1.0], vec![1.0], vec![1.0, 3.0, -2.0, 4.0]])
}

/// A 4x4 image with `values` at the given pixels, 0 elsewhere.
fn pixels(values: &[((usize, usize), f32)]) -> Vec<f32> {
    let mut image = vec![0.0; 16];
    for &((y, x), v) in values {
        image[y * 4 + x] = v;
    }
    image
}

#[test]
fn deconvnet_goes_through_the_max_pool_switches() {
    // Window maxima: top-left 0.9 at (0,1); top-right -0.1 at (1,2) (every
    // value negative: the pooled f_in < 0); bottom-left 0.8 at (3,0);
    // bottom-right 0.6 at (2,3). R_out at conv2 = [[1, 3], [-2, 4]], so:
    // top-left f+ R+, top-right f- R+, bottom-left f+ R-, bottom-right f+ R+.
    let image = [
        0.1, 0.9, -0.5, -0.2, //
        0.3, 0.2, -0.1, -0.7, //
        0.4, 0.0, 0.5, 0.6, //
        0.8, 0.7, 0.2, 0.1,
    ];
    let mut exec = pool_net();
    let got = signals(&mut exec, 3, &image, TOP, SeedValue::One);
    let want = [
        (
            ReluRule::Backprop,
            pixels(&[((0, 1), 1.0), ((3, 0), -2.0), ((2, 3), 4.0)]),
        ),
        (
            ReluRule::Deconvnet,
            pixels(&[((0, 1), 1.0), ((1, 2), 3.0), ((2, 3), 4.0)]),
        ),
        (ReluRule::Guided, pixels(&[((0, 1), 1.0), ((2, 3), 4.0)])),
    ];
    assert_eq!(got, want);
}

/// Two images in one batch keep their own switches and gates.
#[test]
fn each_image_of_a_batch_has_its_own_switches() {
    let first = [
        0.1, 0.9, -0.5, -0.2, //
        0.3, 0.2, -0.1, -0.7, //
        0.4, 0.0, 0.5, 0.6, //
        0.8, 0.7, 0.2, 0.1,
    ];
    // Maxima: 0.9 at (1,0), 0.3 at (0,2), -0.3 at (2,1) (f-, R-: blocked by
    // every rule), 0.6 at (2,3).
    let second = [
        0.1, 0.2, 0.3, -0.2, //
        0.9, 0.2, -0.1, -0.7, //
        -0.4, -0.3, 0.5, 0.6, //
        -0.8, -0.7, 0.2, 0.1,
    ];
    let mut exec = pool_net();
    let images: Vec<f32> = first.iter().chain(&second).copied().collect();
    let recons = reconstruct(&mut exec, 3, &images, &[TOP, TOP], &RULES, SeedValue::One).unwrap();
    let second_want = pixels(&[((1, 0), 1.0), ((0, 2), 3.0), ((2, 3), 4.0)]);
    for (rule, per_image) in RULES.iter().zip(&recons) {
        assert_eq!(per_image[1], second_want, "{rule:?}");
        let alone = signals(&mut exec, 3, &first, TOP, SeedValue::One);
        let (_, first_alone) = alone.iter().find(|(r, _)| r == rule).unwrap();
        assert_eq!(&per_image[0], first_alone, "{rule:?}");
    }
}

/// A deterministic pseudo-random image in `-0.5..0.5`.
fn noise(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

/// For `layer` of the model in `text`, random weights and a random image:
/// the reconstruction of the strongest unit of a few channels (and of the
/// corner units) is zero outside the unit's receptive field (size and jump
/// from the `stats` pass), and not zero inside, for every rule; where it is
/// not all zero and no max-pool lies on the way, its non-zero pixels reach
/// every side of the (clipped) field, so the field is exact, not merely
/// large enough.
///
/// "Zero" is exact where the executor convolves by im2col + GEMM. Its
/// Winograd F(4x4, 3x3) path (3x3 stride-1 convs with at least 16 channels
/// in and out) computes the backward pass through transforms whose rounding
/// leaves values of about 1e-6 times the signal in the same tile where the exact result is
/// 0, so with `winograd` those may reach `WINOGRAD_LEAK` times the largest
/// value inside the field.
fn check_zero_outside_the_field(model: &str, text: &str, layer: &str, winograd: bool) {
    let source = Source::new(model, text);
    let graph = allcnnc::front::load(&source).expect("model loads");
    let fields = receptive_fields(&graph).expect("stats ran");
    let plan = allcnnc::back::plan::lower(&graph, None);
    let layer_idx = plan.layers.iter().position(|l| l.name == layer).unwrap();
    let (input, out_shape) = (plan.input, plan.layers[layer_idx].out_shape);
    let field = fields[layer_idx];
    let through_max_pool = plan.layers[..=layer_idx]
        .iter()
        .any(|l| matches!(l.op, Op::MaxPool { .. }));
    let mut exec = CpuExecutor::new(plan, 11).unwrap();
    let image = noise(input.len(), 5);
    let acts = exec.forward_to(&image, 1, layer_idx).unwrap();
    let maxima = allcnnc::vis::search::channel_maxima(&acts, out_shape);
    // The first, middle and last of the channels this image excites.
    let live: Vec<usize> = (0..out_shape.c).filter(|&c| maxima[c].0 > 0.0).collect();
    assert!(live.len() >= 3, "{model} {layer}: too few live channels");
    let mut units: Vec<Unit> = [live[0], live[live.len() / 2], live[live.len() - 1]]
        .iter()
        .map(|&channel| Unit {
            channel,
            y: maxima[channel].1,
            x: maxima[channel].2,
        })
        .collect();
    // The corners, seeded with 1 (their activation may be 0).
    let corners = [
        Unit {
            channel: 1,
            y: 0,
            x: 0,
        },
        Unit {
            channel: 2,
            y: out_shape.h - 1,
            x: out_shape.w - 1,
        },
    ];
    for (units, value) in [
        (std::mem::take(&mut units), SeedValue::Activation),
        (corners.to_vec(), SeedValue::One),
    ] {
        let images: Vec<f32> = units.iter().flat_map(|_| image.iter().copied()).collect();
        let recons = reconstruct(&mut exec, layer_idx, &images, &units, &RULES, value).unwrap();
        for (rule, per_rule) in RULES.iter().zip(&recons) {
            for (unit, recon) in units.iter().zip(per_rule) {
                let clipped = field.window(unit.y, unit.x).clip(input);
                let what = format!("{model} {layer} {} {unit:?} {clipped:?}", rule_name(*rule));
                let (mut inside, mut outside) = (0.0f32, (0.0f32, 0, 0));
                // The bounding box of the non-zero pixels.
                let mut support = (usize::MAX, 0, usize::MAX, 0);
                for (pos, pixel) in recon.chunks_exact(input.c).enumerate() {
                    let (y, x) = (pos / input.w, pos % input.w);
                    let peak = pixel.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    if clipped.contains(y, x) {
                        inside = inside.max(peak);
                        if peak > 0.0 {
                            support = (
                                support.0.min(y),
                                support.1.max(y + 1),
                                support.2.min(x),
                                support.3.max(x + 1),
                            );
                        }
                    } else if peak > outside.0 {
                        outside = (peak, y, x);
                    }
                }
                // Exactly zero: the visualisation backward runs im2col even
                // where training uses Winograd (`winograd` marks such models).
                let (peak, y, x) = outside;
                assert!(
                    peak == 0.0,
                    "{what} (winograd layers: {winograd}): {peak:e} at ({y}, {x}) outside the field, largest inside {inside:e}"
                );
                // The field is tight: the non-zero pixels reach all four sides
                // (not through max-pooling, which passes each signal to one
                // pixel of its window only).
                if inside > 0.0 && !through_max_pool {
                    let sides = (clipped.y0, clipped.y1, clipped.x0, clipped.x1);
                    assert_eq!(support, sides, "{what}: non-zero bounding box");
                }
                // A corner unit's own ReLU may be closed for backprop/guided.
                if value == SeedValue::Activation || *rule == ReluRule::Deconvnet {
                    assert!(inside > 0.0, "{what}: zero inside the field");
                }
            }
        }
    }
}

fn model_text(model: &str) -> String {
    std::fs::read_to_string(format!("{}/models/{model}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn fashion_all_cnn_is_zero_outside_the_field() {
    // conv6: 21x21 field, jump 4; every unit's field is clipped by the
    // 28x28 image. Its 3x3 convs have 16 or more channels: Winograd.
    let text = model_text("fashion-all-cnn.net");
    check_zero_outside_the_field("fashion-all-cnn.net", &text, "conv6", true);
    check_zero_outside_the_field("fashion-all-cnn.net", &text, "conv3", true);
}

#[test]
fn narrow_fashion_all_cnn_is_exactly_zero_outside_the_field() {
    // Width 8: fewer than 16 channels, so every conv runs im2col + GEMM.
    let text: String = model_text("fashion-all-cnn.net")
        .lines()
        .map(|line| {
            if line.starts_with("let w =") {
                "let w = 8\n".to_string()
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    assert!(text.contains("let w = 8\n"), "the model has a width `w`");
    check_zero_outside_the_field("fashion-all-cnn.net (w = 8)", &text, "conv6", false);
    check_zero_outside_the_field("fashion-all-cnn.net (w = 8)", &text, "conv4", false);
}

#[test]
fn all_cnn_c_is_zero_outside_the_field() {
    // Two stride-2 convs: conv6 has a 19x19 field, jump 4, on 32x32 RGB.
    let text = model_text("all-cnn-c.net");
    check_zero_outside_the_field("all-cnn-c.net", &text, "conv6", true);
}

#[test]
fn model_c_after_max_pooling_is_zero_outside_the_field() {
    // Through Caffe-rounded 3x3/2 max-pools (switches) and dropout layers.
    let text = model_text("model-c.net");
    check_zero_outside_the_field("model-c.net", &text, "conv4", true);
    check_zero_outside_the_field("model-c.net", &text, "pool2", true);
}
