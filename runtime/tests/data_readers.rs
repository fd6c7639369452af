//! The data set readers on small crafted files (every error case) and, when
//! installed, on the real Fashion-MNIST and CIFAR-10 JPEG folders.

#[path = "../../tests/real_cifar/mod.rs"]
mod real_cifar;
#[path = "../../tests/skip/mod.rs"]
mod skip;

use std::io::Write;
use std::path::Path;

use runtime::data::{self, cifar, folder, idx, DataError, Format, Split};

fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, bytes).unwrap();
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

// ---------------------------------------------------------------- IDX

fn idx_images(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut bytes = idx::IMAGES_MAGIC.to_be_bytes().to_vec();
    for dim in [n, rows, cols] {
        bytes.extend_from_slice(&dim.to_be_bytes());
    }
    bytes.extend_from_slice(pixels);
    bytes
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut bytes = idx::LABELS_MAGIC.to_be_bytes().to_vec();
    bytes.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    bytes.extend_from_slice(labels);
    bytes
}

/// 3 images of 2x2 with pixel values `image * 4 + pixel`.
fn good_idx(dir: &Path, gz: bool) {
    let pixels: Vec<u8> = (0..12).collect();
    let images = idx_images(3, 2, 2, &pixels);
    let labels = idx_labels(&[7, 0, 9]);
    let test_images = idx_images(1, 2, 2, &[255, 0, 0, 255]);
    let test_labels = idx_labels(&[3]);
    if gz {
        write(&dir.join("train-images-idx3-ubyte.gz"), &gzip(&images));
        write(&dir.join("train-labels-idx1-ubyte.gz"), &gzip(&labels));
        write(&dir.join("t10k-images-idx3-ubyte.gz"), &gzip(&test_images));
        write(&dir.join("t10k-labels-idx1-ubyte.gz"), &gzip(&test_labels));
    } else {
        write(&dir.join("train-images-idx3-ubyte"), &images);
        write(&dir.join("train-labels-idx1-ubyte"), &labels);
        write(&dir.join("t10k-images-idx3-ubyte"), &test_images);
        write(&dir.join("t10k-labels-idx1-ubyte"), &test_labels);
    }
}

#[test]
fn idx_reads_raw_and_gzip() {
    for gz in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("mnist");
        good_idx(&dir, gz);
        assert_eq!(data::detect(&dir).unwrap().0, Format::Idx);
        let train = data::load(&dir, Split::Train).unwrap();
        assert_eq!(train.len(), 3);
        assert_eq!(train.shape, runtime::plan::Shape::new(1, 2, 2));
        assert_eq!(train.labels, vec![7, 0, 9]);
        assert_eq!(train.classes, 10);
        assert_eq!(train.class_names[3], "3");
        assert_eq!(
            train.image(1),
            &[4.0 / 255.0, 5.0 / 255.0, 6.0 / 255.0, 7.0 / 255.0]
        );
        let test = data::load(&dir, Split::Test).unwrap();
        assert_eq!(test.labels, vec![3]);
        assert_eq!(test.images, vec![1.0, 0.0, 0.0, 1.0]);
        let limited = data::load_limited(&dir, Split::Train, Some(2)).unwrap();
        assert_eq!(limited.labels, vec![7, 0]);
        assert_eq!(limited.images.len(), 8);
    }
}

#[test]
fn idx_fashion_names_follow_the_folder_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("Fashion-MNIST");
    good_idx(&dir, false);
    let train = data::load(&dir, Split::Train).unwrap();
    assert_eq!(train.class_names[0], "T-shirt/top");
    assert_eq!(train.class_names[9], "Ankle boot");
}

fn idx_error(images: &[u8], labels: &[u8]) -> DataError {
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("train-images-idx3-ubyte"), images);
    write(&tmp.path().join("train-labels-idx1-ubyte"), labels);
    data::load(tmp.path(), Split::Train).unwrap_err()
}

