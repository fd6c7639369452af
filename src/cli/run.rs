//! The runtime subcommands: `train`, `eval`, `predict`, `bench`.
//!
//! They compile the `.net` file to a runtime plan, pick a device, load data
//! and checkpoints through the runtime crate, and report with progress bars,
//! text or JSON. Every failure is an error message and exit status 1.

use super::precision::PrecisionArg;
use super::{load, CliResult, Failure};
use crate::back;
use crate::back::cuda::Precision;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use runtime::backend::{Batch, Executor, KernelTime, SgdStep};
use runtime::cpu::CpuExecutor;
use runtime::data::{self, Dataset, Preprocess, PreprocessKind, Split};
use runtime::plan::Plan;
use runtime::train::checkpoint::{Checkpoint, Progress};
use runtime::train::{init, EpochMetrics, Init, Observer, Recipe, RunDir, Trainer};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Device {
    Cpu,
    Cuda,
    /// CUDA when a driver is present, else the CPU
    Auto,
    /// The generated CUDA kernels on host threads (slow; checks the GPU
    /// code path without a GPU, same weights and dropout masks as `cpu`)
    Emulator,
}

#[derive(Args)]
pub struct TrainArgs {
    /// The model
    pub file: PathBuf,
    /// Data set folder (IDX, CIFAR-10/100 binary, or image folder with train/ and test/)
    #[arg(long)]
    pub data: PathBuf,
    /// Run folder: metrics.jsonl, checkpoint.safetensors, best.safetensors, curves.png
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub epochs: Option<u32>,
    #[arg(long)]
    pub batch: Option<u32>,
    #[arg(long)]
    pub lr: Option<f64>,
    /// Use only the first N training images
    #[arg(long)]
    pub limit: Option<usize>,
    /// Use only the first N test images
    #[arg(long)]
    pub test_limit: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: Device,
    /// Convolutions on the GPU: fp32, or tensor cores with tf32 / bf16 inputs
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: PrecisionArg,
    /// Continue the run in --out from its checkpoint
    #[arg(long)]
    pub resume: bool,
    /// Initialisation of a fresh run (overrides the file's `init`)
    #[arg(long, value_enum)]
    pub init: Option<InitArg>,
}

/// `--init`: He-normal, or He-normal then LSUV calibration on training images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InitArg {
    He,
    Lsuv,
}

/// Picks the executor for `device`: `cuda` generates the fused CUDA program
/// of the plan and loads it (an error without a driver), `auto` takes CUDA
/// when a driver is present and falls back to the CPU otherwise, saying so;
/// `emulator` builds the same program for host threads.
pub fn executor(
    plan: Plan,
    seed: u64,
    device: Device,
    precision: Precision,
) -> Result<Box<dyn Executor>, Failure> {
    let cuda = |plan: Plan| -> Result<Box<dyn Executor>, String> {
        let program = back::cuda::generate_with(&plan, precision);
        let exec = runtime::cuda::CudaExecutor::new(plan, program, seed)
            .map_err(|err| format!("cannot create the CUDA backend: {err}"))?;
        Ok(Box::new(exec))
    };
    match device {
        Device::Cuda => {
            if !runtime::cuda::driver_present() {
                return Err("--device cuda: no CUDA driver found (libcuda.so could not be loaded); use --device cpu".to_string().into());
            }
            Ok(cuda(plan)?)
        }
        Device::Auto if runtime::cuda::driver_present() => match cuda(plan.clone()) {
            Ok(exec) => Ok(exec),
            Err(err) => {
                eprintln!("device: auto -> cpu ({err})");
                cpu_executor(plan, seed)
            }
        },
        Device::Emulator => {
            if !runtime::cuda::emulator::compiler_present() {
                return Err("--device emulator: no C++20 compiler found to build the generated kernels for the host (install g++, or name one in $CXX)".to_string().into());
            }
            let program = back::cuda::generate_with(&plan, precision);
            let exec = runtime::cuda::PlanExecutor::emulated(plan, program, seed)
                .map_err(|err| format!("cannot create the emulator: {err}"))?;
            Ok(Box::new(exec))
        }
        Device::Auto | Device::Cpu => {
            if device == Device::Auto {
                eprintln!("device: auto -> cpu (no CUDA driver found)");
            }
            cpu_executor(plan, seed)
        }
    }
}

fn cpu_executor(plan: Plan, seed: u64) -> Result<Box<dyn Executor>, Failure> {
    let exec = CpuExecutor::new(plan, seed)
        .map_err(|err| format!("cannot create the CPU backend: {err}"))?;
    Ok(Box::new(exec))
}

