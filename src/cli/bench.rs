//! `allcnnc bench`: training and inference throughput on any device, and
//! with `--profile` every kernel of a step timed launch by launch. On the
//! CPU beside the machine's measured peak and the model's limit on it;
//! `--peak` alone measures the peak.

use super::args::{check_batch, executor, DeviceArg};
use super::flags;
use super::precision::PrecisionArg;
use super::{CliResult, Failure};
use crate::back::cuda::Precision;
use clap::Args;
use runtime::backend::{Batch, Executor, KernelTime, SgdStep};
use runtime::cpu::peak::{self, Peak};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct BenchArgs {
    /// The model (optional with --peak)
    #[arg(required_unless_present = "peak")]
    pub file: Option<PathBuf>,
    /// Measure the CPU's f32 FMA and bf16 dot-product peaks on all cores
    /// and list its instruction sets (with a model: also bench it)
    #[arg(long)]
    pub peak: bool,
    #[arg(long, default_value_t = 128, value_parser = flags::count::<usize>)]
    pub batch: usize,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceArg,
    /// Convolutions on the GPU: fp32, or tensor cores with tf32 / bf16 inputs
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: PrecisionArg,
    /// Timed training steps (after 2 warm-up steps)
    #[arg(long, default_value_t = 10, value_parser = flags::count::<usize>)]
    pub steps: usize,
    /// Also time every kernel of one training step and one inference pass
    /// (each launch waits for the device: a GPU backend only)
    #[arg(long)]
    pub profile: bool,
    #[arg(long)]
    pub json: bool,
}

/// Time each peak kernel runs for.
const PEAK_TIME: Duration = Duration::from_millis(400);

/// The CPU's peaks on all its threads.
fn measure_peak() -> Peak {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    peak::measure(threads, PEAK_TIME)
}

fn print_peak(p: &Peak) {
    let yes = |b: bool| if b { "yes" } else { "no" };
    let f = &p.features;
    println!("{}, {} threads", p.cpu, p.threads);
    println!(
        "  instruction sets: AVX2+FMA {}, AVX-512F {}, AVX512-BF16 {}, AMX-BF16 {}",
        yes(f.avx2_fma),
        yes(f.avx512f),
        yes(f.avx512_bf16),
        yes(f.amx_bf16)
    );
    println!("  f32 FMA peak:          {:8.1} GFLOP/s", p.f32_gflops);
    match p.bf16_gflops {
        Some(g) => println!(
            "  bf16 dot-product peak: {g:8.1} GFLOP/s (vdpbf16ps, {:.2}x f32)",
            g / p.f32_gflops
        ),
        None => println!("  bf16 dot products: not supported (no AVX512-BF16)"),
    }
    if f.amx_bf16 {
        println!("  AMX: present; allcnnc has no AMX kernels, so it is not measured");
    }
}

