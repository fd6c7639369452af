//! `allcnnc import` of Caffe networks (the converter of
//! `src/import/from_caffe.rs`; the reader has its own tests in
//! `tests/caffe_import.rs`).
//!
//! - Caffe's CIFAR-10 example networks ("quick" and "full") and a
//!   Network-in-Network prototxt import with the parameter counts worked
//!   out by hand below; the train/test versions (V1 syntax, data layers,
//!   loss and accuracy) give the same networks as the deploy versions.
//! - A `.caffemodel` written with `prost` (`encode_caffemodel`) from known
//!   weights imports back bit for bit, with the prototxt and alone.
//! - Batch normalisation and Scale fold into the convolution by Caffe's
//!   formulas; what the language lacks is an error at the layer's line.

use allcnnc::diagnostic::{render_plain, Source};
use allcnnc::driver::Model;
use allcnnc::import::caffe::{self, Blob};
use allcnnc::import::from_caffe::{self, CaffeError};
use allcnnc::import::Imported;
use allcnnc::onnx::export::hwio_to_oihw;
use plan::Shape;

mod random_checkpoint;
use random_checkpoint::random_checkpoint;

const DIR: &str = "tests/import/caffe";
const CIFAR: Shape = Shape::new(3, 32, 32);

fn source(name: &str) -> Source {
    let path = format!("{DIR}/{name}");
    Source::new(path.clone(), std::fs::read_to_string(&path).unwrap())
}

fn import(name: &str, input: Option<Shape>, drop: &[&str]) -> Imported {
    let drop: Vec<String> = drop.iter().map(|d| d.to_string()).collect();
    match from_caffe::import(&source(name), None, input, &drop) {
        Ok(imported) => imported,
        Err(CaffeError::Diagnostics(source, d)) => panic!("{}", render_plain(&source, &d)),
        Err(CaffeError::Import(err)) => panic!("{err}"),
    }
}

fn model(imported: &Imported) -> Model {
    imported.model("imported.net").unwrap().0
}

/// Each layer's op and shapes: the network without its names.
fn structure(imported: &Imported) -> Vec<String> {
    model(imported)
        .graph
        .signature()
        .layers
        .iter()
        .map(|l| format!("{:?} {:?} {:?}", l.op, l.in_shape, l.out_shape))
        .collect()
}

