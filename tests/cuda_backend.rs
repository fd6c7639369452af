//! The CUDA backend against the CPU backend: one test body per check, run on
//! every device by [`test_device!`] (candle's pattern).
//!
//! - `cpu`: the reference against itself (the body's own sanity);
//! - `cuda`: the generated kernels on a GPU; where there is no driver it
//!   records a skip by name ([`skip::skip`]), never a pass;
//! - `emulated`: the same generated kernels and device plan, built with the
//!   system's C++ compiler and run on host threads
//!   ([`runtime::cuda::emulator`]); fails without a C++ compiler.
//!
//! Tolerances (relative to the largest magnitude of the reference tensor):
//! forward outputs and probabilities 1e-4, gradients 2e-3 (fp32 sums in a
//! different order over up to ~10^5 terms; a gradient under 1/1000 of the
//! model's largest, or under 1e-4, is held to 2e-3 of that, the size of its
//! cancelling terms), losses 1e-4. Shapes: two hand-written models that
//! cover every kernel kind, and 24 random networks (proptest, fixed seed). Dropout masks are
//! the same random stream on every device, so they agree exactly.

use allcnnc::back;
use allcnnc::back::cuda::Precision;
use allcnnc::diagnostic::Source;
use runtime::backend::{Batch, Executor, SgdStep, StepStats};
use runtime::cpu::CpuExecutor;
use runtime::cuda::{driver_present, emulator, CudaExecutor, PlanExecutor};
use runtime::plan::{Plan, ReluRule};
use runtime::rng::SplitMix64;

mod common;
mod skip;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dev {
    Cpu,
    Cuda,
    Emulated,
}

/// Instantiates `$name` once per device: `$name::cpu`, `::cuda`,
/// `::emulated`, or only the devices listed (`test_device!(name: cuda,
/// emulated)` for a check with no CPU meaning, such as tensor cores).
macro_rules! test_device {
    ($name:ident) => {
        test_device!($name: cpu, cuda, emulated);
    };
    ($name:ident: $($dev:ident),+) => {
        mod $name {
            $(
                #[test]
                fn $dev() {
                    super::$name(super::Dev::of(stringify!($dev)))
                }
            )+
        }
    };
}

impl Dev {
    fn of(name: &str) -> Self {
        match name {
            "cpu" => Dev::Cpu,
            "cuda" => Dev::Cuda,
            _ => Dev::Emulated,
        }
    }
}

fn plan_of(text: &str) -> Plan {
    allcnnc::driver::Model::from_text("test.net", text)
        .unwrap_or_else(|err| panic!("test model does not compile:\n{err}"))
        .plan
}

/// The executor of `plan` on `dev`, or `None` (with a message) when the
/// device is absent here.
fn executor(dev: Dev, plan: &Plan, seed: u64) -> Option<Box<dyn Executor>> {
    executor_with(dev, plan, seed, Precision::Fp32)
}

/// [`executor`] with the convolution GEMMs in `precision` (the CPU is
/// fp32 whatever it is asked).
fn executor_with(
    dev: Dev,
    plan: &Plan,
    seed: u64,
    precision: Precision,
) -> Option<Box<dyn Executor>> {
    match dev {
        Dev::Cpu => Some(Box::new(CpuExecutor::new(plan.clone(), seed).expect("cpu"))),
        Dev::Cuda => {
            if !driver_present() {
                skip::skip("no CUDA driver (a GPU test)");
                return None;
            }
            let program = back::cuda::generate_with(plan, precision);
            Some(Box::new(
                CudaExecutor::new(plan.clone(), program, seed).expect("cuda executor"),
            ))
        }
        Dev::Emulated => {
            assert!(
                emulator::compiler_present(),
                "the emulator needs a C++20 compiler: apt-get install g++ (scripts/test.sh does), or name one in CXX"
            );
            let program = back::cuda::generate_with(plan, precision);
            Some(Box::new(
                PlanExecutor::emulated(plan.clone(), program, seed).expect("emulated executor"),
            ))
        }
    }
}