fn load_split(path: &Path, split: Split, limit: Option<usize>) -> Result<Dataset, Failure> {
    data::load_limited(path, split, limit).map_err(|err| Failure::Message(err.to_string()))
}

/// Checks that a data set fits the model, naming both sides when not.
fn check_fit(plan: &Plan, dataset: &Dataset, path: &Path) -> Result<(), Failure> {
    if dataset.shape != plan.input {
        return Err(format!(
            "data set {} has images of {} (CxHxW) but model `{}` expects {}",
            path.display(),
            dataset.shape,
            plan.name,
            plan.input
        )
        .into());
    }
    if dataset.classes > plan.classes {
        return Err(format!(
            "data set {} has {} classes but model `{}` has {}",
            path.display(),
            dataset.classes,
            plan.name,
            plan.classes
        )
        .into());
    }
    Ok(())
}

/// LSUV on evenly spaced training images (see `runtime::train::init`).
fn calibrate(exec: &mut dyn Executor, data: &Dataset) -> Result<(), Failure> {
    let n = data.len().min(init::CALIBRATION_IMAGES);
    let len = data.shape.len();
    let images: Vec<f32> = (0..n)
        .flat_map(|i| {
            let index = i * data.len() / n;
            data.images[index * len..(index + 1) * len].iter().copied()
        })
        .collect();
    let started = Instant::now();
    let report = init::lsuv(exec, &images, n).map_err(|e| e.to_string())?;
    let factors: Vec<String> = report
        .iter()
        .map(|s| format!("{} x{:.3}", s.layer, s.factor))
        .collect();
    eprintln!(
        "init: LSUV on {n} training images in {:.1}s: {}",
        started.elapsed().as_secs_f64(),
        factors.join(", ")
    );
    Ok(())
}

/// The file's recipe with the command line's overrides.
fn recipe(file: Option<&Recipe>, args: &TrainArgs) -> Recipe {
    let mut recipe = file.cloned().unwrap_or_default();
    recipe.epochs = args.epochs.unwrap_or(recipe.epochs);
    recipe.batch = args.batch.unwrap_or(recipe.batch);
    recipe.lr = args.lr.unwrap_or(recipe.lr);
    recipe.init = match args.init {
        Some(InitArg::He) => Init::He,
        Some(InitArg::Lsuv) => Init::Lsuv,
        None => recipe.init,
    };
    recipe
}

/// Progress bars on stderr.
struct Bars {
    bar: Option<ProgressBar>,
}

impl Observer for Bars {
    fn epoch_start(&mut self, epoch: u32, epochs: u32, batches: usize, done: usize) {
        let bar = ProgressBar::new(batches as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{bar:30.cyan/blue}] {pos}/{len} {msg} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
        bar.set_position(done as u64);
        self.bar = Some(bar);
    }

    fn batch_done(&mut self, batch: usize, loss: f64, accuracy: f64, images_per_s: f64) {
        if let Some(bar) = &self.bar {
            bar.set_position(batch as u64);
            bar.set_message(format!(
                "loss {loss:.4} acc {:.2}% {images_per_s:.0} img/s",
                100.0 * accuracy
            ));
        }
    }

    fn epoch_done(&mut self, m: &EpochMetrics) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        eprintln!(
            "epoch {:>3}: lr {:.5}  train loss {:.4} acc {:.2}%  test loss {:.4} acc {:.2}%  {:.0} img/s  {:.1}s",
            m.epoch,
            m.lr,
            m.train_loss,
            100.0 * m.train_accuracy,
            m.test_loss,
            100.0 * m.test_accuracy,
            m.images_per_s,
            m.seconds
        );
    }

    fn message(&mut self, text: &str) {
        eprintln!("{text}");
    }
}