fn layers(imported: &Imported) -> Vec<String> {
    model(imported)
        .source
        .text
        .lines()
        .filter(|l| l.starts_with("    ") && l.contains(':'))
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn cifar10_quick() {
    let imported = import("cifar10_quick.prototxt", None, &[]);
    assert_eq!(
        layers(&imported),
        [
            "conv1: conv 32 5x5",
            "pool1: maxpool 3x3 stride=2",
            "conv2: conv 32 5x5",
            "pool2: avgpool 3x3 stride=2",
            "conv3: conv 64 5x5",
            "pool3: avgpool 3x3 stride=2",
            "ip1: conv 64 4x4 pad=valid act=none",
            "ip2: conv 10 1x1 act=none",
            "prob: softmax",
        ]
    );
    // By hand: conv1 3*32*25+32 = 2,432; conv2 32*32*25+32 = 25,632; conv3
    // 32*64*25+64 = 51,264; the maps 32 -> 16 -> 8 -> 4 (Caffe rounds
    // (32-3)/2 up), so ip1 takes 64*4*4 = 1,024 values: 1,024*64+64 =
    // 65,600; ip2 64*10+10 = 650. Sum 145,578.
    assert_eq!(model(&imported).graph.total_params(), 145_578);
    // relu1 follows pool1 in the file: moved before it, and said so.
    assert!(imported
        .header
        .iter()
        .any(|l| l.contains("relu1") && l.contains("pool1")));

    // The V1 train/test file (data layers, loss, accuracy) is the same net.
    let train_test = import("cifar10_quick_train_test.prototxt", Some(CIFAR), &[]);
    assert_eq!(structure(&train_test), structure(&imported));
    assert!(train_test
        .header
        .iter()
        .any(|l| l.contains("SoftmaxWithLoss")));
}

#[test]
fn cifar10_full_needs_its_lrn_dropped_by_name() {
    // LRN is not in the language: an error at the layer's line.
    let err = match from_caffe::import(&source("cifar10_full.prototxt"), None, None, &[]) {
        Err(CaffeError::Diagnostics(source, d)) => render_plain(&source, &d),
        Err(CaffeError::Import(err)) => panic!("{err}"),
        Ok(_) => panic!("LRN imported"),
    };
    assert!(err.contains("layer `norm1` (LRN)"), "{err}");
    assert!(err.contains("--drop"), "{err}");
    let line = std::fs::read_to_string(format!("{DIR}/cifar10_full.prototxt"))
        .unwrap()
        .lines()
        .position(|l| l.contains("\"norm1\""))
        .unwrap();
    // The diagnostic points at the `layer {` line just above the name.
    assert!(err.contains(&format!(":{line}:")), "{err}");

    let imported = import("cifar10_full.prototxt", None, &["LRN"]);
    assert_eq!(
        imported
            .header
            .iter()
            .filter(|l| l.contains("DROPPED") && l.contains("another function"))
            .count(),
        2
    );
    // By hand: conv1 2,432, conv2 25,632, conv3 51,264 as in "quick"; ip1
    // 64*4*4*10+10 = 10,250. Sum 89,578.
    assert_eq!(model(&imported).graph.total_params(), 89_578);
    let train_test = import("cifar10_full_train_test.prototxt", Some(CIFAR), &["lrn"]);
    assert_eq!(structure(&train_test), structure(&imported));
}

#[test]
fn network_in_network() {
    let imported = import("nin_cifar10.prototxt", None, &[]);
    let model = model(&imported);
    // By hand: conv1 3*192*25+192 = 14,592; cccp1 192*160+160 = 30,880;
    // cccp2 160*96+96 = 15,456; conv2 96*192*25+192 = 460,992; cccp3 and
    // cccp4 192*192+192 = 37,056 each; conv3 192*192*9+192 = 331,968;
    // cccp5 37,056; cccp6 192*10+10 = 1,930. Sum 966,986.
    assert_eq!(model.graph.total_params(), 966_986);
    let text = &model.source.text;
    assert!(text.contains("pool3: avgpool 8x8 stride=1"), "{text}");
    assert!(text.contains("drop1: dropout 0.5"), "{text}");
    // And its all-conv variant derives (the paper's question).
    let mut graph = model.graph.clone();
    let rewrite = allcnnc::passes::by_name("allconv").unwrap();
    allcnnc::passes::PassManager::derive(rewrite)
        .run(&mut graph)
        .unwrap();
    println!("all-conv NIN: {} parameters", graph.total_params());
    assert!(graph.total_params() > 966_986);
}

/// The blobs of `imported`'s weights in Caffe's layouts, by layer name.
fn caffe_blobs(model: &Model, params: &[Vec<f32>]) -> Vec<(String, Vec<Blob>)> {
    let mut params = params.iter();
    let mut out = Vec::new();
    for layer in &model.plan.layers {
        if let plan::Op::Conv {
            out_channels,
            window,
            bias,
            ..
        } = &layer.op
        {
            let (o, i) = (*out_channels, layer.in_shape.c);
            let hwio = params.next().unwrap();
            let oihw = hwio_to_oihw(hwio, window.kh, window.kw, i, o);
            // Inner products store `out x in`: the same values.
            let shape = if layer.name.starts_with("ip") {
                vec![o, i * window.kh * window.kw]
            } else {
                vec![o, i, window.kh, window.kw]
            };
            let mut blobs = vec![Blob {
                shape,
                data: oihw,
                legacy: false,
            }];
            if *bias {
                let b = params.next().unwrap();
                blobs.push(Blob {
                    shape: vec![o],
                    data: b.clone(),
                    legacy: false,
                });
            }
            out.push((layer.name.clone(), blobs));
        }
    }
    out
}

#[test]
fn caffemodel_written_with_prost_imports_back_bit_for_bit() {
    let structure = import("cifar10_quick.prototxt", None, &[]);
    let model = model(&structure);
    let known = random_checkpoint(&model, None, Vec::new());

    // The caffemodel: the prototxt's layers with the known weights as blobs.
    let mut net = caffe::parse_prototxt(&source("cifar10_quick.prototxt")).unwrap();
    for (name, blobs) in caffe_blobs(&model, &known.params) {
        let layer = net.layers.iter_mut().find(|l| l.name == name).unwrap();
        layer.blobs = blobs;
    }
    let bytes = caffe::encode_caffemodel(&net);
    println!("caffemodel: {} bytes", bytes.len());

    let with_weights = from_caffe::import(
        &source("cifar10_quick.prototxt"),
        Some(("quick.caffemodel", &bytes)),
        None,
        &[],
    )
    .unwrap_or_else(|_| panic!("import with weights"));
    let alone = from_caffe::import_binary("quick.caffemodel", &bytes, None, &[]).unwrap();
    for imported in [&with_weights, &alone] {
        assert!(imported.has_weights());
        let (back, weights) = imported.model("back.net").unwrap();
        assert_eq!(
            back.graph.signature().layers,
            model.graph.signature().layers
        );
        assert_eq!(weights.params.len(), known.params.len());
        for (a, b) in weights.params.iter().zip(&known.params) {
            assert!(a
                .iter()
                .map(|v| v.to_bits())
                .eq(b.iter().map(|v| v.to_bits())));
        }
    }
}

#[test]
fn batch_norm_and_scale_fold_by_caffes_formulas() {
    let text = r#"
name: "bn"
input: "data"
input_shape { dim: 1 dim: 2 dim: 4 dim: 4 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv"
        batch_norm_param { eps: 0.001 } }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "gap" type: "Pooling" bottom: "conv" top: "gap" pooling_param { pool: AVE global_pooling: true } }
layer { name: "prob" type: "Softmax" bottom: "gap" top: "prob" }
"#;
    let source = Source::new("bn.prototxt", text);
    let mut net = caffe::parse_prototxt(&source).unwrap();
    let weight: Vec<f32> = (0..3 * 2 * 9).map(|i| (i as f32 - 20.0) * 0.05).collect();
    let mean = [0.3f32, -0.6, 1.5];
    let var = [2.0f32, 0.5, 4.0];
    let factor = 2.0f32; // Caffe's running sums are divided by it.
    let gamma = [1.5f32, -0.5, 2.0];
    let beta = [0.1f32, 0.2, -0.3];
    let blob = |shape: Vec<usize>, data: Vec<f32>| Blob {
        shape,
        data,
        legacy: false,
    };
    for layer in &mut net.layers {
        layer.blobs = match layer.name.as_str() {
            "conv" => vec![blob(vec![3, 2, 3, 3], weight.clone())],
            "bn" => vec![
                blob(vec![3], mean.to_vec()),
                blob(vec![3], var.to_vec()),
                blob(vec![1], vec![factor]),
            ],
            "scale" => vec![blob(vec![3], gamma.to_vec()), blob(vec![3], beta.to_vec())],
            _ => Vec::new(),
        };
    }
    let bytes = caffe::encode_caffemodel(&net);
    let imported = from_caffe::import(&source, Some(("bn.caffemodel", &bytes)), None, &[])
        .unwrap_or_else(|_| panic!("import"));
    let (model, weights) = imported.model("bn.net").unwrap();
    assert!(
        model.source.text.contains("conv: conv 3 3x3\n"),
        "{}",
        model.source.text
    );
    let (w, b) = (&weights.params[0], &weights.params[1]);
    let oihw = hwio_to_oihw(w, 3, 3, 2, 3);
    for o in 0..3 {
        let m = f64::from(mean[o]) / f64::from(factor);
        let v = f64::from(var[o]) / f64::from(factor);
        let k = f64::from(gamma[o]) / (v + 0.001f32 as f64).sqrt();
        let want_b = (-m * k + f64::from(beta[o])) as f32;
        assert!(
            (b[o] - want_b).abs() <= 1e-6 * want_b.abs().max(1.0),
            "bias {o}"
        );
        for j in 0..18 {
            let want = (f64::from(weight[o * 18 + j]) * k) as f32;
            assert_eq!(oihw[o * 18 + j], want, "weight {o},{j}");
        }
    }
    assert!(imported.header.iter().any(|l| l.contains("BatchNorm")));
    assert!(imported.header.iter().any(|l| l.contains("Scale")));
}