fn random_values(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..len).map(|_| rng.next_normal() as f32).collect()
}

/// `|got - want| <= tol * max(1e-6, max |want|)` elementwise.
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_close_above(what, got, want, tol, 1e-6);
}

/// `|got - want| <= tol * max(min_scale, max |want|)` elementwise: for a
/// tensor that is zero but for rounding (a gradient whose terms cancel),
/// `min_scale` is the size of those terms.
fn assert_close_above(what: &str, got: &[f32], want: &[f32], tol: f32, min_scale: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let scale = want.iter().fold(1e-30f32, |m, v| m.max(v.abs()));
    let bound = tol * scale.max(min_scale);
    let differences = || got.iter().zip(want).map(|(g, w)| (g - w).abs());
    let Some(first) = differences().position(|e| e.is_nan() || e > bound) else {
        return;
    };
    let (index, error) =
        differences().enumerate().fold(
            (0, 0.0f32),
            |best, (i, e)| if e > best.1 { (i, e) } else { best },
        );
    panic!(
        "{what}: first wrong index {first} of {} (got {}, want {}); largest difference {error} at {index} (got {}, want {}), scale {scale}, tolerance {tol}",
        got.len(),
        got[first],
        want[first],
        got[index],
        want[index]
    );
}

/// Small models that exercise every kernel kind: strides, paddings, valid
/// convs, 1x1 convs, every activation, no bias, max and average pools with Caffe's rounding,
/// dropout before a conv and before a pool, gap before softmax and a plain
/// softmax.
const MODELS: &[&str] = &[
    "network mixed_a {
        input 3x11x9
        classes 5
        dropout 0.2
        conv 8 3x3
        conv 12 3x3 stride=2 act=leaky(0.1)
        maxpool 3x3 stride=2
        dropout 0.5
        conv 7 2x2 pad=valid bias=false
        conv 5 1x1
        gap
        softmax
    }",
    "network mixed_b {
        input 2x13x13
        classes 4
        conv 6 5x5 stride=2 act=leaky(0.2)
        dropout 0.3
        avgpool 3x3 stride=2
        conv 9 2x2 pad=valid act=none
        conv 4 2x2 pad=valid
        softmax
    }",
];

/// SGD with momentum 0.9 (no Nesterov).
fn momentum_step(lr: f32, weight_decay: f32) -> SgdStep {
    SgdStep {
        lr,
        momentum: 0.9,
        nesterov: false,
        weight_decay,
    }
}

fn batch_of(plan: &Plan, n: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let images = random_values(n * plan.input.len(), seed);
    let labels = (0..n)
        .map(|i| ((i * 7 + 3) % plan.classes) as u32)
        .collect();
    (images, labels)
}

/// Forward, loss, gradients and inference of every model against the CPU.
fn kernels_match_cpu(dev: Dev) {
    for (model_idx, text) in MODELS.iter().enumerate() {
        if !matches_cpu(dev, &plan_of(text), 100 + model_idx as u64) {
            return;
        }
    }
}
test_device!(kernels_match_cpu);

/// Weight gradients longer than any fixed launch of the generator: a 96 ->
/// 192 3x3 convolution has 165,888 weights, more than the 264 x 256 = 67,584
/// threads the split-K reduction was once launched with (every entry past
/// index 67,583 stayed zero).
fn wide_gradients_match_cpu(dev: Dev) {
    let plan = plan_of(
        "network wide {
            input 96x6x6
            classes 10
            conv 192 3x3
            conv 10 1x1
            gap
            softmax
        }",
    );
    assert!(plan.params().iter().any(|p| p.len() > 67_584));
    matches_cpu(dev, &plan, 31);
}
test_device!(wide_gradients_match_cpu);