#[test]
fn idx_wrong_magic() {
    let mut images = idx_images(1, 2, 2, &[0; 4]);
    images[2] = 0x0d; // float data
    let err = idx_error(&images, &idx_labels(&[1]));
    assert!(
        matches!(err, DataError::BadMagic { found: 0x0d03, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("train-images-idx3-ubyte"), "{err}");
    // Labels given where images are expected.
    let err = idx_error(&idx_labels(&[1]), &idx_labels(&[1]));
    assert!(
        matches!(
            err,
            DataError::BadMagic {
                expected: 0x803,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn idx_truncated_header_and_data() {
    let err = idx_error(&[0, 0, 8], &idx_labels(&[1]));
    assert!(
        matches!(
            err,
            DataError::Truncated {
                expected: 4,
                found: 3,
                ..
            }
        ),
        "{err}"
    );
    let err = idx_error(&idx_images(1, 2, 2, &[])[..10], &idx_labels(&[1]));
    assert!(
        matches!(
            err,
            DataError::Truncated {
                expected: 16,
                found: 10,
                ..
            }
        ),
        "{err}"
    );
    let err = idx_error(&[], &idx_labels(&[1]));
    assert!(
        matches!(err, DataError::Truncated { found: 0, .. }),
        "{err}"
    );
}

#[test]
fn idx_header_claims_more_images_than_the_file_holds() {
    let err = idx_error(&idx_images(5, 2, 2, &[0; 12]), &idx_labels(&[1; 5]));
    assert!(
        matches!(
            err,
            DataError::Truncated {
                expected: 36,
                found: 28,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("truncated"), "{err}");
    // A hostile header must not overflow.
    let err = idx_error(
        &idx_images(u32::MAX, u32::MAX, u32::MAX, &[0; 4]),
        &idx_labels(&[1]),
    );
    assert!(matches!(err, DataError::Memory(_)), "{err}");
    assert!(
        err.to_string().contains(
            "its header declares 4294967295x4294967295x4294967295 bytes of IDX images, each read and then held as a 4-byte value) needs"
        ),
        "{err}"
    );
}

#[test]
fn idx_trailing_bytes_and_count_mismatch() {
    let err = idx_error(&idx_images(1, 2, 2, &[0; 5]), &idx_labels(&[1]));
    assert!(
        matches!(
            err,
            DataError::TooLong {
                expected: 20,
                gzipped: false,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .ends_with("is too long: its header declares 1x2x2 bytes of IDX images, 20 bytes in all, but it holds more"),
        "{err}"
    );
    let err = idx_error(&idx_images(2, 2, 2, &[0; 8]), &idx_labels(&[1, 2, 3]));
    assert!(
        matches!(
            err,
            DataError::CountMismatch {
                n_images: 2,
                n_labels: 3,
                ..
            }
        ),
        "{err}"
    );
}

/// `err` is a label out of range: `label` of `classes` (at `index`, when
/// given).
fn assert_label_out_of_range(err: &DataError, index: Option<usize>, label: u32, classes: usize) {
    match err {
        DataError::LabelOutOfRange {
            index: i,
            label: l,
            classes: c,
            ..
        } => assert!(
            (index.is_none() || index == Some(*i)) && *l == label && *c == classes,
            "{err}"
        ),
        _ => panic!("not a label out of range: {err}"),
    }
}

#[test]
fn idx_label_out_of_range() {
    let err = idx_error(&idx_images(2, 2, 2, &[0; 8]), &idx_labels(&[1, 10]));
    assert_label_out_of_range(&err, Some(1), 10, 10);
    assert!(err.to_string().contains("train-labels-idx1-ubyte"), "{err}");
}

#[test]
fn idx_corrupt_gzip() {
    let mut gz = gzip(&idx_images(1, 2, 2, &[0; 4]));
    gz.truncate(gz.len() / 2);
    let err = idx_error(&gz, &idx_labels(&[1]));
    assert!(matches!(err, DataError::Io { .. }), "{err}");
}

#[test]
fn idx_missing_labels() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        &tmp.path().join("train-images-idx3-ubyte"),
        &idx_images(1, 2, 2, &[0; 4]),
    );
    let err = data::load(tmp.path(), Split::Train).unwrap_err();
    assert!(matches!(err, DataError::MissingFile { .. }), "{err}");
    assert!(err.to_string().contains("train-labels-idx1-ubyte"), "{err}");
    let err = data::load(tmp.path(), Split::Test).unwrap_err();
    assert!(err.to_string().contains("t10k-images-idx3-ubyte"), "{err}");
}

const FASHION: &str = "/usr/share/datasets/fashion-mnist";

#[test]
fn idx_real_fashion_mnist() {
    let dir = Path::new(FASHION);
    assert!(
        dir.is_dir(),
        "{FASHION} is missing: apt-get install dataset-fashion-mnist (scripts/test.sh does)"
    );
    let start = std::time::Instant::now();
    let train = data::load(dir, Split::Train).unwrap();
    let test = data::load(dir, Split::Test).unwrap();
    eprintln!("Fashion-MNIST train+test loaded in {:.2?}", start.elapsed());
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    assert_eq!(train.shape, runtime::plan::Shape::new(1, 28, 28));
    assert_eq!(train.images.len(), 60_000 * 784);
    assert_eq!(train.class_names[9], "Ankle boot");
    assert!(train.labels.iter().chain(&test.labels).all(|&l| l < 10));
    // Fashion-MNIST is balanced: 6000 and 1000 images per class.
    assert_eq!(train.class_counts(), vec![6000; 10]);
    assert_eq!(test.class_counts(), vec![1000; 10]);
    assert!(train.images.iter().all(|&x| (0.0..=1.0).contains(&x)));
    let mean = train.images.iter().map(|&x| f64::from(x)).sum::<f64>() / train.images.len() as f64;
    assert!((0.2..0.4).contains(&mean), "mean pixel {mean}");
}

// ---------------------------------------------------------------- CIFAR

/// A CIFAR record whose channel `c` plane is filled with `base + c`.
fn cifar_record(labels: &[u8], base: u8) -> Vec<u8> {
    let mut record = labels.to_vec();
    for channel in 0..3u8 {
        record.extend(std::iter::repeat_n(base + channel, 1024));
    }
    record
}

fn good_cifar10(dir: &Path) {
    for batch in 1..=5u8 {
        let mut bytes = cifar_record(&[batch], 10 * batch);
        bytes.extend(cifar_record(&[9], 0));
        write(&dir.join(format!("data_batch_{batch}.bin")), &bytes);
    }
    write(&dir.join("test_batch.bin"), &cifar_record(&[4], 100));
    write(
        &dir.join("batches.meta.txt"),
        b"plane\ncar\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n",
    );
}

#[test]
fn cifar10_reads_batches_channels_last() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-10-batches-bin");
    good_cifar10(&dir);
    // The parent folder resolves to the archive folder.
    assert_eq!(
        data::detect(tmp.path()).unwrap(),
        (Format::Cifar10, dir.clone())
    );
    let train = data::load(tmp.path(), Split::Train).unwrap();
    assert_eq!(train.len(), 10);
    assert_eq!(train.shape, cifar::SHAPE);
    assert_eq!(train.labels, vec![1, 9, 2, 9, 3, 9, 4, 9, 5, 9]);
    assert_eq!(train.class_names[1], "car");
    // Image 0: planes 10, 11, 12 -> every pixel is (10, 11, 12).
    let image = train.image(0);
    for pixel in image.chunks_exact(3) {
        assert_eq!(pixel, &[10.0 / 255.0, 11.0 / 255.0, 12.0 / 255.0]);
    }
    let test = data::load(&dir, Split::Test).unwrap();
    assert_eq!(test.labels, vec![4]);
    let limited = data::load_limited(&dir, Split::Train, Some(3)).unwrap();
    assert_eq!(limited.labels, vec![1, 9, 2]);
}

#[test]
fn cifar10_default_names_without_meta() {
    let tmp = tempfile::tempdir().unwrap();
    good_cifar10(tmp.path());
    std::fs::remove_file(tmp.path().join("batches.meta.txt")).unwrap();
    let test = data::load(tmp.path(), Split::Test).unwrap();
    assert_eq!(
        test.class_names,
        cifar::CIFAR10_CLASSES.map(String::from).to_vec()
    );
}

#[test]
fn cifar10_errors() {
    // Missing batch.
    let tmp = tempfile::tempdir().unwrap();
    good_cifar10(tmp.path());
    std::fs::remove_file(tmp.path().join("data_batch_3.bin")).unwrap();
    let err = data::load(tmp.path(), Split::Train).unwrap_err();
    assert!(matches!(err, DataError::MissingFile { .. }), "{err}");
    assert!(err.to_string().contains("data_batch_3.bin"), "{err}");

    // Truncated record.
    let tmp = tempfile::tempdir().unwrap();
    good_cifar10(tmp.path());
    let mut bytes = cifar_record(&[1], 0);
    bytes.truncate(3000);
    write(&tmp.path().join("test_batch.bin"), &bytes);
    let err = data::load(tmp.path(), Split::Test).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::Truncated {
                expected: 3073,
                found: 3000,
                ..
            }
        ),
        "{err}"
    );

    // Empty file.
    write(&tmp.path().join("test_batch.bin"), &[]);
    let err = data::load(tmp.path(), Split::Test).unwrap_err();
    assert!(
        matches!(err, DataError::Truncated { found: 0, .. }),
        "{err}"
    );

    // Label out of range.
    let mut bytes = cifar_record(&[1], 0);
    bytes.extend(cifar_record(&[10], 0));
    write(&tmp.path().join("test_batch.bin"), &bytes);
    let err = data::load(tmp.path(), Split::Test).unwrap_err();
    assert_label_out_of_range(&err, Some(1), 10, 10);
    assert!(err.to_string().contains("test_batch.bin"), "{err}");

    // Wrong number of class names.
    write(&tmp.path().join("test_batch.bin"), &cifar_record(&[1], 0));
    write(&tmp.path().join("batches.meta.txt"), b"a\nb\n");
    let err = data::load(tmp.path(), Split::Test).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::ClassNames {
                expected: 10,
                found: 2,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn cifar100_uses_fine_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-100-binary");
    let mut bytes = cifar_record(&[19, 99], 0);
    bytes.extend(cifar_record(&[0, 42], 1));
    write(&dir.join("train.bin"), &bytes);
    write(&dir.join("test.bin"), &cifar_record(&[3, 7], 2));
    assert_eq!(data::detect(tmp.path()).unwrap().0, Format::Cifar100);
    let train = data::load(tmp.path(), Split::Train).unwrap();
    assert_eq!(train.labels, vec![99, 42]);
    assert_eq!(train.classes, 100);
    assert_eq!(train.class_names[99], "worm");
    assert_eq!(train.class_names[42], "leopard");
    assert_eq!(train.image(1)[..3], [1.0 / 255.0, 2.0 / 255.0, 3.0 / 255.0]);
    let test = data::load(tmp.path(), Split::Test).unwrap();
    assert_eq!(test.labels, vec![7]);

    let names: String = (0..100).map(|i| format!("class{i}\n")).collect();
    write(&dir.join("fine_label_names.txt"), names.as_bytes());
    let test = data::load(tmp.path(), Split::Test).unwrap();
    assert_eq!(test.class_names[7], "class7");
}

#[test]
fn cifar100_errors() {
    let tmp = tempfile::tempdir().unwrap();
    // Coarse label out of range.
    write(&tmp.path().join("train.bin"), &cifar_record(&[20, 5], 0));
    let err = data::load(tmp.path(), Split::Train).unwrap_err();
    assert_label_out_of_range(&err, None, 20, 20);
    // Fine label out of range.
    write(&tmp.path().join("train.bin"), &cifar_record(&[2, 100], 0));
    let err = data::load(tmp.path(), Split::Train).unwrap_err();
    assert_label_out_of_range(&err, None, 100, 100);
    // A CIFAR-10 record in a CIFAR-100 file has the wrong length.
    write(&tmp.path().join("train.bin"), &cifar_record(&[2], 0));
    let err = data::load(tmp.path(), Split::Train).unwrap_err();
    assert!(
        matches!(err, DataError::Truncated { expected: 3074, .. }),
        "{err}"
    );
    // Missing split.
    let err = data::load(tmp.path(), Split::Test).unwrap_err();
    assert!(err.to_string().contains("test.bin"), "{err}");
}

#[test]
fn cifar100_class_names_count_is_one_hundred() {
    assert_eq!(cifar::CIFAR100_CLASSES.len(), 100);
    let mut sorted = cifar::CIFAR100_CLASSES.to_vec();
    sorted.sort_unstable();
    assert_eq!(sorted, cifar::CIFAR100_CLASSES.to_vec());
}

// ---------------------------------------------------------------- image folder

fn save_rgb(path: &Path, width: u32, height: u32, value: [u8; 3]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    image::RgbImage::from_pixel(width, height, image::Rgb(value))
        .save(path)
        .unwrap();
}

fn save_gray(path: &Path, width: u32, height: u32, value: u8) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    image::GrayImage::from_pixel(width, height, image::Luma([value]))
        .save(path)
        .unwrap();
}

/// Classes `cat` (2 images) and `ant` (3 images), 4x3 PNGs.
fn good_folder(root: &Path) {
    save_rgb(&root.join("train/cat/b.png"), 4, 3, [200, 0, 0]);
    save_rgb(&root.join("train/cat/a.png"), 4, 3, [100, 0, 0]);
    save_rgb(&root.join("train/ant/1.png"), 4, 3, [0, 10, 0]);
    save_rgb(&root.join("train/ant/2.PNG"), 4, 3, [0, 20, 0]);
    save_rgb(&root.join("train/ant/3.png"), 4, 3, [0, 30, 0]);
    write(&root.join("train/ant/notes.txt"), b"not an image");
    save_rgb(&root.join("test/cat/x.png"), 4, 3, [0, 0, 50]);
}

#[test]
fn folder_reads_classes_in_turn() {
    let tmp = tempfile::tempdir().unwrap();
    good_folder(tmp.path());
    assert_eq!(data::detect(tmp.path()).unwrap().0, Format::ImageFolder);
    let train = data::load(tmp.path(), Split::Train).unwrap();
    assert_eq!(train.class_names, vec!["ant", "cat"]);
    assert_eq!(train.shape, runtime::plan::Shape::new(3, 3, 4));
    // ant/1, cat/a, ant/2, cat/b, ant/3
    assert_eq!(train.labels, vec![0, 1, 0, 1, 0]);
    let firsts: Vec<[f32; 3]> = (0..train.len())
        .map(|i| train.image(i)[..3].try_into().unwrap())
        .collect();
    let expect = |r: u8, g: u8| [f32::from(r) / 255.0, f32::from(g) / 255.0, 0.0];
    assert_eq!(
        firsts,
        vec![
            expect(0, 10),
            expect(100, 0),
            expect(0, 20),
            expect(200, 0),
            expect(0, 30)
        ]
    );
    // The test split keeps the training labels: `cat` is 1.
    let test = data::load(tmp.path(), Split::Test).unwrap();
    assert_eq!(test.labels, vec![1]);
    assert_eq!(test.classes, 2);
    let limited = data::load_limited(tmp.path(), Split::Train, Some(2)).unwrap();
    assert_eq!(limited.labels, vec![0, 1]);
    let none = data::load_limited(tmp.path(), Split::Train, Some(0)).unwrap();
    assert!(none.is_empty());
    assert_eq!(none.shape, train.shape);
}

#[test]
fn folder_reads_jpeg_and_grey() {
    let tmp = tempfile::tempdir().unwrap();
    save_rgb(&tmp.path().join("train/a/1.jpg"), 8, 8, [255, 255, 255]);
    save_gray(&tmp.path().join("train/b/1.jpeg"), 8, 8, 0);
    let train = data::load(tmp.path(), Split::Train).unwrap();
    assert_eq!(train.shape.c, 3);
    assert!(train.image(0).iter().all(|&x| x > 0.95));
    assert!(train.image(1).iter().all(|&x| x < 0.05));

    // All grey: one channel.
    let tmp = tempfile::tempdir().unwrap();
    save_gray(&tmp.path().join("train/a/1.png"), 5, 6, 128);
    let train = data::load(tmp.path(), Split::Train).unwrap();
    assert_eq!(train.shape, runtime::plan::Shape::new(1, 6, 5));
    let (shape, values) = folder::load_image(&tmp.path().join("train/a/1.png")).unwrap();
    assert_eq!(shape, train.shape);
    assert_eq!(values, train.images);
}

#[test]
fn folder_inconsistent_sizes() {
    let tmp = tempfile::tempdir().unwrap();
    good_folder(tmp.path());
    save_rgb(&tmp.path().join("train/cat/c.png"), 5, 3, [0, 0, 0]);
    let err = data::load(tmp.path(), Split::Train).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::SizeMismatch {
                expected_w: 4,
                found_w: 5,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("c.png"), "{err}");
}

#[test]
fn folder_empty_class_and_no_classes() {
    let tmp = tempfile::tempdir().unwrap();
    good_folder(tmp.path());
    std::fs::create_dir_all(tmp.path().join("train/dog")).unwrap();
    write(&tmp.path().join("train/dog/readme.md"), b"no images");
    let err = data::load(tmp.path(), Split::Train).unwrap_err();
    assert!(matches!(err, DataError::EmptyClass { .. }), "{err}");
    assert!(err.to_string().contains("dog"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("train")).unwrap();
    let err = data::load(tmp.path(), Split::Train).unwrap_err();
    assert!(matches!(err, DataError::NoClasses { .. }), "{err}");
}

#[test]
fn folder_missing_split_and_unknown_class() {
    let tmp = tempfile::tempdir().unwrap();
    good_folder(tmp.path());
    std::fs::remove_dir_all(tmp.path().join("test")).unwrap();
    let err = data::load(tmp.path(), Split::Test).unwrap_err();
    assert!(matches!(err, DataError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("test"), "{err}");

    save_rgb(&tmp.path().join("test/zebra/1.png"), 4, 3, [0, 0, 0]);
    let err = data::load(tmp.path(), Split::Test).unwrap_err();
    assert!(matches!(err, DataError::UnknownClass { .. }), "{err}");
    assert!(err.to_string().contains("zebra"), "{err}");
}

#[test]
fn folder_undecodable_image() {
    let tmp = tempfile::tempdir().unwrap();
    good_folder(tmp.path());
    write(
        &tmp.path().join("train/cat/broken.jpg"),
        b"\xff\xd8\xff garbage",
    );
    let err = data::load(tmp.path(), Split::Train).unwrap_err();
    assert!(matches!(err, DataError::Decode { .. }), "{err}");
    assert!(err.to_string().contains("broken.jpg"), "{err}");
}

// ---------------------------------------------------------------- detection

#[test]
fn detect_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let err = data::load(&tmp.path().join("nowhere"), Split::Train).unwrap_err();
    assert!(matches!(err, DataError::NotFound { .. }), "{err}");
    write(&tmp.path().join("file.bin"), b"x");
    let err = data::load(&tmp.path().join("file.bin"), Split::Train).unwrap_err();
    assert!(matches!(err, DataError::UnknownFormat { .. }), "{err}");
    assert!(err.to_string().contains(".tar.gz"), "{err}");
    write(&tmp.path().join("data.csv"), b"1,2,3");
    let err = data::load(tmp.path(), Split::Train).unwrap_err();
    assert!(matches!(err, DataError::UnknownFormat { .. }), "{err}");
    assert!(!err.to_string().ends_with('.'), "{err}");
}

// ---------------------------------------------------------------- archives

/// Packs the folder `dir` into the archive `out` (gzipped unless it ends in
/// `.tar`), its files under `prefix` (`"."` for none).
fn pack(dir: &Path, prefix: &str, out: &Path) {
    let file = std::fs::File::create(out).unwrap();
    if out.extension().is_some_and(|ext| ext == "tar") {
        let mut builder = tar::Builder::new(file);
        builder.append_dir_all(prefix, dir).unwrap();
        builder.into_inner().unwrap();
    } else {
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        builder.append_dir_all(prefix, dir).unwrap();
        builder.into_inner().unwrap().finish().unwrap();
    }
}

/// Every split and a limit of the data set at `dir` read unpacked and from
/// `archive` are equal.
fn assert_same_data(dir: &Path, archive: &Path, format: Format) {
    assert_eq!(
        data::detect(archive).unwrap(),
        (format, archive.to_path_buf())
    );
    for split in [Split::Train, Split::Test] {
        assert_eq!(
            data::load(archive, split).unwrap(),
            data::load(dir, split).unwrap(),
            "{split} of {}",
            archive.display()
        );
    }
    assert_eq!(
        data::load_limited(archive, Split::Train, Some(2)).unwrap(),
        data::load_limited(dir, Split::Train, Some(2)).unwrap()
    );
}

#[test]
fn archives_hold_the_same_image_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("set");
    good_folder(&dir);
    // Classes whose names sort differently as strings and as path components.
    save_rgb(&dir.join("train/ant-b/1.png"), 4, 3, [7, 7, 7]);
    save_rgb(&dir.join("train/ant/10.png"), 4, 3, [1, 1, 1]);
    for (prefix, name) in [
        (".", "set.tar.gz"),
        ("set", "set.tgz"),
        ("deep/set", "set.tar"),
    ] {
        let archive = tmp.path().join(name);
        pack(&dir, prefix, &archive);
        assert_same_data(&dir, &archive, Format::ImageFolder);
    }
}

#[test]
fn archives_hold_the_same_cifar_binaries() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-10-batches-bin");
    good_cifar10(&dir);
    let archive = tmp.path().join("cifar-10-binary.tar.gz");
    pack(&dir, "cifar-10-batches-bin", &archive);
    assert_same_data(&dir, &archive, Format::Cifar10);

    let dir = tmp.path().join("cifar-100-binary");
    write(&dir.join("train.bin"), &cifar_record(&[19, 99], 0));
    write(&dir.join("test.bin"), &cifar_record(&[3, 7], 2));
    let archive = tmp.path().join("cifar-100-binary.tar.gz");
    pack(&dir, "cifar-100-binary", &archive);
    assert_same_data(&dir, &archive, Format::Cifar100);
}

#[test]
fn archive_errors_name_the_archive_and_member() {
    let tmp = tempfile::tempdir().unwrap();
    // No data set inside: says what it holds.
    let dir = tmp.path().join("docs");
    write(&dir.join("README"), b"hello");
    let archive = tmp.path().join("docs.tar.gz");
    pack(&dir, ".", &archive);
    let err = data::load(&archive, Split::Train).unwrap_err();
    assert!(matches!(err, DataError::UnknownFormat { .. }), "{err}");
    assert!(err.to_string().contains("1 files, first: README"), "{err}");

    // A missing batch is named inside the archive.
    let dir = tmp.path().join("cifar-10-batches-bin");
    good_cifar10(&dir);
    std::fs::remove_file(dir.join("data_batch_3.bin")).unwrap();
    let archive = tmp.path().join("partial.tar.gz");
    pack(&dir, "cifar-10-batches-bin", &archive);
    let err = data::load_limited(&archive, Split::Train, Some(1)).unwrap_err();
    assert!(matches!(err, DataError::MissingFile { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("partial.tar.gz/cifar-10-batches-bin has no CIFAR-10 train batch (looked for data_batch_3.bin)"),
        "{err}"
    );

    // A truncated download fails, naming the archive.
    let bytes = std::fs::read(&archive).unwrap();
    let cut = tmp.path().join("cut.tar.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = data::load(&cut, Split::Train).unwrap_err();
    assert!(err.to_string().contains("cut.tar.gz"), "{err}");
    // So does a file that is no archive at all.
    let junk = tmp.path().join("junk.tgz");
    std::fs::write(&junk, vec![0x1f, 0x8b, 1, 2, 3]).unwrap();
    let err = data::load(&junk, Split::Train).unwrap_err();
    assert!(matches!(err, DataError::Archive { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot read archive {}", junk.display())),
        "{err}"
    );

    // A member whose header declares more than memory holds is refused
    // before a byte of it is read.
    let mut header = tar::Header::new_gnu();
    header
        .set_path("cifar-10-batches-bin/data_batch_1.bin")
        .unwrap();
    header.set_size(1 << 44);
    header.set_cksum();
    let huge = tmp.path().join("huge.tar.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(header.as_bytes()).unwrap();
    std::fs::write(&huge, gz.finish().unwrap()).unwrap();
    let err = data::load(&huge, Split::Train).unwrap_err();
    assert!(matches!(err, DataError::Memory(_)), "{err}");
    assert!(err.to_string().contains("data_batch_1.bin"), "{err}");
}

// ---------------------------------------------------------------- real CIFAR-10 JPEG

/// The unextracted JPEG archive and an official binary archive (built here
/// from the same images in the official layout: `cifar-10-batches-bin/`,
/// five training batches of 10,000 records and one test batch, each record a
/// label byte and the image plane by plane) read as the same images and
/// labels as the unpacked folder.
#[test]
fn archives_real_cifar10_equal_the_folder() {
    let (Some(dir), Some(archive)) = (real_cifar::jpeg_dir(), real_cifar::jpeg_archive()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let binary = tmp.path().join("cifar-10-binary.tar.gz");
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&binary).unwrap(),
        flate2::Compression::fast(),
    );
    let mut builder = tar::Builder::new(gz);
    let mut append = |name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, format!("cifar-10-batches-bin/{name}"), bytes)
            .unwrap();
    };
    let mut folder_splits = Vec::new();
    for split in [Split::Train, Split::Test] {
        let start = std::time::Instant::now();
        let from_archive = data::load(&archive, split).unwrap();
        eprintln!(
            "{split}: {} images from {} in {:.2?}",
            from_archive.len(),
            archive.display(),
            start.elapsed()
        );
        let folder = data::load(&dir, split).unwrap();
        assert_eq!(
            from_archive, folder,
            "{split}: JPEG archive and folder differ"
        );
        let records: Vec<Vec<u8>> = (0..folder.len())
            .map(|i| {
                let mut record = vec![folder.labels[i] as u8];
                for channel in 0..3 {
                    record.extend(
                        folder.image(i)[channel..]
                            .iter()
                            .step_by(3)
                            .map(|&x| (x * 255.0).round() as u8),
                    );
                }
                record
            })
            .collect();
        match split {
            Split::Train => {
                for (batch, chunk) in records.chunks(10_000).enumerate() {
                    append(&format!("data_batch_{}.bin", batch + 1), &chunk.concat());
                }
            }
            Split::Test => append("test_batch.bin", &records.concat()),
        }
        folder_splits.push(folder);
    }
    append(
        "batches.meta.txt",
        cifar::CIFAR10_CLASSES.join("\n").as_bytes(),
    );
    builder.into_inner().unwrap().finish().unwrap();
    for (split, folder) in [Split::Train, Split::Test].into_iter().zip(folder_splits) {
        let start = std::time::Instant::now();
        let from_binary = data::load(&binary, split).unwrap();
        eprintln!(
            "{split}: {} images from the binary archive in {:.2?}",
            from_binary.len(),
            start.elapsed()
        );
        assert_eq!(
            from_binary, folder,
            "{split}: binary archive and folder differ"
        );
    }
}

#[test]
fn folder_real_cifar10_jpeg() {
    let Some(dir) = real_cifar::jpeg_dir() else {
        return;
    };
    let start = std::time::Instant::now();
    let train = data::load(&dir, Split::Train).unwrap();
    eprintln!(
        "CIFAR-10 JPEG train (50,000 images) loaded in {:.2?}",
        start.elapsed()
    );
    let test = data::load(&dir, Split::Test).unwrap();
    assert_eq!((train.len(), test.len()), (50_000, 10_000));
    assert_eq!(train.shape, cifar::SHAPE);
    assert_eq!(
        train.class_names,
        cifar::CIFAR10_CLASSES.map(String::from).to_vec()
    );
    assert_eq!(train.class_counts(), vec![5000; 10]);
    assert_eq!(test.class_counts(), vec![1000; 10]);
    // Interleaved order: the first ten images are one of each class.
    assert_eq!(train.labels[..10], (0..10).collect::<Vec<u32>>()[..]);
    // Mean RGB near the data set README's (125.27, 122.93, 113.86) / 255; JPEG
    // decoders differ in colour conversion by a few tenths.
    let mut sums = [0.0f64; 3];
    for pixel in train.images.chunks_exact(3) {
        for (sum, &x) in sums.iter_mut().zip(pixel) {
            *sum += f64::from(x);
        }
    }
    let pixels = (train.images.len() / 3) as f64;
    let mean: Vec<f64> = sums.iter().map(|s| s / pixels * 255.0).collect();
    for (got, want) in mean.iter().zip([125.27, 122.93, 113.86]) {
        assert!((got - want).abs() < 0.6, "mean RGB {mean:?}");
    }
}