pub fn train(args: &TrainArgs) -> CliResult {
    let (source, graph) = load(&args.file)?;
    let plan = back::plan::lower(&graph, Some(&source));
    let recipe = recipe(graph.training.as_ref(), args);
    let run = RunDir {
        dir: args.out.clone(),
    };
    let mut exec = executor(plan.clone(), args.seed, args.device, args.precision.into())?;
    eprintln!(
        "model {}: {} parameters on {}",
        plan.name,
        back::summary::thousands(graph.total_params()),
        exec.device_name()
    );

    let mut train_set = load_split(&args.data, Split::Train, args.limit)?;
    let mut test_set = load_split(&args.data, Split::Test, args.test_limit)?;
    check_fit(&plan, &train_set, &args.data)?;
    check_fit(&plan, &test_set, &args.data)?;

    let (preprocess, start) = if args.resume {
        let checkpoint = Checkpoint::load(&plan, &run.checkpoint())
            .map_err(|err| Failure::Message(err.to_string()))?;
        if checkpoint.model_hash != plan.model_hash {
            eprintln!("warning: the checkpoint was written for another version of `{}`; its weights fit, resuming", plan.name);
        }
        exec.write_params(&checkpoint.params)
            .map_err(|e| e.to_string())?;
        if !checkpoint.momentum.is_empty() {
            exec.write_momentum(&checkpoint.momentum)
                .map_err(|e| e.to_string())?;
        }
        let progress = checkpoint.progress.clone();
        eprintln!(
            "resuming at epoch {}, batch {}",
            progress.epoch + 1,
            progress.batch
        );
        let preprocess = checkpoint
            .preprocess
            .unwrap_or_else(|| Preprocess::identity(plan.input));
        (preprocess, progress)
    } else {
        let kind = recipe.preprocess;
        let started = Instant::now();
        let preprocess = Preprocess::fit(kind, &train_set).map_err(|e| e.to_string())?;
        if kind != PreprocessKind::None {
            eprintln!(
                "preprocessing {} fitted in {:.1}s",
                kind.name(),
                started.elapsed().as_secs_f64()
            );
        }
        // A fresh run starts a fresh metrics file.
        let _ = std::fs::remove_file(run.metrics());
        (
            preprocess,
            Progress {
                seed: args.seed,
                ..Progress::default()
            },
        )
    };
    preprocess
        .apply_dataset(&mut train_set)
        .map_err(|e| e.to_string())?;
    preprocess
        .apply_dataset(&mut test_set)
        .map_err(|e| e.to_string())?;
    if !args.resume && recipe.init == Init::Lsuv {
        calibrate(exec.as_mut(), &train_set)?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second Ctrl-C while the checkpoint is written kills the process as usual.
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!(
                "\ninterrupt: finishing the batch and writing a checkpoint (Ctrl-C again to abort)"
            );
        });
    }
    let started = Instant::now();
    let mut trainer = Trainer {
        exec: exec.as_mut(),
        train: Arc::new(train_set),
        test: Arc::new(test_set),
        preprocess,
        recipe,
        seed: args.seed,
        run,
        stop,
    };
    let history = trainer
        .run(start, &mut Bars { bar: None })
        .map_err(|err| Failure::Message(err.to_string()))?;
    if let Some(last) = history.last() {
        let best = history.iter().map(|m| m.test_accuracy).fold(0.0, f64::max);
        eprintln!(
            "done: {} epochs in {:.1}s (this session), final test accuracy {:.2}%, best {:.2}%; wrote {}",
            last.epoch,
            started.elapsed().as_secs_f64(),
            100.0 * last.test_accuracy,
            100.0 * best,
            args.out.display()
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct EvalArgs {
    pub file: PathBuf,
    /// Checkpoint (checkpoint.safetensors or best.safetensors of a run)
    #[arg(long)]
    pub weights: PathBuf,
    #[arg(long)]
    pub data: PathBuf,
    /// Use only the first N test images
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: Device,
    /// Convolutions on the GPU: fp32, or tensor cores with tf32 / bf16 inputs
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: PrecisionArg,
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    #[arg(long)]
    pub json: bool,
}

/// Loads a model and its checkpoint onto a device.
pub fn load_trained(
    file: &Path,
    weights: &Path,
    device: Device,
    precision: Precision,
) -> Result<(Plan, Box<dyn Executor>, Checkpoint), Failure> {
    let (source, graph) = load(file)?;
    let plan = back::plan::lower(&graph, Some(&source));
    let checkpoint =
        Checkpoint::load(&plan, weights).map_err(|err| Failure::Message(err.to_string()))?;
    let mut exec = executor(plan.clone(), 0, device, precision)?;
    exec.write_params(&checkpoint.params)
        .map_err(|e| e.to_string())?;
    Ok((plan, exec, checkpoint))
}

pub fn eval(args: &EvalArgs) -> CliResult {
    let (plan, mut exec, checkpoint) = load_trained(
        &args.file,
        &args.weights,
        args.device,
        args.precision.into(),
    )?;
    let mut test = load_split(&args.data, Split::Test, args.limit)?;
    check_fit(&plan, &test, &args.data)?;
    if let Some(preprocess) = &checkpoint.preprocess {
        preprocess
            .apply_dataset(&mut test)
            .map_err(|e| e.to_string())?;
    }
    let eval = runtime::train::evaluate(exec.as_mut(), &Arc::new(test), args.batch)
        .map_err(|e| e.to_string())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&eval).expect("json"));
        return Ok(());
    }
    println!(
        "{}: {} test images, loss {:.4}, accuracy {:.2}%",
        plan.name,
        eval.images,
        eval.loss,
        100.0 * eval.accuracy
    );
    let width = eval
        .class_names
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(5)
        .max(5);
    println!("{:width$}  accuracy", "class");
    for (name, acc) in eval.class_names.iter().zip(&eval.per_class_accuracy) {
        println!("{name:width$}  {:>7.2}%", 100.0 * acc);
    }
    println!("confusion matrix (rows: true class, columns: predicted):");
    for (name, row) in eval.class_names.iter().zip(&eval.confusion) {
        let cells: Vec<String> = row.iter().map(|n| format!("{n:>5}")).collect();
        println!("{name:width$} {}", cells.join(""));
    }
    Ok(())
}