/// A random network: `layers` between an input of `c x h x w` and a 1x1
/// class conv, global average pooling and softmax.
fn network_text(
    name: &str,
    (c, h, w): (usize, usize, usize),
    classes: usize,
    layers: &[String],
) -> String {
    let mut text = format!("network {name} {{\n    input {c}x{h}x{w}\n    classes {classes}\n");
    for layer in layers {
        text.push_str(&format!("    {layer}\n"));
    }
    text.push_str(&format!(
        "    conv {classes} 1x1 act=none\n    gap\n    softmax\n}}\n"
    ));
    text
}

/// A fixed-seed proptest run: the same cases on every run (`PROPTEST_CASES`
/// overrides `cases`).
fn shape_config(cases: u32, max_shrink_iters: u32, seed: u64) -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, RngAlgorithm, RngSeed};
    Config {
        cases: common::cases(cases),
        failure_persistence: None,
        max_shrink_iters,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    }
}

/// Random networks whose every weight tensor is longer than the longest
/// fixed launch of the generator (the reduction's 264 x 256 = 67,584
/// threads): 64 to 96 input channels, one or two 3x3 convs of 120 to 200
/// channels (any stride, padding, activation), a 1x1 class conv to 600 to
/// 800 classes; checked as [`matches_cpu`] does (`PROPTEST_CASES`, default
/// 3: each case builds its own emulated module).
fn wide_random_shapes_match_cpu(dev: Dev) {
    use proptest::prelude::*;
    use proptest::test_runner::TestRunner;
    let conv = (120usize..200, 1usize..3, prop::bool::ANY, prop::bool::ANY).prop_map(
        |(width, stride, same, leaky)| {
            format!(
                "conv {width} 3x3 stride={stride} pad={} act={}",
                if same { "same" } else { "1" },
                if leaky { "leaky(0.1)" } else { "relu" }
            )
        },
    );
    let model = (
        64usize..96,
        3usize..7,
        600usize..800,
        prop::collection::vec(conv, 1..3),
    )
        .prop_map(|(c, hw, classes, convs)| network_text("wide", (c, hw, hw), classes, &convs));
    let config = shape_config(3, 20, 2);
    let result = TestRunner::new(config).run(&model, |text| {
        let plan = plan_of(&text);
        for spec in plan.params().iter().filter(|p| p.dims.len() == 4) {
            assert!(spec.len() > 67_584, "{}: {} weights", spec.name, spec.len());
        }
        matches_cpu(dev, &plan, 13);
        Ok(())
    });
    if let Err(err) = result {
        panic!("{err}");
    }
}
test_device!(wide_random_shapes_match_cpu);

/// One model on `dev` against the CPU, from the same weights: a training
/// step's loss and every parameter gradient, then inference, for two batch
/// sizes. Returns false (having said why) when `dev` is absent here.
fn matches_cpu(dev: Dev, plan: &Plan, data_seed: u64) -> bool {
    let Some(mut exec) = executor(dev, plan, 11) else {
        return false;
    };
    let mut reference = CpuExecutor::new(plan.clone(), 11).expect("cpu");
    for (n, seed) in [(3usize, 5u64), (5, 6)] {
        let (images, labels) = batch_of(plan, n, data_seed + seed);
        step_both(
            exec.as_mut(),
            &mut reference,
            &images,
            &labels,
            seed,
            1e-4,
            &plan.name,
        );
        // A gradient 1000 times smaller than the largest one is compared
        // at the largest one's 1/1000 (its terms are that large), and none
        // below 1e-4 (terms of a loss of order 1 over a few images).
        let wants = reference.read_grads().unwrap();
        let largest = wants.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
        for ((spec, g), w) in plan
            .params()
            .iter()
            .zip(exec.read_grads().unwrap())
            .zip(wants)
        {
            assert_close_above(
                &format!("{} n={n}: gradient of {}", plan.name, spec.name),
                &g,
                &w,
                2e-3,
                (1e-3 * largest).max(1e-4),
            );
        }
        let got = exec.infer(&images, n).expect("infer");
        let want = reference.infer(&images, n).expect("cpu infer");
        assert_close(&format!("{}: probabilities", plan.name), &got, &want, 1e-4);
    }
    true
}

