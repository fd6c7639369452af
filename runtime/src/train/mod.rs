//! Training and evaluation over any [`Executor`].
//!
//! The loop is device-independent: it asks the data loader for batches
//! (prepared one ahead on a background thread), calls
//! [`Executor::forward_backward`] and [`Executor::sgd_update`], evaluates on
//! the test set after each epoch, appends a line to `metrics.jsonl`, writes
//! `checkpoint.safetensors` (and `best.safetensors`) atomically and redraws
//! `curves.png`.
//!
//! The loop never waits for a step to finish: it reads the summed loss and
//! top-1 hits back every [`STATS_EVERY`] steps ([`Executor::take_stats`]),
//! at the end of each epoch and when interrupted, so a GPU backend runs ahead
//! of the host. A non-finite loss is so caught within that window.
//!
//! Reproducibility: the data order of epoch `e` depends only on `(seed, e)`,
//! augmentation and dropout only on `(seed, epoch, batch)`, so a run resumed
//! from a checkpoint (even one written mid-epoch on interruption) ends with
//! the same weights as an uninterrupted run of the same seed.

pub mod checkpoint;
pub mod curves;
pub mod init;
pub mod run_dir;

use crate::backend::{BackendError, Executor, SgdStep};
use crate::data::augment::Augment;
use crate::data::loader::{batches_per_epoch, BatchLoader, LoaderOptions};
use crate::data::preprocess::Preprocess;
use crate::data::Dataset;
pub use ::plan::recipe::{Recipe, Schedule};
use checkpoint::{Checkpoint, CheckpointError, Progress};
pub use init::Init;
pub use run_dir::{read_metrics, RunDir};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Training steps between two reads of the loss and accuracy sums (the only
/// point where a device backend makes the host wait for the GPU).
pub const STATS_EVERY: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(
        "the loss became {value} at epoch {epoch}, within batches {first_batch}-{batch} (steps {first_step}-{step}); training stopped{}. {}",
        if *checkpoint_kept { " and the last good checkpoint was kept" } else { "; no checkpoint was written yet" },
        lr_advice(*lr)
    )]
    NonFinite {
        value: f64,
        epoch: u32,
        first_batch: usize,
        batch: usize,
        first_step: u64,
        step: u64,
        lr: f64,
        /// Whether the run folder holds a checkpoint of this run.
        checkpoint_kept: bool,
    },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the training set ({train} images) is smaller than one batch ({batch})")]
    TooFewImages { train: usize, batch: usize },
    #[error(
        "interrupted at epoch {epoch}, batch {batch}; checkpoint saved, continue with --resume"
    )]
    Interrupted { epoch: u32, batch: usize },
}

/// What to try after a non-finite loss, for the rate of the failing step.
fn lr_advice(lr: f64) -> String {
    if lr > 0.0 && lr.is_finite() {
        format!("Try a lower learning rate (it was {lr} at that step)")
    } else {
        format!("The learning rate was {lr} at that step, which cannot train: check the `lr` and `schedule` settings")
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: u32,
    pub lr: f64,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub test_loss: f64,
    pub test_accuracy: f64,
    pub images_per_s: f64,
    pub seconds: f64,
}

/// Result of evaluating a model on a data set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    pub loss: f64,
    /// Fraction in 0..1.
    pub accuracy: f64,
    pub images: usize,
    pub per_class_accuracy: Vec<f64>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
    pub class_names: Vec<String>,
}

/// Progress reports for a user interface (progress bars, logs).
pub trait Observer {
    fn epoch_start(&mut self, _epoch: u32, _epochs: u32, _batches: usize, _done: usize) {}
    /// After each batch: running loss and accuracy of the epoch, images/s.
    fn batch_done(&mut self, _batch: usize, _loss: f64, _accuracy: f64, _images_per_s: f64) {}
    fn epoch_done(&mut self, _metrics: &EpochMetrics) {}
    fn message(&mut self, _text: &str) {}
}

/// An observer that reports nothing.
pub struct Silent;
impl Observer for Silent {}

/// Evaluates on every image of `data` (already preprocessed).
pub fn evaluate(
    exec: &mut dyn Executor,
    data: &Arc<Dataset>,
    batch: usize,
) -> Result<Evaluation, TrainError> {
    evaluate_each(exec, data, batch, |_, _, _| {})
}