#[derive(Args)]
pub struct PredictArgs {
    pub file: PathBuf,
    #[arg(long)]
    pub weights: PathBuf,
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: Device,
    #[arg(long)]
    pub json: bool,
}

pub fn predict(args: &PredictArgs) -> CliResult {
    let (plan, mut exec, checkpoint) =
        load_trained(&args.file, &args.weights, args.device, Precision::Fp32)?;
    let mut results = Vec::new();
    for path in &args.images {
        let (shape, mut image) = data::folder::load_image(path).map_err(|e| e.to_string())?;
        if shape != plan.input {
            return Err(format!(
                "image {} is {} (CxHxW) but model `{}` expects {}",
                path.display(),
                shape,
                plan.name,
                plan.input
            )
            .into());
        }
        if let Some(preprocess) = &checkpoint.preprocess {
            preprocess.apply(&mut image, 1).map_err(|e| e.to_string())?;
        }
        let probs = exec.infer(&image, 1).map_err(|e| e.to_string())?;
        let mut ranked: Vec<(usize, f32)> = probs.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        ranked.truncate(5);
        let top: Vec<(String, f32)> = ranked
            .into_iter()
            .map(|(class, p)| {
                let name = checkpoint
                    .class_names
                    .get(class)
                    .cloned()
                    .unwrap_or_else(|| format!("class {class}"));
                (name, p)
            })
            .collect();
        results.push((path.display().to_string(), top));
    }
    if args.json {
        let json: Vec<_> = results
            .iter()
            .map(|(path, top)| {
                serde_json::json!({
                    "image": path,
                    "top5": top.iter().map(|(name, p)| serde_json::json!({"class": name, "probability": p})).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json).expect("json"));
    } else {
        for (path, top) in results {
            println!("{path}");
            for (name, p) in top {
                println!("  {:>6.2}%  {name}", 100.0 * p);
            }
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct BenchArgs {
    pub file: PathBuf,
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: Device,
    /// Convolutions on the GPU: fp32, or tensor cores with tf32 / bf16 inputs
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: PrecisionArg,
    /// Timed training steps (after 2 warm-up steps)
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Also time every kernel of one training step and one inference pass
    /// (each launch waits for the device: a GPU backend only)
    #[arg(long)]
    pub profile: bool,
    #[arg(long)]
    pub json: bool,
}

pub fn bench(args: &BenchArgs) -> CliResult {
    let (source, graph) = load(&args.file)?;
    let plan = back::plan::lower(&graph, Some(&source));
    let macs = plan.forward_macs() as f64;
    let mut exec = executor(plan.clone(), 0, args.device, args.precision.into())?;
    let n = args.batch.max(1);
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
    let steps = args.steps.max(1);
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
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": plan.name, "device": device, "precision": Precision::from(args.precision).name(), "batch": n, "steps": steps,
                "train_images_per_s": train_ips, "infer_images_per_s": infer_ips,
                "train_gflops": train_gflops, "infer_gflops": infer_gflops,
                "forward_macs_per_image": macs, "kernels": kernels,
            })
        );
    } else {
        println!("{} on {device}, batch {n}, {steps} steps:", plan.name);
        println!("  training:  {train_ips:8.1} images/s  {train_gflops:7.1} GFLOP/s");
        println!("  inference: {infer_ips:8.1} images/s  {infer_gflops:7.1} GFLOP/s");
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
