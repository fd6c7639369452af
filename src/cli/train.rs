//! `allcnnc train`: the file's recipe with the command line's overrides,
//! a fresh or resumed run through the [`driver`](crate::driver), progress
//! bars, and a checkpoint on Ctrl-C. [`Session`], one model's run into one
//! folder, is also what `ablate` trains each of its models with.

use super::args::{check_batch, executor, fit, load_split, DeviceArg, InitArg};
use super::flags;
use super::precision::PrecisionArg;
use super::{report, CliResult, Failure};
use crate::back;
use crate::driver;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use runtime::data::{Preprocess, PreprocessKind, Split};
use runtime::train::checkpoint::{Checkpoint, Progress};
use runtime::train::run_dir::RunLock;
use runtime::train::{EpochMetrics, Init, Observer, Recipe, RunDir, TrainError, Trainer};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

#[derive(Args)]
pub struct TrainArgs {
    /// The model
    pub file: PathBuf,
    /// Run folder: metrics.jsonl, checkpoint.safetensors, best.safetensors, curves.png
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub run: RunFlags,
    /// Continue the run in --out from its checkpoint
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Start a fresh run in an --out that holds one, deleting its
    /// checkpoints, metrics and curves
    #[arg(long)]
    pub overwrite: bool,
    /// Fine-tune: start from these weights (a checkpoint of this model, e.g.
    /// one that `allcnnc import --weights-out` wrote) instead of a fresh
    /// initialisation, with their preprocessing (none where they have
    /// none) rather than the recipe's; the optimizer starts afresh
    #[arg(long, value_name = "CKPT", conflicts_with = "resume")]
    pub weights: Option<PathBuf>,
}

/// What `train` and `ablate` share: the data, the overrides of the
/// recipe, the seed and the device.
#[derive(Args)]
pub struct RunFlags {
    /// Data set: a folder (IDX, CIFAR-10/100 binary, or image folder with train/ and test/)
    /// or such a data set in an unextracted .tar.gz / .tgz / .tar archive
    #[arg(long)]
    pub data: PathBuf,
    /// Epochs of the run (overrides the file's `epochs`)
    #[arg(long, value_parser = flags::count::<u32>)]
    pub epochs: Option<u32>,
    /// Images per step (overrides the file's `batch`)
    #[arg(long, value_parser = flags::count::<u32>)]
    pub batch: Option<u32>,
    /// Base learning rate (overrides the file's `lr`)
    #[arg(long, value_parser = flags::learning_rate, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Use only the first N training images
    #[arg(long, value_parser = flags::count::<usize>)]
    pub limit: Option<usize>,
    /// Use only the first N test images
    #[arg(long, value_parser = flags::count::<usize>)]
    pub test_limit: Option<usize>,
    /// Seed of a fresh run: data order, augmentation, dropout (default 0;
    /// a resumed run keeps its own, and `ablate` refuses a folder trained
    /// with another)
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceArg,
    /// Convolutions on the GPU: fp32, or tensor cores with tf32 / bf16 inputs
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: PrecisionArg,
    /// Initialisation of a fresh run (overrides the file's `init`)
    #[arg(long, value_enum)]
    pub init: Option<InitArg>,
}