/// [`evaluate`], handing `each` every image's index in `data`, label and
/// class probabilities, in the data set's order (for per-image output).
pub fn evaluate_each(
    exec: &mut dyn Executor,
    data: &Arc<Dataset>,
    batch: usize,
    mut each: impl FnMut(usize, u32, &[f32]),
) -> Result<Evaluation, TrainError> {
    let classes = exec.plan().classes;
    let mut confusion = vec![vec![0u64; classes]; classes];
    let mut loss = 0.0f64;
    let mut index = 0;
    for batch in BatchLoader::new(data, LoaderOptions::eval(batch)) {
        let probs = exec.infer(&batch.images, batch.n)?;
        for (row, &label) in probs.chunks_exact(classes).zip(&batch.labels) {
            each(index, label, row);
            index += 1;
            let predicted = argmax(row);
            let label = label as usize;
            loss -= (row[label].max(1e-12) as f64).ln();
            confusion[label][predicted] += 1;
        }
    }
    let images = data.len();
    let correct: u64 = (0..classes).map(|c| confusion[c][c]).sum();
    let per_class_accuracy = confusion
        .iter()
        .enumerate()
        .map(|(c, row)| {
            let total: u64 = row.iter().sum();
            if total == 0 {
                0.0
            } else {
                row[c] as f64 / total as f64
            }
        })
        .collect();
    Ok(Evaluation {
        loss: loss / images.max(1) as f64,
        accuracy: correct as f64 / images.max(1) as f64,
        images,
        per_class_accuracy,
        confusion,
        class_names: data.class_names.clone(),
    })
}

pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// A training run: model on a device, data, recipe and run folder.
pub struct Trainer<'a> {
    pub exec: &'a mut dyn Executor,
    pub train: Arc<Dataset>,
    pub test: Arc<Dataset>,
    pub preprocess: Preprocess,
    pub recipe: Recipe,
    /// The run's seed: data order, augmentation and dropout masks.
    pub seed: u64,
    pub run: RunDir,
    /// Set (e.g. by a Ctrl-C handler) to stop after the current batch with a
    /// checkpoint.
    pub stop: Arc<AtomicBool>,
}

