//! Speed of the CPU backend on All-CNN-C (batch 128, 3x32x32): training
//! steps and inference in images per second, and where a training step's
//! time goes, layer by layer (forward, backward, and the weight gradient
//! within the backward pass).
//!
//! Run with `cargo run --release -p allcnnc-runtime --example cpu_speed`
//! (optional arguments: batch size, number of timed steps, `bf16` for bf16
//! operands where the layer takes them).

use std::time::Instant;

use runtime::backend::{Batch, Executor, SgdStep};
use runtime::cpu::conv::{ConvAlgorithm, ConvBackward, ConvForward, ConvGeometry};
use runtime::cpu::{CpuExecutor, Operands};
use runtime::plan::{Activation, Op, Padding, Plan, ReluRule, Shape, Window};
use runtime::rng::SplitMix64;

fn conv_op(out_channels: usize, k: usize, stride: usize, pad: usize) -> Op {
    Op::Conv {
        out_channels,
        window: Window {
            kh: k,
            kw: k,
            stride_h: stride,
            stride_w: stride,
            pad: Padding {
                top: pad,
                left: pad,
                bottom: pad,
                right: pad,
            },
        },
        bias: true,
        act: Activation::Relu,
    }
}

/// All-CNN-C (Springenberg et al., Table 2) without dropout.
fn all_cnn_c() -> Plan {
    let layers = [
        ("conv1", conv_op(96, 3, 1, 1), Shape::new(96, 32, 32)),
        ("conv2", conv_op(96, 3, 1, 1), Shape::new(96, 32, 32)),
        ("conv3", conv_op(96, 3, 2, 1), Shape::new(96, 16, 16)),
        ("conv4", conv_op(192, 3, 1, 1), Shape::new(192, 16, 16)),
        ("conv5", conv_op(192, 3, 1, 1), Shape::new(192, 16, 16)),
        ("conv6", conv_op(192, 3, 2, 1), Shape::new(192, 8, 8)),
        ("conv7", conv_op(192, 3, 1, 0), Shape::new(192, 6, 6)),
        ("conv8", conv_op(192, 1, 1, 0), Shape::new(192, 6, 6)),
        ("conv9", conv_op(10, 1, 1, 0), Shape::new(10, 6, 6)),
        ("gap", Op::GlobalAvgPool, Shape::new(10, 1, 1)),
        ("softmax", Op::Softmax, Shape::new(10, 1, 1)),
    ];
    Plan::chain("all-cnn-c", Shape::new(3, 32, 32), 10, layers)
}

/// CPU seconds the live threads of this process have run, summed from
/// `/proc/self/task/*/schedstat` (nanosecond resolution). With other jobs on
/// the machine, work per CPU second is steadier than work per wall second.
/// Returns 0 where `/proc` is missing.
fn cpu_seconds() -> f64 {
    // The first field of each thread's schedstat is its CPU time in ns.
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    nanos as f64 * 1e-9
}

