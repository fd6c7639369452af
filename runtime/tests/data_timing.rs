//! Timings on the real CIFAR-10 JPEG folder (ignored by default: run with
//! `cargo test -p allcnnc-runtime --test data_timing -- --ignored --nocapture`).

use std::path::Path;
use std::time::Instant;

use runtime::data::{self, Augment, BatchLoader, LoaderOptions, Preprocess, PreprocessKind, Split};

#[test]
#[ignore = "takes tens of seconds; prints timings"]
fn cifar10_jpeg_load_and_gcn_zca_fit() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/cifar10-jpeg");
    // Started by hand, for its timings: without the images it fails, saying
    // how to get them, rather than passing without running.
    assert!(
        dir.join("train").is_dir(),
        "{} is absent: scripts/test.sh unpacks it from ../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz",
        dir.display()
    );
    let start = Instant::now();
    let mut train = data::load(&dir, Split::Train).unwrap();
    eprintln!("load + decode 50,000 JPEGs: {:.2?}", start.elapsed());

    let start = Instant::now();
    let preprocess = Preprocess::fit(PreprocessKind::GcnZca, &train).unwrap();
    eprintln!(
        "fit GCN + ZCA (D = 3072, 20,000 images): {:.2?}",
        start.elapsed()
    );

    let start = Instant::now();
    preprocess.apply_dataset(&mut train).unwrap();
    eprintln!("apply GCN + ZCA to 50,000 images: {:.2?}", start.elapsed());

    let start = Instant::now();
    let mean_std = Preprocess::fit(PreprocessKind::Normalize, &train).unwrap();
    eprintln!("fit mean-std: {:.2?}", start.elapsed());
    drop(mean_std);

    // Whitened training features: mean ~0, variance just below 1.
    let dim = train.shape.len();
    let n = train.len() as f64;
    let mut variance = 0.0;
    for feature in [0, 1000, 3071] {
        let values: Vec<f64> = (0..train.len())
            .map(|i| f64::from(train.images[i * dim + feature]))
            .collect();
        let mean = values.iter().sum::<f64>() / n;
        variance = values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        eprintln!("feature {feature}: mean {mean:.4}, variance {variance:.4}");
        assert!(mean.abs() < 0.05);
    }
    assert!(variance > 0.1 && variance < 1.2);

    // The batch loader must keep a GPU fed: one epoch of shuffled batches of
    // 128 with flips and 2-pixel translations (models/all-cnn-c-short.net),
    // consumed as fast as they come.
    let train = std::sync::Arc::new(train);
    let augment = Augment {
        flip: true,
        max_shift: 2,
    };
    let start = Instant::now();
    let mut images = 0;
    for batch in BatchLoader::new(&train, LoaderOptions::train(128, augment, 1, 0)) {
        images += batch.view().n;
    }
    let seconds = start.elapsed().as_secs_f64();
    eprintln!(
        "one epoch of augmented batches of 128: {images} images in {seconds:.2} s ({:.0} images/s)",
        images as f64 / seconds
    );
    assert_eq!(images, 50_000 / 128 * 128);
}