#[test]
fn branches_and_missing_sizes_are_errors() {
    let text = r#"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
layer { name: "a" type: "Convolution" bottom: "data" top: "a" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "b" type: "Convolution" bottom: "data" top: "b" convolution_param { num_output: 4 kernel_size: 3 } }
"#;
    let branch = Source::new("branch.prototxt", text);
    match from_caffe::import(&branch, None, None, &[]) {
        Err(CaffeError::Diagnostics(source, d)) => {
            let text = render_plain(&source, &d);
            assert!(
                text.contains("layer `b`") && text.contains("only chains"),
                "{text}"
            );
            assert!(text.contains("branch.prototxt:5:"), "{text}");
        }
        _ => panic!("a branch imported"),
    }
    let err = match from_caffe::import(
        &source("cifar10_quick_train_test.prototxt"),
        None,
        None,
        &[],
    ) {
        Err(CaffeError::Import(err)) => err.to_string(),
        _ => panic!("imported without an input size"),
    };
    assert!(err.contains("--input"), "{err}");
}

#[test]
fn the_command_line_shows_the_layer_and_writes_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("full.net");
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_allcnnc"))
            .args(["import", &format!("{DIR}/cifar10_full.prototxt"), "-o"])
            .arg(&net)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("E0809")
            && stderr.contains("norm1")
            && stderr.contains("cifar10_full.prototxt:"),
        "{stderr}"
    );
    assert!(!net.exists(), "nothing written on an error");

    let out = run(&["--drop", "LRN"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&net).unwrap();
    assert!(text.starts_with("# Imported from"), "{text}");
    Model::from_file(&net).unwrap();
    // --weights-out without weights says where to get them.
    let out = run(&["--drop", "LRN", "--weights-out", "w.safetensors"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--weights X.caffemodel"),
        "{stderr}"
    );
}