/// One training step (forward, loss, backward) of `exec` and of the CPU
/// `reference` on the same batch and dropout seed; their losses agree to
/// `tol`, relative.
fn step_both(
    exec: &mut dyn Executor,
    reference: &mut CpuExecutor,
    images: &[f32],
    labels: &[u32],
    seed: u64,
    tol: f64,
    what: &str,
) {
    let batch = Batch {
        images,
        labels,
        n: labels.len(),
    };
    let got = exec.forward_backward_stats(&batch, seed).expect("step");
    let want = reference
        .forward_backward_stats(&batch, seed)
        .expect("cpu step");
    let rel = (got.loss_sum - want.loss_sum).abs() / want.loss_sum.abs().max(1e-6);
    assert!(
        rel < tol,
        "{what}: loss {} vs cpu {}",
        got.loss_sum,
        want.loss_sum
    );
}

/// Random small networks (proptest; `PROPTEST_CASES`, default 24, models
/// that pass the checker): 1 to 4 random layers (convs with every kernel,
/// stride, padding and activation spelling, max and average pools with
/// either rounding, dropout, global average pooling) between a random input
/// and a 1x1 class conv, global average pooling and softmax; each checked as
/// [`matches_cpu`] does. A failure shrinks to a smallest failing network.
/// The cases are the same on every run (`ALLCNNC_SHAPE_SEED`, default 1,
/// picks another set).
fn random_shapes_match_cpu(dev: Dev) {
    use proptest::prelude::*;
    use proptest::test_runner::{TestCaseError, TestRunner};
    let model = (
        (1usize..4, 3usize..13, 3usize..13),
        2usize..6,
        prop::collection::vec(common::layer(13, 4), 1..5),
    )
        .prop_map(|((c, h, w), classes, layers)| {
            network_text("random", (c, h, w), classes, &layers)
        });
    let seed = std::env::var("ALLCNNC_SHAPE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let config = shape_config(24, 200, seed);
    let checked = std::cell::Cell::new(0u32);
    let result = TestRunner::new(config).run(&model, |text| {
        let source = Source::new("random.net", text.as_str());
        let Ok(model) = allcnnc::driver::Model::from_source(source) else {
            return Err(TestCaseError::reject("does not fit its input"));
        };
        let plan = model.plan;
        if matches_cpu(dev, &plan, 7) {
            checked.set(checked.get() + 1);
            // Tensor cores too, TF32 and BF16 by turns.
            let precision = [Precision::Tf32, Precision::Bf16][checked.get() as usize % 2];
            if dev != Dev::Cpu {
                // Small random models: a rounding flip weighs more, and a
                // layer's terms may cancel to far less than their size, its
                // relative error then carrying on downstream (see
                // Tolerances). These bounds catch a layout or indexing error
                // (errors of order 1); tensor_cores_match_cpu holds a fixed
                // model to the rounding.
                let tols = Tolerances {
                    output: 0.25,
                    output_floor: 0.1,
                    gradient_rms: 0.25,
                };
                matches_cpu_in(dev, &plan, precision, tols, 7);
            }
        }
        Ok(())
    });
    if let Err(err) = result {
        panic!("{err}");
    }
    println!("{} random networks checked", checked.get());
}
test_device!(random_shapes_match_cpu);

/// Every layer's inference output and the three visualisation rules.
fn visualisation_matches_cpu(dev: Dev) {
    for text in MODELS {
        let plan = plan_of(text);
        let Some(mut exec) = executor(dev, &plan, 3) else {
            return;
        };
        let mut reference = CpuExecutor::new(plan.clone(), 3).expect("cpu");
        let n = 2;
        let (images, _) = batch_of(&plan, n, 77);
        for layer_idx in 0..plan.layers.len() {
            let got = exec.forward_to(&images, n, layer_idx).expect("forward_to");
            let want = reference.forward_to(&images, n, layer_idx).expect("cpu");
            let name = &plan.layers[layer_idx].name;
            assert_close(
                &format!("{}: output of {name}", plan.name),
                &got,
                &want,
                1e-4,
            );
            let signal = random_values(want.len(), layer_idx as u64 + 1);
            for rule in [ReluRule::Backprop, ReluRule::Deconvnet, ReluRule::Guided] {
                let got = exec
                    .backward_to_input(layer_idx, &signal, rule)
                    .expect("backward_to_input");
                let want = reference
                    .backward_to_input(layer_idx, &signal, rule)
                    .expect("cpu");
                assert_close(
                    &format!("{}: {rule:?} from {name}", plan.name),
                    &got,
                    &want,
                    2e-3,
                );
            }
        }
    }
}
test_device!(visualisation_matches_cpu);

/// Tensor-core convolutions (`--precision tf32` and `bf16`: inputs rounded,
/// fp32 accumulation) against the fp32 CPU: every layer's output of a model
/// whose convolutions span several warps' tiles in both GEMM dimensions (70
/// output channels, 180-deep K, partial tiles everywhere), the class
/// probabilities, a training step's loss and every parameter gradient
/// (gradient of the input and of the weights, with dropout and a leaky
/// ReLU), within the inputs' rounding (TF32 keeps 10 mantissa bits, BF16 7).
/// Its channel counts are mostly not multiples of 4, so most gathers take
/// one value at a time and the K loops run unstaged; `tensor_cores_staged`
/// runs the other side.
fn tensor_cores_match_cpu(dev: Dev) {
    tensor_cores_match_cpu_on(
        dev,
        "network tensor {
            input 3x9x9
            classes 10
            conv 20 3x3
            dropout 0.3
            conv 70 3x3 stride=2 act=leaky(0.1)
            conv 33 1x1 bias=false
            conv 10 1x1
            gap
            softmax
        }",
    );
}
test_device!(tensor_cores_match_cpu: cuda, emulated);