impl Trainer<'_> {
    fn checkpoint(&self, progress: Progress) -> Result<Checkpoint, TrainError> {
        Ok(Checkpoint {
            model_hash: self.exec.plan().model_hash.clone(),
            model: self.exec.plan().name.clone(),
            params: self.exec.read_params()?,
            momentum: self.exec.read_momentum()?,
            preprocess: Some(self.preprocess.clone()),
            class_names: self.train.class_names.clone(),
            progress,
        })
    }

    /// Runs from `start` (a fresh run: `Progress { seed, ..Default }`) to
    /// the recipe's last epoch.
    pub fn run(
        &mut self,
        start: Progress,
        observer: &mut dyn Observer,
    ) -> Result<Vec<EpochMetrics>, TrainError> {
        let recipe = self.recipe.clone();
        let batch_size = recipe.batch_size();
        let batches = batches_per_epoch(self.train.len(), batch_size, true);
        if self.train.len() < batch_size {
            return Err(TrainError::TooFewImages {
                train: self.train.len(),
                batch: batch_size,
            });
        }
        // A resumed run must stop inside an epoch that is still to come.
        start.check_resume(&self.run.checkpoint(), recipe.epochs, batches)?;
        std::fs::create_dir_all(&self.run.dir).map_err(|source| TrainError::Io {
            path: self.run.dir.clone(),
            source,
        })?;
        let mut history = read_metrics(&self.run.metrics());
        history.retain(|m| m.epoch <= start.epoch);
        let mut progress = start;
        while progress.epoch < recipe.epochs {
            let epoch = progress.epoch;
            observer.epoch_start(epoch, recipe.epochs, batches, progress.batch);
            let mut options =
                LoaderOptions::train(batch_size, Augment::from(&recipe), self.seed, epoch as u64);
            options.start_batch = progress.batch;
            let started = Instant::now();
            let seconds_before = progress.seconds;
            let mut last_lr = recipe.lr_at(epoch, 0.0);
            // Statistics are read back once per window of steps, not per step.
            let mut window_first = progress.batch;
            let mut window_images = 0usize;
            for batch in BatchLoader::new(&self.train, options) {
                let index = batch.index;
                let step = epoch as u64 * batches as u64 + index as u64;
                self.exec
                    .forward_backward(&batch.view(), dropout_seed(self.seed, step))?;
                last_lr = recipe.lr_at(epoch, index as f64 / batches as f64);
                self.exec.sgd_update(&SgdStep {
                    lr: last_lr as f32,
                    momentum: recipe.momentum as f32,
                    nesterov: recipe.nesterov,
                    weight_decay: recipe.weight_decay as f32,
                })?;
                progress.batch = index + 1;
                progress.seen += batch.n as u64;
                window_images += batch.n;
                let stopping = self.stop.load(Ordering::SeqCst);
                if index + 1 - window_first < STATS_EVERY && index + 1 < batches && !stopping {
                    continue;
                }
                let stats = self.exec.take_stats()?;
                let window_loss = stats.loss_sum / window_images.max(1) as f64;
                if !window_loss.is_finite() {
                    let first_step = epoch as u64 * batches as u64 + window_first as u64;
                    return Err(TrainError::NonFinite {
                        value: window_loss,
                        epoch: epoch + 1,
                        first_batch: window_first + 1,
                        batch: index + 1,
                        first_step,
                        step,
                        lr: last_lr,
                        checkpoint_kept: self.run.checkpoint().exists(),
                    });
                }
                window_first = index + 1;
                window_images = 0;
                progress.loss_sum += stats.loss_sum;
                progress.correct += stats.correct as u64;
                let elapsed = seconds_before + started.elapsed().as_secs_f64();
                progress.seconds = elapsed;
                observer.batch_done(
                    index + 1,
                    progress.loss_sum / progress.seen as f64,
                    progress.correct as f64 / progress.seen as f64,
                    progress.seen as f64 / elapsed.max(1e-9),
                );
                if stopping && progress.batch < batches {
                    self.checkpoint(progress.clone())?
                        .save(self.exec.plan(), &self.run.checkpoint())?;
                    return Err(TrainError::Interrupted {
                        epoch: epoch + 1,
                        batch: progress.batch,
                    });
                }
            }
            // Evaluated in batches of the training's size: the buffers the
            // memory check admitted for training are all it needs.
            let eval = evaluate(self.exec, &self.test, batch_size)?;
            let metrics = EpochMetrics {
                epoch: epoch + 1,
                lr: last_lr,
                train_loss: progress.loss_sum / progress.seen.max(1) as f64,
                train_accuracy: progress.correct as f64 / progress.seen.max(1) as f64,
                test_loss: eval.loss,
                test_accuracy: eval.accuracy,
                images_per_s: progress.seen as f64 / progress.seconds.max(1e-9),
                seconds: progress.seconds,
            };
            let improved = eval.accuracy > progress.best_accuracy;
            progress = Progress {
                epoch: epoch + 1,
                batch: 0,
                seed: progress.seed,
                best_accuracy: progress.best_accuracy.max(eval.accuracy),
                ..Progress::default()
            };
            let checkpoint = self.checkpoint(progress.clone())?;
            checkpoint.save(self.exec.plan(), &self.run.checkpoint())?;
            if improved {
                checkpoint.save(self.exec.plan(), &self.run.best())?;
            }
            let path = self.run.metrics();
            let line = serde_json::to_string(&metrics).expect("metrics serialise");
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut file| writeln!(file, "{line}"))
                .map_err(|source| TrainError::Io { path, source })?;
            history.push(metrics.clone());
            if let Err(err) = curves::draw(&history, &self.run.curves(), &self.exec.plan().name) {
                observer.message(&format!("could not draw curves: {err}"));
            }
            observer.epoch_done(&metrics);
            if self.stop.load(Ordering::SeqCst) && progress.epoch < recipe.epochs {
                return Err(TrainError::Interrupted {
                    epoch: progress.epoch,
                    batch: 0,
                });
            }
        }
        Ok(history)
    }
}

/// The dropout seed of one step: a function of the run seed and the global
/// step only, so resumed runs draw the same masks.
pub fn dropout_seed(seed: u64, step: u64) -> u64 {
    crate::rng::mix64(
        seed ^ step
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(0xD1B5_4A32_D192_ED03),
    )
}
