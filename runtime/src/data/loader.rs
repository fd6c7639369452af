//! Mini-batches prepared on a background thread, one batch ahead.
//!
//! An epoch's order is a permutation drawn from `(seed, epoch)` alone
//! ([`epoch_order`]), and batch `k` augments with a seed drawn from
//! `(seed, epoch, k)`: a run resumed at batch `k` of epoch `e` sees exactly
//! the batches an uninterrupted run would have seen.
//!
//! With `drop_last` (training) the last partial batch of an epoch is dropped,
//! unless the data set is smaller than one batch; evaluation keeps it, so
//! every image is seen exactly once.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::augment::Augment;
use super::Dataset;
use crate::rng::{shuffle, SplitMix64};

/// Stream tag of shuffle seeds (see `SplitMix64::derive`).
const SHUFFLE_STREAM: u64 = 0x5348_5546;

/// How to cut a data set into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderOptions {
    /// Images per batch (0 is read as 1).
    pub batch_size: usize,
    /// Shuffle each epoch; otherwise data set order.
    pub shuffle: bool,
    pub augment: Augment,
    pub seed: u64,
    /// Epoch number (0-based); with `seed` it fixes the order.
    pub epoch: u64,
    /// First batch to produce (to resume inside an epoch).
    pub start_batch: usize,
    /// Drop the last partial batch.
    pub drop_last: bool,
}

impl LoaderOptions {
    /// Training: shuffled, augmented, last partial batch dropped.
    pub fn train(batch_size: usize, augment: Augment, seed: u64, epoch: u64) -> Self {
        Self {
            batch_size,
            shuffle: true,
            augment,
            seed,
            epoch,
            start_batch: 0,
            drop_last: true,
        }
    }

    /// Evaluation: data set order, no augmentation, every image once.
    pub fn eval(batch_size: usize) -> Self {
        Self {
            batch_size,
            shuffle: false,
            augment: Augment::NONE,
            seed: 0,
            epoch: 0,
            start_batch: 0,
            drop_last: false,
        }
    }
}

/// One mini-batch, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `n x H x W x C`, channels-last.
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
    pub n: usize,
    /// Index of the batch within its epoch.
    pub index: usize,
    /// Data set index of each image.
    pub indices: Vec<usize>,
}

impl Batch {
    /// The borrowed form the backends take.
    pub fn view(&self) -> crate::backend::Batch<'_> {
        crate::backend::Batch {
            images: &self.images,
            labels: &self.labels,
            n: self.n,
        }
    }
}

/// Number of batches of one epoch over `n` images.
pub fn batches_per_epoch(n: usize, batch_size: usize, drop_last: bool) -> usize {
    let batch_size = batch_size.max(1);
    if drop_last && n >= batch_size {
        n / batch_size
    } else {
        n.div_ceil(batch_size)
    }
}

/// The order in which an epoch visits the `n` images.
pub fn epoch_order(n: usize, shuffled: bool, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffled {
        shuffle(
            &mut order,
            &mut SplitMix64::derive(seed, &[SHUFFLE_STREAM, epoch]),
        );
    }
    order
}

/// Builds batch `index` of an epoch from its order.
fn make_batch(data: &Dataset, order: &[usize], options: &LoaderOptions, index: usize) -> Batch {
    let batch_size = options.batch_size.max(1);
    let start = index * batch_size;
    let end = (start + batch_size).min(order.len());
    let indices = order[start..end].to_vec();
    let dim = data.shape.len();
    let mut images = Vec::with_capacity(indices.len() * dim);
    let mut labels = Vec::with_capacity(indices.len());
    for &i in &indices {
        images.extend_from_slice(data.image(i));
        labels.push(data.labels[i]);
    }
    let seed = Augment::batch_seed(options.seed, options.epoch, index as u64);
    options.augment.apply(&mut images, data.shape, seed);
    Batch {
        images,
        labels,
        n: indices.len(),
        index,
        indices,
    }
}

/// Where the batches come from.
enum Source {
    /// The worker thread, one batch ahead.
    Worker(Receiver<Batch>),
    /// No thread could be started: batches are made on demand instead.
    Inline {
        data: Arc<Dataset>,
        order: Vec<usize>,
        options: LoaderOptions,
        next: usize,
        total: usize,
    },
}

/// An iterator over one epoch's batches, each prepared on a worker thread
/// while the previous one is in use.
pub struct BatchLoader {
    source: Option<Source>,
    worker: Option<JoinHandle<()>>,
    remaining: usize,
}

impl BatchLoader {
    /// Starts producing batches `options.start_batch..` of one epoch.
    pub fn new(data: &Arc<Dataset>, options: LoaderOptions) -> Self {
        let total = batches_per_epoch(data.len(), options.batch_size, options.drop_last);
        let first = options.start_batch.min(total);
        let remaining = total - first;
        let (sender, receiver) = sync_channel(1);
        let worker_data = Arc::clone(data);
        let worker = std::thread::Builder::new()
            .name("batch-loader".to_string())
            .spawn(move || {
                let data = worker_data;
                let order = epoch_order(data.len(), options.shuffle, options.seed, options.epoch);
                for index in first..total {
                    let batch = make_batch(&data, &order, &options, index);
                    // The consumer hung up: stop quietly.
                    if sender.send(batch).is_err() {
                        break;
                    }
                }
            });
        let (source, worker) = match worker {
            Ok(worker) => (Source::Worker(receiver), Some(worker)),
            Err(_) => (
                Source::Inline {
                    data: Arc::clone(data),
                    order: epoch_order(data.len(), options.shuffle, options.seed, options.epoch),
                    options,
                    next: first,
                    total,
                },
                None,
            ),
        };
        Self {
            source: Some(source),
            worker,
            remaining,
        }
    }

    /// Batches still to come.
    pub fn len(&self) -> usize {
        self.remaining
    }

    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }
}

impl Iterator for BatchLoader {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let batch = match self.source.as_mut()? {
            Source::Worker(receiver) => receiver.recv().ok()?,
            Source::Inline {
                data,
                order,
                options,
                next,
                total,
            } => {
                if *next >= *total {
                    return None;
                }
                *next += 1;
                make_batch(data, order, options, *next - 1)
            }
        };
        self.remaining = self.remaining.saturating_sub(1);
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for BatchLoader {}

impl Drop for BatchLoader {
    fn drop(&mut self) {
        // Hanging up first unblocks a worker waiting to send.
        self.source.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
