//! Preprocessing: GCN, ZCA whitening, mean-std, and their stored forms.

use runtime::data::preprocess::{Gcn, Method, Zca};
use runtime::data::{DataError, Dataset, FitOptions, Preprocess, PreprocessHeader, PreprocessKind};
use runtime::plan::Shape;

/// A deterministic pseudo-random stream in `0..1` (xorshift), so the tests
/// need no extra crate.
fn uniform(seed: u64, n: usize) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

/// `n` images of `shape` with correlated features: a random mixing of
/// independent uniforms, squashed to `0..1`.
fn correlated_dataset(n: usize, shape: Shape, seed: u64) -> Dataset {
    let dim = shape.len();
    let mixing = uniform(seed ^ 0xABCD, dim * dim);
    let sources = uniform(seed, n * dim);
    let mut images = vec![0.0f32; n * dim];
    for i in 0..n {
        for j in 0..dim {
            let value: f32 = (0..dim)
                .map(|k| sources[i * dim + k] * mixing[k * dim + j])
                .sum();
            images[i * dim + j] = value / dim as f32;
        }
    }
    Dataset {
        images,
        labels: vec![0; n],
        shape,
        classes: 1,
        class_names: vec!["only".to_string()],
    }
}

/// Covariance (and mean) of `n` rows of `dim` values, in f64.
fn covariance(rows: &[f32], dim: usize) -> (Vec<f64>, Vec<f64>) {
    let n = rows.len() / dim;
    let mut mean = vec![0.0f64; dim];
    for row in rows.chunks_exact(dim) {
        for (m, &x) in mean.iter_mut().zip(row) {
            *m += f64::from(x) / n as f64;
        }
    }
    let mut cov = vec![0.0f64; dim * dim];
    for row in rows.chunks_exact(dim) {
        for i in 0..dim {
            for j in 0..dim {
                cov[i * dim + j] +=
                    (f64::from(row[i]) - mean[i]) * (f64::from(row[j]) - mean[j]) / n as f64;
            }
        }
    }
    (mean, cov)
}

#[test]
fn zca_whitened_training_data_has_identity_covariance() {
    let shape = Shape::new(3, 2, 2); // D = 12
    let data = correlated_dataset(4000, shape, 7);
    let dim = shape.len();
    let (_, before) = covariance(&data.images, dim);
    assert!(
        before[1].abs() > 0.1 * before[0],
        "the test data must be correlated"
    );
    let zca = Zca::fit(&data.images, dim, 1e-9, usize::MAX).unwrap();
    assert_eq!(zca.fit_images, 4000);
    let mut white = data.images.clone();
    zca.apply(&mut white);
    let (mean, cov) = covariance(&white, dim);
    for i in 0..dim {
        assert!(mean[i].abs() < 1e-3, "mean[{i}] = {}", mean[i]);
        for j in 0..dim {
            let want = if i == j { 1.0 } else { 0.0 };
            let got = cov[i * dim + j];
            assert!((got - want).abs() < 2e-2, "cov[{i},{j}] = {got}");
        }
    }
    // ZCA's matrix is symmetric.
    for i in 0..dim {
        for j in 0..dim {
            let (a, b) = (zca.matrix[i * dim + j], zca.matrix[j * dim + i]);
            assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "W[{i},{j}]");
        }
    }
}

#[test]
fn zca_bias_shrinks_small_eigenvalues() {
    let shape = Shape::new(1, 3, 4);
    let data = correlated_dataset(2000, shape, 3);
    let dim = shape.len();
    let zca = Zca::fit(&data.images, dim, 0.1, usize::MAX).unwrap();
    let mut white = data.images.clone();
    zca.apply(&mut white);
    let (_, cov) = covariance(&white, dim);
    // With lambda << bias the whitened variance is lambda / (lambda + bias) < 1.
    for i in 0..dim {
        assert!(cov[i * dim + i] < 1.0, "var[{i}] = {}", cov[i * dim + i]);
    }
}

#[test]
fn zca_fits_on_an_evenly_spaced_subset() {
    let shape = Shape::new(1, 2, 2);
    let data = correlated_dataset(1000, shape, 5);
    let zca = Zca::fit(&data.images, shape.len(), 1e-3, 100).unwrap();
    assert_eq!(zca.fit_images, 100);
}

