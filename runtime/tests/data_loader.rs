//! Augmentation and the batch loader: determinism, coverage, resumption.

use std::sync::Arc;

use runtime::data::augment::transform;
use runtime::data::loader::{batches_per_epoch, epoch_order};
use runtime::data::{Augment, BatchLoader, Dataset, LoaderOptions};
use runtime::plan::Shape;

/// `n` images whose every value encodes `(image, pixel, channel)`.
fn numbered(n: usize, shape: Shape) -> Arc<Dataset> {
    let images = (0..n * shape.len()).map(|v| v as f32 + 1.0).collect();
    Arc::new(Dataset {
        images,
        labels: (0..n as u32).map(|i| i % 10).collect(),
        shape,
        classes: 10,
        class_names: (0..10).map(|i| i.to_string()).collect(),
    })
}

#[test]
fn transform_flips_and_shifts_with_zero_fill() {
    let shape = Shape::new(1, 2, 3);
    let source = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let mut out = [0.0; 6];
    transform(&source, &mut out, shape, true, 0, 0);
    assert_eq!(out, [3.0, 2.0, 1.0, 6.0, 5.0, 4.0]);
    transform(&source, &mut out, shape, false, 1, 0);
    assert_eq!(out, [0.0, 1.0, 2.0, 0.0, 4.0, 5.0]);
    transform(&source, &mut out, shape, false, -1, 1);
    assert_eq!(out, [0.0, 0.0, 0.0, 2.0, 3.0, 0.0]);
    transform(&source, &mut out, shape, true, 1, 0);
    assert_eq!(out, [0.0, 3.0, 2.0, 0.0, 6.0, 5.0]);
    // Channels move together.
    let shape = Shape::new(2, 1, 2);
    let mut out = [0.0; 4];
    transform(&[1.0, 2.0, 3.0, 4.0], &mut out, shape, true, 0, 0);
    assert_eq!(out, [3.0, 4.0, 1.0, 2.0]);
}

#[test]
fn augmentation_is_deterministic_per_seed() {
    let shape = Shape::new(3, 8, 8);
    let data = numbered(16, shape);
    let augment = Augment::PAPER;
    let run = |seed| {
        let mut images = data.images.clone();
        augment.apply(&mut images, shape, seed);
        images
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
    assert_ne!(run(42), data.images);
    // The draws cover flips and every shift.
    let mut flips = 0;
    let mut shifts = std::collections::BTreeSet::new();
    for index in 0..2000 {
        let (flip, dx, dy) = augment.draw(7, index);
        flips += usize::from(flip);
        assert!(dx.abs() <= 5 && dy.abs() <= 5);
        shifts.insert(dx);
    }
    assert!((800..1200).contains(&flips), "{flips} flips of 2000");
    assert_eq!(shifts.len(), 11);
    // No augmentation leaves the images alone.
    let mut images = data.images.clone();
    Augment::NONE.apply(&mut images, shape, 1);
    assert_eq!(images, data.images);
    assert_eq!(Augment::batch_seed(1, 2, 3), Augment::batch_seed(1, 2, 3));
    assert_ne!(Augment::batch_seed(1, 2, 3), Augment::batch_seed(1, 2, 4));
}

#[test]
fn training_epoch_covers_each_image_once() {
    let shape = Shape::new(1, 2, 2);
    let data = numbered(103, shape);
    let loader = BatchLoader::new(&data, LoaderOptions::train(10, Augment::NONE, 5, 0));
    assert_eq!(loader.len(), 10);
    let mut seen = Vec::new();
    for (k, batch) in loader.enumerate() {
        assert_eq!(batch.index, k);
        assert_eq!(batch.n, 10);
        assert_eq!(batch.images.len(), 10 * shape.len());
        for (j, &i) in batch.indices.iter().enumerate() {
            assert_eq!(batch.labels[j], data.labels[i]);
            assert_eq!(&batch.images[j * 4..j * 4 + 4], data.image(i));
        }
        seen.extend(batch.indices);
    }
    // The last partial batch (3 images) is dropped; no image repeats.
    assert_eq!(seen.len(), 100);
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 100);
    assert_ne!(seen, (0..100).collect::<Vec<_>>(), "shuffled");
}

#[test]
fn evaluation_covers_every_image_in_order() {
    let shape = Shape::new(3, 2, 2);
    let data = numbered(103, shape);
    let batches: Vec<_> = BatchLoader::new(&data, LoaderOptions::eval(10)).collect();
    assert_eq!(batches.len(), 11);
    assert_eq!(batches[10].n, 3);
    let images: Vec<f32> = batches.iter().flat_map(|b| b.images.clone()).collect();
    assert_eq!(images, data.images);
    let labels: Vec<u32> = batches.iter().flat_map(|b| b.labels.clone()).collect();
    assert_eq!(labels, data.labels);
}

#[test]
fn epochs_are_reproducible_and_resumable() {
    let shape = Shape::new(3, 6, 6);
    let data = numbered(64, shape);
    let options = LoaderOptions::train(8, Augment::PAPER, 99, 3);
    let full: Vec<_> = BatchLoader::new(&data, options).collect();
    let again: Vec<_> = BatchLoader::new(&data, options).collect();
    assert_eq!(full, again);
    // Resume at batch 5 of the same epoch.
    let resumed: Vec<_> = BatchLoader::new(
        &data,
        LoaderOptions {
            start_batch: 5,
            ..options
        },
    )
    .collect();
    assert_eq!(resumed[..], full[5..]);
    // Another epoch, another order.
    let next: Vec<_> = BatchLoader::new(
        &data,
        LoaderOptions {
            epoch: 4,
            ..options
        },
    )
    .collect();
    assert_ne!(next[0].indices, full[0].indices);
    assert_eq!(epoch_order(64, true, 99, 3), epoch_order(64, true, 99, 3));
    // Past the end: nothing.
    let past = BatchLoader::new(
        &data,
        LoaderOptions {
            start_batch: 100,
            ..options
        },
    );
    assert!(past.is_empty());
    assert_eq!(past.count(), 0);
}

#[test]
fn small_data_and_early_drop() {
    // Fewer images than one batch: one partial batch even in training.
    let data = numbered(3, Shape::new(1, 1, 1));
    assert_eq!(batches_per_epoch(3, 8, true), 1);
    let batches: Vec<_> =
        BatchLoader::new(&data, LoaderOptions::train(8, Augment::NONE, 0, 0)).collect();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].n, 3);
    // Batch size 0 is read as 1.
    assert_eq!(BatchLoader::new(&data, LoaderOptions::eval(0)).count(), 3);
    // Dropping the loader mid-epoch stops its worker.
    let data = numbered(1000, Shape::new(3, 4, 4));
    let mut loader = BatchLoader::new(&data, LoaderOptions::eval(10));
    assert!(loader.next().is_some());
    drop(loader);
    let view_batch = BatchLoader::new(&data, LoaderOptions::eval(4))
        .next()
        .unwrap();
    let view = view_batch.view();
    assert_eq!(
        (view.n, view.labels.len(), view.images.len()),
        (4, 4, 4 * 48)
    );
}