pub fn bench(args: &BenchArgs) -> CliResult {
    let Some(file) = &args.file else {
        let p = measure_peak();
        if args.json {
            println!("{}", serde_json::to_string_pretty(&p).expect("json"));
        } else {
            print_peak(&p);
        }
        return Ok(());
    };
    let plan = super::model(file)?.plan;
    let macs = plan.forward_macs() as f64;
    let mut exec = executor(&plan, 0, args.device, args.precision.into())?;
    let n = args.batch;
    // The batch's buffers and inputs are checked before any is allocated.
    check_batch(exec.as_ref(), n)?;
    runtime::budget::check(
        format_args!("--batch {n} (its input images)"),
        runtime::budget::product(&[n as u128, plan.input.len() as u128, 4]),
    )
    .map_err(|err| err.to_string())?;
    // Deterministic pseudo-random inputs: speed does not depend on values.
    let images: Vec<f32> = (0..n * plan.input.len())
        .map(|i| ((i * 7919) % 255) as f32 / 255.0 - 0.5)
        .collect();
    let labels: Vec<u32> = (0..n).map(|i| (i % plan.classes) as u32).collect();
    let batch = Batch {
        images: &images,
        labels: &labels,
        n,
    };
    let step = SgdStep {
        lr: 1e-4,
        momentum: 0.9,
        nesterov: false,
        weight_decay: 0.0,
    };
    let train_step = |exec: &mut dyn Executor| -> Result<(), Failure> {
        exec.forward_backward(&batch, 1)
            .map_err(|e| e.to_string())?;
        exec.sgd_update(&step).map_err(|e| e.to_string())?;
        Ok(())
    };
    for _ in 0..2 {
        train_step(exec.as_mut())?;
    }
    // Reading the statistics waits for the device, so the timer brackets
    // finished work only.
    exec.take_stats().map_err(|e| e.to_string())?;
    let steps = args.steps;
    let started = Instant::now();
    for _ in 0..steps {
        train_step(exec.as_mut())?;
    }
    exec.take_stats().map_err(|e| e.to_string())?;
    let train_s = started.elapsed().as_secs_f64() / steps as f64;
    exec.infer(&images, n).map_err(|e| e.to_string())?;
    let started = Instant::now();
    for _ in 0..steps {
        exec.infer(&images, n).map_err(|e| e.to_string())?;
    }
    let infer_s = started.elapsed().as_secs_f64() / steps as f64;
    let kernels = if args.profile {
        profile_kernels(exec.as_mut(), &|exec| {
            train_step(exec)?;
            exec.infer(&images, n).map_err(|e| e.to_string())?;
            Ok(())
        })?
    } else {
        None
    };
    let train_ips = n as f64 / train_s;
    let infer_ips = n as f64 / infer_s;
    // Training: forward + backward data + backward weights = 3x the forward MACs.
    let train_gflops = 3.0 * 2.0 * macs * train_ips / 1e9;
    let infer_gflops = 2.0 * macs * infer_ips / 1e9;
    let device = exec.device_name();
    // On the CPU: the machine's peak for the precision, and the model's
    // limit on it (Winograd layers need a quarter of the multiplications).
    let limit = device.starts_with("cpu").then(|| {
        let p = measure_peak();
        let bf16 = Precision::from(args.precision) == Precision::Bf16;
        let peak_gflops = if bf16 {
            p.bf16_gflops
        } else {
            Some(p.f32_gflops)
        }
        .unwrap_or(0.0);
        let share = peak::winograd_share(&plan);
        let limit = peak::effective_limit(p.f32_gflops, peak_gflops, share);
        serde_json::json!({
            "peak": p, "peak_gflops": peak_gflops, "winograd_share": share,
            "limit_gflops": limit,
            "train_fraction_of_limit": train_gflops / limit,
            "infer_fraction_of_limit": infer_gflops / limit,
        })
    });
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": plan.name, "device": device, "precision": Precision::from(args.precision).name(), "batch": n, "steps": steps,
                "train_images_per_s": train_ips, "infer_images_per_s": infer_ips,
                "train_gflops": train_gflops, "infer_gflops": infer_gflops,
                "forward_macs_per_image": macs, "kernels": kernels, "cpu_limit": limit,
            })
        );
    } else {
        println!("{} on {device}, batch {n}, {steps} steps:", plan.name);
        println!("  training:  {train_ips:8.1} images/s  {train_gflops:7.1} GFLOP/s");
        println!("  inference: {infer_ips:8.1} images/s  {infer_gflops:7.1} GFLOP/s");
        if let Some(l) = &limit {
            let number = |key: &str| l[key].as_f64().unwrap_or(0.0);
            println!(
                "  limit:     {:.1} GFLOP/s peak ({} on {} threads); Winograd (f32) on {:.0}% of the MACs -> {:.0} effective GFLOP/s; training at {:.0}%, inference at {:.0}% of it",
                number("peak_gflops"),
                if Precision::from(args.precision) == Precision::Bf16 { "bf16 dot products" } else { "f32 FMA" },
                l["peak"]["threads"],
                100.0 * number("winograd_share"),
                number("limit_gflops"),
                100.0 * number("train_fraction_of_limit"),
                100.0 * number("infer_fraction_of_limit"),
            );
        }
        match &kernels {
            Some(kernels) => print_profile(kernels),
            None if args.profile => {
                println!("  (no per-kernel profile: {device} runs no kernels of its own)")
            }
            None => {}
        }
    }
    Ok(())
}

/// One kernel's launches in a profile: their times, FLOPs and bytes summed.
#[derive(Debug, Clone, serde::Serialize)]
struct KernelSummary {
    #[serde(flatten)]
    total: KernelTime,
    launches: usize,
}

/// Runs `work` with every launch timed; the launches summed per kernel,
/// slowest first, or None where the backend has no kernels to time.
fn profile_kernels(
    exec: &mut dyn Executor,
    work: &dyn Fn(&mut dyn Executor) -> Result<(), Failure>,
) -> Result<Option<Vec<KernelSummary>>, Failure> {
    if !exec.set_profiling(true) {
        return Ok(None);
    }
    let result = work(exec);
    let times = exec.take_profile();
    exec.set_profiling(false);
    result?;
    let mut summaries: Vec<KernelSummary> = Vec::new();
    for t in times {
        match summaries.iter_mut().find(|s| s.total.kernel == t.kernel) {
            Some(s) => {
                s.launches += 1;
                s.total.seconds += t.seconds;
                s.total.flops += t.flops;
                s.total.bytes += t.bytes;
            }
            None => summaries.push(KernelSummary {
                total: t,
                launches: 1,
            }),
        }
    }
    summaries.sort_by(|a, b| b.total.seconds.total_cmp(&a.total.seconds));
    Ok(Some(summaries))
}

fn print_profile(kernels: &[KernelSummary]) {
    let total: f64 = kernels.iter().map(|k| k.total.seconds).sum();
    println!("  per kernel, one training step + one inference pass (launches timed one by one):");
    println!(
        "  {:<34} {:>8} {:>9} {:>6} {:>9} {:>8}",
        "kernel", "launches", "ms", "%", "GFLOP/s", "GB/s"
    );
    for KernelSummary { total: k, launches } in kernels {
        let s = k.seconds.max(1e-12);
        println!(
            "  {:<34} {:>8} {:>9.3} {:>6.1} {:>9.1} {:>8.1}",
            k.kernel,
            launches,
            1e3 * k.seconds,
            100.0 * k.seconds / total.max(1e-12),
            k.flops as f64 / s / 1e9,
            k.bytes as f64 / s / 1e9
        );
    }
}