/// As `tensor_cores_match_cpu`, with every channel count a multiple of 4:
/// every gather loads four values at a time and every tensor-core K loop
/// stages the next step's operands in registers (`pipelined_k_steps`), over
/// many K steps (216 deep in conv2's forward pass, 900 pixels in conv1's
/// weight gradient: a partial last step), partial tiles and two slots per
/// thread of both operands (conv2's 96 channels take 96-wide tiles).
/// Linear but for the softmax, so that the rounding of the operands is the
/// only difference (observed: TF32 at most 0.07% of each gradient's rms,
/// BF16 0.5%): with a ReLU, entries near zero flip and cost up to 8% on a
/// model like this one in either precision. Emulated, dropping either barrier of the loop fails
/// it (the emulator's warps run on past their warp-wide instructions).
fn tensor_cores_staged(dev: Dev) {
    tensor_cores_match_cpu_on(
        dev,
        "network staged {
            input 4x15x15
            classes 8
            conv 24 3x3 act=none
            dropout 0.3
            conv 96 3x3 stride=2 act=none
            conv 20 1x1 bias=false act=none
            conv 8 1x1 act=none
            gap
            softmax
        }",
    );
}
test_device!(tensor_cores_staged: cuda, emulated);

fn tensor_cores_match_cpu_on(dev: Dev, source: &str) {
    let plan = plan_of(source);
    for (precision, tol) in TENSOR_CORE_TOLERANCES {
        // Hundreds of entries per gradient: flips average out to well
        // under 5 * tol (observed 0.05-0.7% in TF32, 0.2-3% in BF16).
        let tols = Tolerances {
            output: tol,
            output_floor: 0.0,
            gradient_rms: 5.0 * f64::from(tol),
        };
        let Some(outputs) = matches_cpu_in(dev, &plan, precision, tols, 77) else {
            return;
        };
        // Tensor-core results differ from fp32 by more than fp32 round-off.
        let (got, want) = &outputs[2];
        assert!(
            got.iter().zip(want).any(|(g, w)| g != w),
            "{}: bit-identical to fp32, the tensor-core path did not run",
            precision.name()
        );
    }
}