impl RunFlags {
    /// The file's recipe with the command line's overrides.
    pub fn recipe(&self, file: Option<&Recipe>) -> Recipe {
        let mut recipe = file.cloned().unwrap_or_default();
        recipe.epochs = self.epochs.unwrap_or(recipe.epochs);
        recipe.batch = self.batch.unwrap_or(recipe.batch);
        recipe.lr = self.lr.unwrap_or(recipe.lr);
        recipe.init = match self.init {
            Some(InitArg::He) => Init::He,
            Some(InitArg::Lsuv) => Init::Lsuv,
            None => recipe.init,
        };
        recipe
    }
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

/// Takes the run folder for this run before any data is loaded or compute
/// spent: it must be a writable folder no other process trains into, and a
/// fresh run must not land on an earlier one unless `--overwrite` says so.
fn claim(run: &RunDir, args: &TrainArgs) -> Result<RunLock, Failure> {
    let lock = run.lock().map_err(|err| err.to_string())?;
    let existing = run.existing();
    if args.resume {
        if !run.checkpoint().exists() {
            return Err(format!(
                "nothing to resume in {}: it holds no checkpoint.safetensors; start a fresh run without --resume",
                run.dir.display()
            )
            .into());
        }
    } else if let Some(found) = existing {
        if !args.overwrite {
            return Err(format!(
                "{} already holds a run ({found}); continue it with --resume, or replace it with --overwrite",
                run.dir.display()
            )
            .into());
        }
    }
    Ok(lock)
}

/// A flag set by Ctrl-C (SIGINT) or SIGTERM (kill, timeout, schedulers,
/// container stops): the trainer finishes the batch and writes a
/// checkpoint. A second signal while it does exits at once. SIGHUP keeps
/// its default, so `nohup` still protects a run from a closed terminal.
/// The handlers are installed by the first call; later calls (the next
/// model of `ablate`) return the same flag.
pub(super) fn stop_on_signals() -> Arc<AtomicBool> {
    static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    STOP.get_or_init(|| {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let ctrl_c = ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!(
                "\ninterrupted: finishing the batch and writing a checkpoint (interrupt again to abort)"
            );
        });
        // The shutdown is registered first: it sees the flag as the previous
        // SIGTERM left it, so only a second one exits.
        let term = signal_hook::consts::SIGTERM;
        let sigterm = signal_hook::flag::register_conditional_shutdown(term, 143, stop.clone())
            .and_then(|_| signal_hook::flag::register(term, stop.clone()));
        if let Err(err) = ctrl_c {
            eprintln!("warning: Ctrl-C will not checkpoint: {err}");
        }
        if let Err(err) = sigterm {
            eprintln!("warning: SIGTERM will not checkpoint: {err}");
        }
        stop
    })
    .clone()
}

pub fn train(args: &TrainArgs) -> CliResult {
    let model = super::model(&args.file)?;
    let run = RunDir::new(&args.out);
    // Held to the end of the run; the OS releases it if the process dies.
    let _lock = claim(&run, args)?;
    let session = Session {
        model: &model,
        recipe: args.run.recipe(model.graph.training.as_ref()),
        flags: &args.run,
        run,
        resume: args.resume,
        start_from: args.weights.as_deref(),
        training_starts: &mut || {},
    };
    match session.run()? {
        Ended::Finished => Ok(()),
        Ended::Interrupted(err) => Err(err.to_string().into()),
    }
}

/// One model's training into one run folder, fresh or resumed: what
/// `train` does after claiming the folder, and `ablate` for each model.
pub(super) struct Session<'a> {
    pub model: &'a driver::Model,
    /// The recipe, the command line's overrides applied.
    pub recipe: Recipe,
    pub flags: &'a RunFlags,
    /// The run folder, whose lock the caller holds.
    pub run: RunDir,
    /// Continue from the folder's checkpoint (else a fresh run, which
    /// removes the folder's earlier run once it can start).
    pub resume: bool,
    /// A fresh run's starting weights (fine-tuning), else the recipe's
    /// initialisation.
    pub start_from: Option<&'a Path>,
    /// Called once everything is loaded, right before the first batch.
    pub training_starts: &'a mut dyn FnMut(),
}

/// How a session ended, when not by an error.
pub(super) enum Ended {
    /// Every epoch of the recipe is done (the run's history is in its
    /// `metrics.jsonl`).
    Finished,
    /// Stopped by a signal, with a checkpoint to resume from
    /// ([`TrainError::Interrupted`]).
    Interrupted(TrainError),
}

