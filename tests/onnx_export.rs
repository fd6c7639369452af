//! `allcnnc export --format onnx` against an independent ONNX runtime
//! (tract): for each family of the bundled models, and for test models with
//! every layer option (average pooling with padding and odd sizes, paddings
//! not smaller than the kernel, asymmetric `same` padding, leaky ReLU, no
//! bias, floor rounding), random He-normal weights and a preprocessing
//! fitted on real images make a checkpoint; the exported model's
//! probabilities on 100 real test images equal the runtime's (the CPU
//! backend's forward, which `predict` runs) within 1e-5.
//!
//! Needs Fashion-MNIST (`/usr/share/datasets/fashion-mnist`, Debian's
//! `dataset-fashion-mnist`, which `scripts/test.sh` installs; without it the
//! tests fail, saying how to get it) and the CIFAR-10 JPEG folder at
//! `data/cifar10-jpeg`, which `scripts/test.sh` unpacks from the archive
//! beside the repository where there is one; elsewhere the colour cases are
//! skips counted and named in the summary, as in `data_readers`.

use allcnnc::driver::{self, Device, Model};
use allcnnc::onnx::export::{self, ExportError};
use allcnnc::onnx::proto::ModelProto;
use runtime::data::{self, Dataset, Preprocess, PreprocessKind, Split};
use runtime::train::checkpoint::Checkpoint;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;
use tract_onnx::prelude::*;

const FASHION: &str = "/usr/share/datasets/fashion-mnist";
/// Test images per family.
const IMAGES: usize = 100;
/// Training images the preprocessing is fitted on.
const FIT_IMAGES: usize = 2000;
/// The largest difference of a probability allowed.
const TOLERANCE: f32 = 1e-5;

mod random_checkpoint;
mod real_cifar;
mod skip;

use random_checkpoint::random_checkpoint;

fn fashion_dir() -> PathBuf {
    let dir = PathBuf::from(FASHION);
    assert!(
        dir.join("t10k-images-idx3-ubyte.gz").is_file(),
        "{FASHION} is missing: apt-get install dataset-fashion-mnist (scripts/test.sh does)"
    );
    dir
}

/// Real images: test images to compare on, training images to fit on.
struct Images {
    test: Dataset,
    train: Dataset,
}

fn load(dir: &Path) -> Images {
    Images {
        test: data::load_limited(dir, Split::Test, Some(IMAGES)).unwrap(),
        train: data::load_limited(dir, Split::Train, Some(FIT_IMAGES)).unwrap(),
    }
}

fn cifar() -> Option<&'static Images> {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    let dir = real_cifar::jpeg_dir()?;
    Some(IMAGES.get_or_init(|| load(&dir)))
}

fn fashion() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| load(&fashion_dir()))
}

/// The preprocessing of `kind` fitted on `images`' training images, once
/// per data set and kind (GCN + ZCA on CIFAR-10 takes seconds).
fn fitted(images: &'static Images, kind: PreprocessKind) -> Preprocess {
    type Cache = Vec<(usize, PreprocessKind, Preprocess)>;
    static FITTED: OnceLock<std::sync::Mutex<Cache>> = OnceLock::new();
    let key = images as *const Images as usize;
    let cache = FITTED.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap();
    if let Some((_, _, p)) = cache.iter().find(|(k, c, _)| *k == key && *c == kind) {
        return p.clone();
    }
    let start = Instant::now();
    let preprocess = Preprocess::fit(kind, &images.train).unwrap();
    eprintln!(
        "fitted {} on {} images of {} in {:.1?}",
        kind.name(),
        images.train.len(),
        images.train.shape,
        start.elapsed()
    );
    cache.push((key, kind, preprocess.clone()));
    preprocess
}