/// Maximum error of a layer output, relative to its largest magnitude, with
/// convolution inputs rounded to TF32 (10 mantissa bits) and BF16 (7).
const TENSOR_CORE_TOLERANCES: [(Precision, f32); 2] =
    [(Precision::Tf32, 4e-3), (Precision::Bf16, 3e-2)];

/// Bounds of a tensor-core comparison with the fp32 CPU.
///
/// Gradients are not continuous in the forward values: a pre-activation
/// near zero that rounding moves across the ReLU's kink, or a max-pool tie
/// that it breaks the other way, changes whole terms. In a model of a few
/// hundred gradient entries one such flip moves the rms error by percents
/// (seen: 0.04% for most batches of a small random model in TF32, 2.7% and
/// 8% for two of eight); an indexing or layout error moves it by ~100%.
/// Likewise a layer whose terms cancel (seen: a 1-channel ReLU conv with
/// outputs of 0.004 from inputs of order 1) has rounding errors of the
/// size of its terms, not of its output (4% of it in BF16), and the layers
/// after it inherit that relative error.
#[derive(Debug, Clone, Copy)]
struct Tolerances {
    /// Max error of a layer output (and of the loss), relative to the
    /// larger of its largest magnitude and `output_floor` times its input's.
    output: f32,
    output_floor: f32,
    /// Rms error of each parameter gradient, relative to its rms.
    gradient_rms: f64,
}

/// `plan` on `dev` with its convolutions in `precision` against the fp32
/// CPU, from the same weights, on 4 images: every layer's output, a
/// training step's loss and every parameter gradient, within `tols`.
/// Returns each layer's (device, CPU) outputs, or `None` (having said why)
/// when `dev` is absent here.
fn matches_cpu_in(
    dev: Dev,
    plan: &Plan,
    precision: Precision,
    tols: Tolerances,
    data_seed: u64,
) -> Option<Vec<(Vec<f32>, Vec<f32>)>> {
    let n = 4;
    let (images, labels) = batch_of(plan, n, data_seed);
    let mut exec = executor_with(dev, plan, 9, precision)?;
    let mut reference = CpuExecutor::new(plan.clone(), 9).expect("cpu");
    let mut outputs = Vec::new();
    let largest = |v: &[f32]| v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let mut input_scale = largest(&images);
    for (layer_idx, layer) in plan.layers.iter().enumerate() {
        let got = exec.forward_to(&images, n, layer_idx).expect("forward_to");
        let want = reference.forward_to(&images, n, layer_idx).expect("cpu");
        assert_close_above(
            &format!(
                "{} {}: output of {}",
                plan.name,
                precision.name(),
                layer.name
            ),
            &got,
            &want,
            tols.output,
            (tols.output_floor * input_scale).max(1e-6),
        );
        input_scale = largest(&want);
        outputs.push((got, want));
    }
    let what = format!("{} {}", plan.name, precision.name());
    step_both(
        exec.as_mut(),
        &mut reference,
        &images,
        &labels,
        3,
        f64::from(tols.output),
        &what,
    );
    // Weight gradients sum many terms of both signs, and a pre-activation
    // near zero may take the other side of the ReLU after rounding, so
    // single entries can be off by more than the rounding; the error over
    // the tensor cannot (an indexing or layout error makes it of order 1).
    // As in matches_cpu, a gradient far smaller than the largest (or zero)
    // is held to the size of its terms.
    let rms = |v: &mut dyn Iterator<Item = f32>| {
        let (sum, count) = v.fold((0.0f64, 0usize), |(s, c), x| (s + f64::from(x * x), c + 1));
        (sum / count.max(1) as f64).sqrt()
    };
    let wants = reference.read_grads().unwrap();
    let largest_rms = wants
        .iter()
        .map(|w| rms(&mut w.iter().copied()))
        .fold(0.0, f64::max);
    for ((spec, g), w) in plan
        .params()
        .iter()
        .zip(exec.read_grads().unwrap())
        .zip(wants)
    {
        let error = rms(&mut g.iter().zip(&w).map(|(a, b)| a - b));
        let size = rms(&mut w.iter().copied());
        assert!(
            error <= tols.gradient_rms * size.max(1e-3 * largest_rms).max(1e-6),
            "{what}: gradient of {}: rms error {error} vs rms {size}",
            spec.name
        );
    }
    Some(outputs)
}