impl Session<'_> {
    pub fn run(self) -> Result<Ended, Failure> {
        let Session {
            model,
            recipe,
            flags,
            run,
            resume,
            start_from,
            training_starts,
        } = self;
        let plan = &model.plan;
        let mut exec = executor(
            plan,
            flags.seed.unwrap_or(0),
            flags.device,
            flags.precision.into(),
        )?;
        // Before any data is read: a batch whose activations cannot fit.
        check_batch(exec.as_ref(), recipe.batch_size())?;
        eprintln!(
            "model {}: {} parameters on {}",
            plan.name,
            back::summary::thousands(model.graph.total_params()),
            exec.device_name()
        );

        let mut train_set = load_split(&flags.data, Split::Train, flags.limit)?;
        let mut test_set = load_split(&flags.data, Split::Test, flags.test_limit)?;
        fit(plan, &mut train_set, &flags.data)?;
        fit(plan, &mut test_set, &flags.data)?;
        if train_set.len() < recipe.batch_size() {
            let err = TrainError::TooFewImages {
                train: train_set.len(),
                batch: recipe.batch_size(),
            };
            return Err(err.to_string().into());
        }

        let (preprocess, start) = if resume {
            let checkpoint = Checkpoint::load(plan, &run.checkpoint())
                .map_err(|err| Failure::Message(err.to_string()))?;
            checkpoint
                .check_class_names(&run.checkpoint(), &flags.data, &train_set.class_names)
                .map_err(|err| Failure::Message(err.to_string()))?;
            if let Some(seed) = flags.seed.filter(|&s| s != checkpoint.progress.seed) {
                return Err(format!(
                    "--seed {seed} differs from the run's seed {}; a resumed run keeps its seed (drop --seed)",
                    checkpoint.progress.seed
                )
                .into());
            }
            if checkpoint.model_hash != plan.model_hash {
                eprintln!("warning: the checkpoint was written for another version of `{}`; its weights fit, resuming", plan.name);
            }
            driver::resume(exec.as_mut(), &checkpoint).map_err(report)?;
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
            let pretrained = match start_from {
                Some(path) => {
                    let checkpoint = Checkpoint::load(plan, path)
                        .map_err(|err| Failure::Message(err.to_string()))?;
                    checkpoint
                        .check_class_names(path, &flags.data, &train_set.class_names)
                        .map_err(|err| Failure::Message(err.to_string()))?;
                    exec.write_params(&checkpoint.params)
                        .map_err(|err| err.to_string())?;
                    // The weights were made for their preprocessing, or
                    // for the images as they are (none).
                    let preprocess = checkpoint
                        .preprocess
                        .unwrap_or_else(|| Preprocess::identity(plan.input));
                    eprintln!(
                        "starting from the weights of {} and their preprocessing ({})",
                        path.display(),
                        preprocess.kind().name()
                    );
                    Some(preprocess)
                }
                None => None,
            };
            let kept = pretrained.is_some();
            let preprocess = match pretrained {
                Some(preprocess) => preprocess,
                None => Preprocess::fit(kind, &train_set).map_err(|e| e.to_string())?,
            };
            if !kept && kind != PreprocessKind::None {
                eprintln!(
                    "preprocessing {} fitted in {:.1}s",
                    kind.name(),
                    started.elapsed().as_secs_f64()
                );
            }
            (
                preprocess,
                Progress {
                    seed: flags.seed.unwrap_or(0),
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
        if !resume && start_from.is_none() && recipe.init == Init::Lsuv {
            let started = Instant::now();
            let (n, scales) = driver::calibrate(exec.as_mut(), &train_set).map_err(report)?;
            let factors: Vec<String> = scales
                .iter()
                .map(|s| format!("{} x{:.3}", s.layer, s.factor))
                .collect();
            eprintln!(
                "init: LSUV on {n} training images in {:.1}s: {}",
                started.elapsed().as_secs_f64(),
                factors.join(", ")
            );
        }

        if !resume {
            // Only now that the data has loaded, fitted and calibrated, and
            // the run can start: --overwrite deletes the earlier run's files
            // (a fresh run into a folder holding one was refused above
            // without it).
            run.clear().map_err(|err| {
                format!(
                    "cannot remove the earlier run in {}: {err}",
                    run.dir.display()
                )
            })?;
        }
        let out = run.dir.clone();
        let stop = stop_on_signals();
        training_starts();
        let started = Instant::now();
        let mut trainer = Trainer {
            exec: exec.as_mut(),
            train: Arc::new(train_set),
            test: Arc::new(test_set),
            preprocess,
            recipe,
            seed: start.seed,
            run,
            stop,
        };
        let history = match trainer.run(start, &mut Bars { bar: None }) {
            Ok(history) => history,
            Err(err @ TrainError::Interrupted { .. }) => return Ok(Ended::Interrupted(err)),
            Err(err) => return Err(Failure::Message(err.to_string())),
        };
        if let Some(last) = history.last() {
            let best = history.iter().map(|m| m.test_accuracy).fold(0.0, f64::max);
            eprintln!(
                "done: {} epochs in {:.1}s (this session), final test accuracy {:.2}%, best {:.2}%; wrote {}",
                last.epoch,
                started.elapsed().as_secs_f64(),
                100.0 * last.test_accuracy,
                100.0 * best,
                out.display()
            );
        }
        Ok(Ended::Finished)
    }
}