/// [`random_checkpoint`] with the data set's class names, saved in `dir`.
fn checkpoint(model: &Model, dir: &Path, preprocess: Preprocess, images: &Images) -> PathBuf {
    let checkpoint = random_checkpoint(model, Some(preprocess), images.test.class_names.clone());
    let path = dir.join(format!("{}.safetensors", model.plan.name));
    checkpoint.save(&model.plan, &path).unwrap();
    path
}

/// `N x H x W x C` images as `N x C x H x W`.
fn to_nchw(images: &Dataset) -> Tensor {
    let (n, s) = (images.len(), images.shape);
    let hwc =
        tract_ndarray::Array4::from_shape_vec((n, s.h, s.w, s.c), images.images.clone()).unwrap();
    let nchw = hwc
        .permuted_axes([0, 3, 1, 2])
        .as_standard_layout()
        .to_owned();
    nchw.into_tensor()
}

/// The probabilities of `bytes` (an ONNX model) on `images`, by tract.
fn run_tract(bytes: &[u8], images: &Dataset) -> Vec<f32> {
    let model = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let out = model.run(tvec!(to_nchw(images).into())).unwrap();
    let probs = out[0].to_plain_array_view::<f32>().unwrap();
    assert_eq!(probs.shape(), &[images.len(), probs.shape()[1]]);
    probs.iter().copied().collect()
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// Exports `model` with a fresh checkpoint and compares tract's
/// probabilities with the runtime's on the test images.
fn check_family(family: &str, model: Model, images: &'static Images, kind: PreprocessKind) {
    let start = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let preprocess = fitted(images, kind);
    let weights = checkpoint(&model, dir.path(), preprocess.clone(), images);

    // What `predict` does: the checkpoint through the driver onto the CPU,
    // the images through the checkpoint's preprocessing, then `infer`.
    let (mut placed, loaded) =
        driver::load_trained(&model, &weights, Device::Cpu, Default::default()).unwrap();
    let n = images.test.len();
    let mut pixels = images.test.images.clone();
    loaded
        .preprocess
        .as_ref()
        .unwrap()
        .apply(&mut pixels, n)
        .unwrap();
    let expected = placed.exec.infer(&pixels, n).unwrap();

    let proto = export::export(&model, &loaded).unwrap();
    let bytes = proto.to_bytes();
    let found = run_tract(&bytes, &images.test);
    assert_eq!(found.len(), expected.len());
    let classes = model.plan.classes;
    let max_diff = found
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let agree = found
        .chunks(classes)
        .zip(expected.chunks(classes))
        .filter(|(a, b)| argmax(a) == argmax(b))
        .count();
    // With random weights the probabilities are far from uniform (so the
    // comparison means something): the mean largest one says how far.
    let mean_top = expected
        .chunks(classes)
        .map(|row| row[argmax(row)])
        .sum::<f32>()
        / n as f32;
    println!(
        "{family} ({}, {}): {n} images, max |p_onnx - p_allcnnc| = {max_diff:.3e}, top-1 agreement {agree}/{n} (mean top-1 probability {mean_top:.3}), {} bytes, {:.1?}",
        model.plan.name,
        kind.name(),
        bytes.len(),
        start.elapsed()
    );
    assert!(
        max_diff <= TOLERANCE,
        "{family}: the ONNX model's probabilities differ by up to {max_diff:e}"
    );
    check_metadata(&proto, &model, &loaded);
}

/// Metadata and names: the class names and model hash, the layer names on
/// nodes and initializers, a symbolic batch dimension.
fn check_metadata(proto: &ModelProto, model: &Model, checkpoint: &Checkpoint) {
    let meta = |key: &str| {
        proto
            .metadata_props
            .iter()
            .find(|entry| entry.key.as_deref() == Some(key))
            .and_then(|entry| entry.value.clone())
            .unwrap_or_else(|| panic!("no metadata `{key}`"))
    };
    assert_eq!(meta("model_hash"), model.plan.model_hash);
    let names: Vec<String> = serde_json::from_str(&meta("class_names")).unwrap();
    assert_eq!(names, checkpoint.class_names);
    assert_eq!(
        meta("preprocessing"),
        checkpoint.preprocess.as_ref().unwrap().kind().name()
    );
    let graph = proto.graph.as_ref().unwrap();
    for spec in model.plan.params() {
        assert!(
            graph
                .initializer
                .iter()
                .any(|t| t.name.as_deref() == Some(&spec.name)),
            "no initializer `{}`",
            spec.name
        );
    }
    // Every layer has its node, dropout too (the identity at inference,
    // kept so that `allcnnc import` gives the model back whole).
    for layer in &model.plan.layers {
        let node = graph
            .node
            .iter()
            .find(|node| node.name.as_deref() == Some(&layer.name));
        let node = node.unwrap_or_else(|| panic!("no node of layer `{}`", layer.name));
        if matches!(layer.op, plan::Op::Dropout { .. }) {
            assert_eq!(node.op_type.as_deref(), Some("Dropout"));
            assert_eq!(node.input.len(), 2, "no training mode: inference");
        }
    }
    // Encoding and decoding give the same message.
    assert_eq!(&ModelProto::from_bytes(&proto.to_bytes()).unwrap(), proto);
}

fn bundled(name: &str) -> Model {
    Model::from_file(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models")
            .join(name),
    )
    .unwrap()
}

#[test]
fn max_pool_models_a_b_c() {
    let Some(images) = cifar() else { return };
    for name in ["model-a.net", "model-b.net", "model-c.net"] {
        check_family("max pool", bundled(name), images, PreprocessKind::GcnZca);
    }
}

#[test]
fn strided_cnn_c() {
    let Some(images) = cifar() else { return };
    check_family(
        "strided",
        bundled("strided-cnn-c.net"),
        images,
        PreprocessKind::GcnZca,
    );
}

#[test]
fn all_cnn_c() {
    let Some(images) = cifar() else { return };
    check_family(
        "all-conv",
        bundled("all-cnn-c.net"),
        images,
        PreprocessKind::GcnZca,
    );
}

#[test]
fn convpool_cnn_c() {
    let Some(images) = cifar() else { return };
    check_family(
        "convpool",
        bundled("convpool-cnn-c.net"),
        images,
        PreprocessKind::GcnZca,
    );
}

#[test]
fn fashion_all_cnn() {
    check_family(
        "fashion",
        bundled("fashion-all-cnn.net"),
        fashion(),
        PreprocessKind::Normalize,
    );
}

/// Every pooling and convolution option on colour images: average pools
/// with padding, odd sizes and Caffe's clipped windows (pool1, pool3),
/// paddings not smaller than the kernel (pool2's max windows wholly in the
/// padding, pool4), floor rounding, an even kernel with `same` padding and
/// stride 2, leaky ReLU, no bias, no activation, dropout.
const EDGES: &str = "
network edges {
    input 3x32x32
    classes 10
    conv 8 3x3 act=leaky(0.1)
    avgpool 3x3 stride=2 pad=1
    conv 12 4x4 stride=2 bias=false
    maxpool 2x2 stride=2 pad=2
    dropout 0.3
    avgpool 3x3 stride=2
    conv 16 2x2 act=none
    avgpool 2x2 stride=1 pad=2 round=down
    maxpool 3x3 stride=2 pad=1x0x1x1 round=down
    conv 10 1x1 act=leaky slope=0.2
    gap
    softmax
}
";

#[test]
fn pooling_and_padding_edges_colour() {
    let model = Model::from_text("edges.net", EDGES).unwrap();
    let Some(images) = cifar() else { return };
    check_family("edges", model, images, PreprocessKind::Normalize);
}

/// Grey images without preprocessing; max pools with Caffe's clipped
/// windows and an asymmetric explicit padding.
const GREY: &str = "
network grey {
    input 1x28x28
    classes 10
    conv 6 5x5 pad=valid
    maxpool 3x3 stride=2
    avgpool 2x2 stride=3 pad=1
    conv 10 3x3 pad=0x1x2x0
    gap
    softmax
}
";

#[test]
fn grey_without_preprocessing() {
    let model = Model::from_text("grey.net", GREY).unwrap();
    check_family("grey", model, fashion(), PreprocessKind::None);
}

/// A model over the size limit is refused, naming the largest tensor.
#[test]
fn too_large_is_an_error_naming_the_tensor() {
    let model = bundled("fashion-all-cnn.net");
    let checkpoint = random_checkpoint(&model, None, Vec::new());
    let err = export::export_within(&model, &checkpoint, 1 << 20).unwrap_err();
    assert!(matches!(err, ExportError::TooLarge { .. }), "{err}");
    let message = err.to_string();
    println!("{message}");
    assert!(message.contains("conv7.weight"), "{message}");
    assert!(message.contains("protobuf"), "{message}");
}

/// `--format safetensors`: the inference weights only, in OIHW under the
/// layer names (transposed back, they are the checkpoint's HWIO weights),
/// the preprocessing's tensors as fitted, the metadata.
#[test]
fn safetensors_export_is_oihw_without_momentum() {
    let model = bundled("fashion-all-cnn.net");
    let images = fashion();
    let mut checkpoint = random_checkpoint(
        &model,
        Some(fitted(images, PreprocessKind::Normalize)),
        images.test.class_names.clone(),
    );
    // Momentum is training state: it must not be exported.
    checkpoint.momentum = checkpoint.params.clone();
    let bytes = allcnnc::pytorch::safetensors(&model.plan, &checkpoint).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let values = |name: &str| -> (Vec<usize>, Vec<f32>) {
        let view = file.tensor(name).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (view.shape().to_vec(), values)
    };
    let specs = model.plan.params();
    for (spec, hwio) in specs.iter().zip(&checkpoint.params) {
        let (shape, found) = values(&spec.name);
        if let &[kh, kw, c_in, c_out] = spec.dims.as_slice() {
            assert_eq!(shape, [c_out, c_in, kh, kw], "{}", spec.name);
            let mut back = vec![0.0; found.len()];
            for (index, value) in found.iter().enumerate() {
                let (x, rest) = (index % kw, index / kw);
                let (y, rest) = (rest % kh, rest / kh);
                let (i, o) = (rest % c_in, rest / c_in);
                back[((y * kw + x) * c_in + i) * c_out + o] = *value;
            }
            assert_eq!(&back, hwio, "{} transposed back", spec.name);
        } else {
            assert_eq!((shape, &found), (spec.dims.clone(), hwio), "{}", spec.name);
        }
    }
    let preprocess = checkpoint.preprocess.as_ref().unwrap();
    let fitted_tensors = preprocess.to_tensors_whole();
    for (name, dims, expected) in &fitted_tensors {
        assert_eq!(&values(name), &(dims.clone(), expected.clone()), "{name}");
    }
    assert_eq!(
        file.len(),
        specs.len() + fitted_tensors.len(),
        "no other tensor"
    );
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let metadata = metadata.metadata().clone().unwrap();
    assert_eq!(metadata["model_hash"], model.plan.model_hash);
    assert_eq!(metadata["preprocessing"], "mean-std");
    assert_eq!(metadata["input"], "1x28x28");
    let names: Vec<String> = serde_json::from_str(&metadata["class_names"]).unwrap();
    assert_eq!(names, checkpoint.class_names);
}

/// The command line writes the library's bytes, MODEL.py beside the
/// safetensors, and refuses a checkpoint of another model.
#[test]
fn cli_export_both_formats_and_a_wrong_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let images = fashion();
    let model = bundled("fashion-all-cnn.net");
    let weights = checkpoint(
        &model,
        dir.path(),
        fitted(images, PreprocessKind::Normalize),
        images,
    );
    let net = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fashion-all-cnn.net");
    let export_cli = |format: &str, output: &Path, weights: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_allcnnc"))
            .arg("export")
            .arg(&net)
            .arg("--weights")
            .arg(weights)
            .args(["--format", format, "-o"])
            .arg(output)
            .output()
            .unwrap()
    };
    // An export that must succeed: its standard output.
    let export_ok = |format: &str, output: &Path, weights: &Path| {
        let out = export_cli(format, output, weights);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let onnx = dir.path().join("fashion.onnx");
    let stdout = export_ok("onnx", &onnx, &weights);
    assert!(stdout.contains("opset 18"), "{stdout}");
    let loaded = Checkpoint::load(&model.plan, &weights).unwrap();
    let expected = export::export(&model, &loaded).unwrap().to_bytes();
    assert_eq!(std::fs::read(&onnx).unwrap(), expected);

    let tensors = dir.path().join("fashion.safetensors");
    export_ok("safetensors", &tensors, &weights);
    let script = std::fs::read_to_string(dir.path().join("fashion.py")).unwrap();
    for line in [
        "layers[\"preprocess\"] = MeanStd(1)",
        "layers[\"conv1\"] = nn.Conv2d(1, 64, (3, 3), stride=(1, 1), padding=(1, 1), bias=True)",
        "layers[\"conv9\"] = nn.Conv2d(256, 10, (1, 1), stride=(1, 1), padding=(0, 0), bias=True)",
        "layers[\"softmax\"] = nn.Softmax(dim=1)",
        "def load(path=None):",
    ] {
        assert!(script.contains(line), "MODEL.py lacks {line:?}:\n{script}");
    }

    // Inference weights: the same parameters and preprocessing, no
    // momentum, fewer bytes; they load as a checkpoint of the model.
    let mut training = Checkpoint::load(&model.plan, &weights).unwrap();
    training.momentum = training.params.clone();
    training.progress.epoch = 7;
    let training_path = dir.path().join("training.safetensors");
    training.save(&model.plan, &training_path).unwrap();
    let loaded = Checkpoint::load(&model.plan, &training_path).unwrap();
    let inference = dir.path().join("fashion-weights.safetensors");
    let stdout = export_ok("weights", &inference, &training_path);
    assert!(
        stdout.contains("preprocessing mean-std, no optimizer state"),
        "{stdout}"
    );
    let exported = Checkpoint::load(&model.plan, &inference).unwrap();
    assert!(
        !loaded.momentum.is_empty(),
        "the source has an optimizer state"
    );
    assert!(exported.momentum.is_empty());
    assert_eq!(exported.params, loaded.params);
    assert_eq!(exported.preprocess, loaded.preprocess);
    assert_eq!(exported.class_names, loaded.class_names);
    assert_eq!(exported.progress.epoch, loaded.progress.epoch);
    assert!(
        std::fs::metadata(&inference).unwrap().len()
            < std::fs::metadata(&training_path).unwrap().len()
    );

    // A checkpoint of another model: refused, naming the file.
    let other = bundled("model-a.net");
    let other_weights = dir.path().join("other.safetensors");
    random_checkpoint(&other, None, Vec::new())
        .save(&other.plan, &other_weights)
        .unwrap();
    let out = export_cli("onnx", &dir.path().join("x.onnx"), &other_weights);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("other.safetensors"), "{stderr}");
    assert!(!dir.path().join("x.onnx").exists());
}

/// The generated MODEL.py of a model with every pooling and padding
/// option, as a snapshot (the text is deterministic).
#[test]
fn pytorch_script_snapshot() {
    let model = Model::from_text("edges.net", EDGES).unwrap();
    let checkpoint = random_checkpoint(&model, None, vec!["a".into(), "b \"quoted\"".into()]);
    let script = allcnnc::pytorch::script(&model.plan, &checkpoint, "edges.safetensors");
    insta::assert_snapshot!(script);
}