#[test]
fn gcn_gives_zero_mean_and_norm_55() {
    let shape = Shape::new(3, 4, 4);
    let mut images = uniform(11, 50 * shape.len());
    // A constant image stays finite (zero).
    images[..shape.len()].fill(0.5);
    Gcn::new(55.0).apply(&mut images, shape.len());
    for (index, image) in images.chunks_exact(shape.len()).enumerate() {
        let mean: f64 = image.iter().map(|&x| f64::from(x)).sum::<f64>() / image.len() as f64;
        let norm: f64 = image
            .iter()
            .map(|&x| f64::from(x).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(mean.abs() < 1e-5, "image {index}: mean {mean}");
        if index == 0 {
            assert!(image.iter().all(|&x| x == 0.0));
        } else {
            assert!((norm - 55.0).abs() < 1e-3, "image {index}: norm {norm}");
        }
    }
}

#[test]
fn gcn_zca_fit_and_apply() {
    let shape = Shape::new(3, 2, 2);
    let mut data = correlated_dataset(3000, shape, 9);
    let preprocess = Preprocess::fit(PreprocessKind::GcnZca, &data).unwrap();
    assert_eq!(preprocess.kind(), PreprocessKind::GcnZca);
    let n = data.len();
    preprocess.apply(&mut data.images, n).unwrap();
    let (mean, cov) = covariance(&data.images, shape.len());
    assert!(mean.iter().all(|m| m.abs() < 1e-2), "{mean:?}");
    // GCN'd features have variance far above the 0.1 bias: close to white.
    // (One direction, the per-image mean, is removed by GCN, so one
    // eigenvalue is ~0; the diagonal is still near 1 - 1/D.)
    for i in 0..shape.len() {
        let var = cov[i * shape.len() + i];
        assert!((0.8..1.0).contains(&var), "var[{i}] = {var}");
    }
}

#[test]
fn mean_std_standardises_each_channel() {
    let shape = Shape::new(3, 4, 4);
    let mut images = uniform(1, 200 * shape.len());
    // Channel 1 is scaled and shifted, channel 2 constant.
    for pixel in images.chunks_exact_mut(3) {
        pixel[1] = 0.25 + 0.5 * pixel[1];
        pixel[2] = 0.3;
    }
    let mut data = Dataset {
        images,
        labels: vec![0; 200],
        shape,
        classes: 1,
        class_names: vec!["x".into()],
    };
    let preprocess = Preprocess::fit(PreprocessKind::Normalize, &data).unwrap();
    let Method::MeanStd { mean, std } = &preprocess.method else {
        panic!("not mean-std")
    };
    assert!((mean[1] - 0.5).abs() < 0.01, "{mean:?}");
    assert_eq!(std[2], 1.0);
    preprocess.apply_dataset(&mut data).unwrap();
    for channel in 0..3 {
        let values: Vec<f64> = data
            .images
            .iter()
            .skip(channel)
            .step_by(3)
            .map(|&x| f64::from(x))
            .collect();
        let m = values.iter().sum::<f64>() / values.len() as f64;
        let var = values.iter().map(|x| (x - m).powi(2)).sum::<f64>() / values.len() as f64;
        assert!(m.abs() < 1e-4, "channel {channel}: mean {m}");
        let want = if channel == 2 { 0.0 } else { 1.0 };
        assert!((var - want).abs() < 1e-3, "channel {channel}: var {var}");
    }
}

#[test]
fn stored_forms_round_trip() {
    let shape = Shape::new(3, 2, 2);
    let data = correlated_dataset(500, shape, 13);
    for (kind, _) in PreprocessKind::ALL {
        let preprocess = Preprocess::fit(kind, &data).unwrap();
        // serde_json as a whole.
        let json = serde_json::to_string(&preprocess).unwrap();
        let back: Preprocess = serde_json::from_str(&json).unwrap();
        assert_eq!(back, preprocess, "{kind}");
        // Header (JSON) + tensors.
        let header_json = serde_json::to_string(&preprocess.header()).unwrap();
        let header: PreprocessHeader = serde_json::from_str(&header_json).unwrap();
        let tensors = preprocess.to_tensors();
        assert!(tensors
            .iter()
            .all(|(name, _, _)| name.starts_with("preprocess.")));
        for (name, dims, values) in &tensors {
            assert_eq!(dims.iter().product::<usize>(), values.len(), "{name}");
        }
        let back = Preprocess::from_tensors(&header, &tensors).unwrap();
        assert_eq!(back, preprocess, "{kind}");
        let mut a = data.images.clone();
        let mut b = data.images.clone();
        preprocess.apply(&mut a, data.len()).unwrap();
        back.apply(&mut b, data.len()).unwrap();
        assert_eq!(a, b);
    }
    assert_eq!(
        "gcn-zca".parse::<PreprocessKind>(),
        Ok(PreprocessKind::GcnZca)
    );
    assert!("zca"
        .parse::<PreprocessKind>()
        .unwrap_err()
        .contains("mean-std"));
}

#[test]
fn from_tensors_errors() {
    let shape = Shape::new(3, 2, 2);
    let data = correlated_dataset(100, shape, 17);
    let preprocess = Preprocess::fit(PreprocessKind::GcnZca, &data).unwrap();
    let header = preprocess.header();
    let mut tensors = preprocess.to_tensors();
    let err = Preprocess::from_tensors(&header, &tensors[..1]).unwrap_err();
    assert!(
        matches!(&err, DataError::MissingTensor { name } if name == "preprocess.zca_matrix"),
        "{err}"
    );
    tensors[1].1 = vec![144];
    let err = Preprocess::from_tensors(&header, &tensors).unwrap_err();
    assert!(matches!(err, DataError::TensorDims { .. }), "{err}");
    let mut bad_header = header.clone();
    bad_header.gcn = None;
    let err = Preprocess::from_tensors(&bad_header, &preprocess.to_tensors()).unwrap_err();
    assert!(
        matches!(err, DataError::BadPreprocessHeader { .. }),
        "{err}"
    );
}

#[test]
fn apply_checks_the_image_size() {
    let shape = Shape::new(1, 2, 2);
    let preprocess = Preprocess::identity(shape);
    let mut images = vec![0.0; 7];
    let err = preprocess.apply(&mut images, 2).unwrap_err();
    assert!(
        matches!(err, DataError::ImageSize { found: 7, n: 2, .. }),
        "{err}"
    );
    let empty = Dataset {
        images: Vec::new(),
        labels: Vec::new(),
        shape,
        classes: 1,
        class_names: vec!["x".into()],
    };
    let err =
        Preprocess::fit_with(PreprocessKind::GcnZca, &empty, &FitOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::EmptyDataset), "{err}");
}