/// Statistics pile up on the device across steps (nothing is read back per
/// step): one `take_stats` after three steps, the first of them with a
/// larger batch than the others, equals the sum of the CPU's per-step
/// statistics, and the next `take_stats` is empty.
fn statistics_accumulate_across_steps(dev: Dev) {
    let plan = plan_of(MODELS[0]);
    let Some(mut exec) = executor(dev, &plan, 5) else {
        return;
    };
    let mut reference = CpuExecutor::new(plan.clone(), 5).expect("cpu");
    let (mut loss, mut correct) = (0.0f64, 0usize);
    // The batch grows at the second step, so the device's per-image buffers
    // are reallocated with sums pending.
    for (step, n) in [(0u64, 3usize), (1, 6), (2, 4)] {
        let (images, labels) = batch_of(&plan, n, 300 + step);
        let batch = Batch {
            images: &images,
            labels: &labels,
            n,
        };
        exec.forward_backward(&batch, step).expect("step");
        let want = reference.forward_backward_stats(&batch, step).expect("cpu");
        loss += want.loss_sum;
        correct += want.correct;
    }
    let got = exec.take_stats().expect("stats");
    assert!(
        (got.loss_sum - loss).abs() <= 1e-4 * loss.abs(),
        "loss sum {} vs cpu {loss}",
        got.loss_sum
    );
    assert_eq!(got.correct, correct);
    assert_eq!(exec.take_stats().expect("stats"), StepStats::default());
}
test_device!(statistics_accumulate_across_steps);

/// A short training run: the loss of every step tracks the CPU run of the
/// same seed (same initial weights, same dropout masks), and the parameters
/// after it agree.
fn training_tracks_cpu(dev: Dev) {
    let plan = plan_of(MODELS[0]);
    let Some(mut exec) = executor(dev, &plan, 21) else {
        return;
    };
    let mut reference = CpuExecutor::new(plan.clone(), 21).expect("cpu");
    let step = momentum_step(0.05, 1e-3);
    let n = 8;
    for iteration in 0..6u64 {
        let (images, labels) = batch_of(&plan, n, 1000 + iteration % 2);
        let what = format!("step {iteration}");
        step_both(
            exec.as_mut(),
            &mut reference,
            &images,
            &labels,
            iteration,
            1e-3,
            &what,
        );
        exec.sgd_update(&step).expect("update");
        reference.sgd_update(&step).expect("cpu update");
    }
    for ((spec, g), w) in plan
        .params()
        .iter()
        .zip(exec.read_params().unwrap())
        .zip(reference.read_params().unwrap())
    {
        assert_close(&format!("parameter {}", spec.name), &g, &w, 1e-3);
    }
}
test_device!(training_tracks_cpu);