fn random(seed: u64, len: usize) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..len).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(128, |a| a.parse().expect("batch size"));
    let steps: usize = args.next().map_or(5, |a| a.parse().expect("steps"));
    let operands = match args.next().as_deref() {
        None | Some("fp32") => Operands::F32,
        Some("bf16") => Operands::Bf16,
        Some(other) => panic!("unknown operand format {other}: fp32 or bf16"),
    };
    let plan = all_cnn_c();
    let gflop_per_image = 2.0 * plan.forward_macs() as f64 / 1e9;
    let mut exec = CpuExecutor::with_operands(plan.clone(), 1, operands).expect("valid plan");
    println!("{} on {}, batch {n}", plan.name, exec.device_name());
    let images = random(2, n * plan.input.len());
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
    let batch = Batch {
        images: &images,
        labels: &labels,
        n,
    };
    let step = SgdStep {
        lr: 0.01,
        momentum: 0.9,
        nesterov: false,
        weight_decay: 1e-3,
    };

    // Warm-up allocates the buffers and faults in their pages.
    exec.forward_backward(&batch, 0).unwrap();
    exec.sgd_update(&step).unwrap();
    exec.take_stats().unwrap();
    let (start, cpu_start) = (Instant::now(), cpu_seconds());
    for s in 0..steps {
        exec.forward_backward(&batch, s as u64).unwrap();
        exec.sgd_update(&step).unwrap();
    }
    exec.take_stats().unwrap();
    let per_step = start.elapsed().as_secs_f64() / steps as f64;
    let cpu_per_step = (cpu_seconds() - cpu_start) / steps as f64;
    println!(
        "train: {:.1} img/s ({:.1} ms/step, {:.0} GFLOP/s counting 3x forward; {:.0} GFLOP per CPU second)",
        n as f64 / per_step,
        per_step * 1e3,
        3.0 * gflop_per_image * n as f64 / per_step,
        3.0 * gflop_per_image * n as f64 / cpu_per_step
    );

    exec.infer(&images, n).unwrap();
    let (start, cpu_start) = (Instant::now(), cpu_seconds());
    for _ in 0..steps {
        exec.infer(&images, n).unwrap();
    }
    let per_batch = start.elapsed().as_secs_f64() / steps as f64;
    let cpu_per_batch = (cpu_seconds() - cpu_start) / steps as f64;
    println!(
        "infer: {:.1} img/s ({:.1} ms/batch, {:.0} GFLOP/s; {:.0} GFLOP per CPU second)",
        n as f64 / per_batch,
        per_batch * 1e3,
        gflop_per_image * n as f64 / per_batch,
        gflop_per_image * n as f64 / cpu_per_batch
    );

    // Per-layer breakdown of the convolutions, run through the kernels.
    println!("per layer, CPU ms (GFLOP per CPU second, counting direct-convolution FLOPs):");
    println!("layer   forward            backward           of which weights");
    let mut total = (0.0, 0.0);
    for (idx, layer) in plan.layers.iter().enumerate() {
        let Op::Conv { window, act, .. } = &layer.op else {
            continue;
        };
        let geom = ConvGeometry {
            in_shape: layer.in_shape,
            out_shape: layer.out_shape,
            window: *window,
        };
        let x = random(3, n * layer.in_shape.len());
        let w = random(4, geom.weight_len());
        let b = random(5, layer.out_shape.c);
        let mut y = vec![0.0; n * layer.out_shape.len()];
        let mut dy = random(6, y.len());
        let mut dx = vec![0.0; x.len()];
        let mut dw = vec![0.0; w.len()];
        let mut db = vec![0.0; b.len()];
        let mut workspace = Vec::new();
        let winograd = geom.uses_winograd();
        let flop = 2.0 * (n * layer.out_shape.len() * geom.k()) as f64;
        let reps = 4;
        let mut forward = |y: &mut [f32]| {
            ConvForward {
                geom,
                n,
                input: &x,
                weight: &w,
                bias: Some(&b),
                act: *act,
                output: y,
                algorithm: ConvAlgorithm::Auto,
                operands,
            }
            .run(&mut workspace)
        };
        forward(&mut y);
        let cpu = cpu_seconds();
        for _ in 0..reps {
            forward(&mut y);
        }
        let fwd = (cpu_seconds() - cpu) / reps as f64;
        let mut backward = |dy: &mut [f32], with_input: bool| {
            ConvBackward {
                geom,
                n,
                input: &x,
                weight: &w,
                grad_out: dy,
                act: *act,
                rule: ReluRule::Backprop,
                act_forward: &y,
                grad_input: (idx > 0 && with_input).then_some(&mut dx[..]),
                grad_weight: Some(&mut dw),
                grad_bias: Some(&mut db),
                algorithm: ConvAlgorithm::Auto,
                operands,
            }
            .run(&mut workspace)
        };
        backward(&mut dy, true);
        let cpu = cpu_seconds();
        for _ in 0..reps {
            backward(&mut dy, true);
        }
        let bwd = (cpu_seconds() - cpu) / reps as f64;
        // The weight gradient alone (with the bias's and the activation's
        // share), so the table splits the backward pass in two.
        let cpu = cpu_seconds();
        for _ in 0..reps {
            backward(&mut dy, false);
        }
        let bwd_weights = (cpu_seconds() - cpu) / reps as f64;
        let bwd_flop = if idx > 0 { 2.0 * flop } else { flop };
        total.0 += fwd;
        total.1 += bwd;
        println!(
            "{:6} {:8.1} ({:4.0})   {:8.1} ({:4.0})  {:8.1} ({:4.0})  {}",
            layer.name,
            fwd * 1e3,
            flop / fwd / 1e9,
            bwd * 1e3,
            bwd_flop / bwd / 1e9,
            bwd_weights * 1e3,
            flop / bwd_weights / 1e9,
            if winograd { "winograd" } else { "im2col" }
        );
    }
    println!(
        "convs  {:8.1}                 {:8.1}",
        total.0 * 1e3,
        total.1 * 1e3
    );
}