/// Parameters and momentum written to a device read back unchanged.
fn params_round_trip(dev: Dev) {
    let plan = plan_of(MODELS[1]);
    let Some(mut exec) = executor(dev, &plan, 1) else {
        return;
    };
    let values: Vec<Vec<f32>> = plan
        .params()
        .iter()
        .enumerate()
        .map(|(i, spec)| random_values(spec.len(), i as u64))
        .collect();
    exec.write_params(&values).unwrap();
    exec.write_momentum(&values).unwrap();
    assert_eq!(exec.read_params().unwrap(), values);
    assert_eq!(exec.read_momentum().unwrap(), values);
    let reference = CpuExecutor::new(plan.clone(), 7).unwrap();
    let fresh = executor(dev, &plan, 7).unwrap();
    assert_eq!(
        fresh.read_params().unwrap(),
        reference.read_params().unwrap(),
        "initial parameters equal the CPU backend's for the same seed"
    );
}
test_device!(params_round_trip);

#[test]
fn cuda_without_a_driver_is_an_error() {
    if driver_present() {
        skip::skip("a CUDA driver is present");
        return;
    }
    let plan = plan_of(MODELS[0]);
    let err = CudaExecutor::new(plan.clone(), back::cuda::generate(&plan), 0).unwrap_err();
    assert!(
        err.to_string().contains("no CUDA driver found"),
        "unexpected error: {err}"
    );
}

/// The emulator rewrites the prelude's dynamic shared-memory declaration;
/// a source without it is refused, not built into kernels that would read
/// through an undefined symbol.
#[test]
fn emulator_refuses_a_source_without_the_dynamic_shared_declaration() {
    let plan = plan_of(MODELS[0]);
    let mut program = back::cuda::generate(&plan);
    assert!(emulator::translation_unit(&program).is_ok());
    program.source = program
        .source
        .replace("extern __shared__ float head_shared[];", "");
    let err = emulator::translation_unit(&program).unwrap_err();
    assert!(
        err.to_string()
            .contains("extern __shared__ float head_shared[];"),
        "unexpected error: {err}"
    );
}

/// `set_profiling` times every launch of a training step and an update, in
/// schedule order, with the code generator's FLOP and byte counts for the
/// batch; nothing is recorded once it is off. The CPU has no kernels of its
/// own and says so.
fn profiling_times_every_launch(dev: Dev) {
    let plan = plan_of(MODELS[0]);
    let Some(mut exec) = executor(dev, &plan, 3) else {
        return;
    };
    if dev == Dev::Cpu {
        assert!(!exec.set_profiling(true));
        assert!(exec.take_profile().is_empty());
        return;
    }
    let program = back::cuda::generate(&plan).plan;
    let n = 3;
    let (images, labels) = batch_of(&plan, n, 21);
    let batch = Batch {
        images: &images,
        labels: &labels,
        n,
    };
    let step = momentum_step(0.01, 0.0);
    assert!(exec.set_profiling(true));
    exec.forward_backward(&batch, 1).unwrap();
    exec.sgd_update(&step).unwrap();
    let times = exec.take_profile();
    let schedule: Vec<_> = program
        .forward
        .iter()
        .chain(&program.backward)
        .chain(&program.update)
        .collect();
    assert_eq!(times.len(), schedule.len());
    for (time, launch) in times.iter().zip(schedule) {
        let spec = &program.kernels[launch.kernel];
        assert_eq!(time.kernel, spec.name);
        assert_eq!(time.flops, spec.flops.at(n as u64), "{}", spec.name);
        assert_eq!(time.bytes, spec.bytes.at(n as u64), "{}", spec.name);
        assert!(time.seconds > 0.0, "{}", spec.name);
        assert!(!time.role.is_empty(), "{}", spec.name);
    }
    assert!(exec.take_profile().is_empty(), "taking empties the profile");
    exec.set_profiling(false);
    exec.forward_backward(&batch, 2).unwrap();
    assert!(exec.take_profile().is_empty(), "nothing recorded when off");
    exec.take_stats().unwrap();
}
test_device!(profiling_times_every_launch);
