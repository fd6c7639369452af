//! `allcnnc import` of ONNX models.
//!
//! - A PyTorch model with batch normalisation, max pools and two fully
//!   connected layers (`tests/import/pytorch/`, made by
//!   `make_small_cnn.py` with PyTorch's exporter): imported with its
//!   weights, `allcnnc eval --per-image` on 100 real CIFAR-10 test images
//!   gives PyTorch's probabilities within 1e-4; its all-conv variant
//!   derives and checks.
//! - Every bundled model, exported by `allcnnc export` with random weights
//!   (and each preprocessing) and imported back: the same signature (so the
//!   same model hash), bit-identical weights, the same preprocessing.
//! - Models the language cannot express are refused naming the node.

use allcnnc::driver::Model;
use allcnnc::import::{onnx, ImportError};
use allcnnc::onnx::export;
use prost::Message;
use runtime::data::preprocess::{Gcn, Method, Preprocess, Zca};

use std::path::{Path, PathBuf};
use std::process::Command;

mod random_checkpoint;
mod real_cifar;
mod skip;
use random_checkpoint::random_checkpoint;

const PYTORCH: &str = "tests/import/pytorch";
/// The largest difference of a probability allowed against PyTorch's.
const TOLERANCE: f64 = 1e-4;

fn allcnnc(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_allcnnc"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "allcnnc {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `allcnnc import` of the PyTorch fixture into a temporary folder: the
/// folder, the `.net` file, the weights and what the command printed.
fn import_fixture() -> (tempfile::TempDir, PathBuf, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("small_cnn.net");
    let weights = dir.path().join("small_cnn.safetensors");
    let printed = allcnnc(&[
        "import",
        &format!("{PYTORCH}/small_cnn.onnx"),
        "-o",
        path(&net),
        "--weights-out",
        path(&weights),
    ]);
    (dir, net, weights, printed)
}

#[test]
fn pytorch_model_imports_and_predicts_what_pytorch_does() {
    let (dir, net, weights, printed) = import_fixture();
    print!("{printed}");
    let text = std::fs::read_to_string(&net).unwrap();
    let layers: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("    ") && l.contains(':'))
        .map(str::trim)
        .collect();
    assert_eq!(
        layers,
        [
            "features_0: conv 16 3x3",
            "features_3: maxpool 2x2",
            "features_4: conv 32 3x3",
            "features_7: maxpool 2x2",
            "classifier_1: conv 64 8x8 pad=valid",
            "classifier_3: conv 10 1x1 act=none",
            "softmax: softmax",
        ]
    );
    // What was folded and added is in the header.
    assert_eq!(text.matches("folded into convolution").count(), 2, "{text}");
    assert!(text.contains("softmax added"), "{text}");
    // 136,970 in PyTorch, less the 2 x (16 + 32) batch-norm scales and
    // shifts folded into the convolutions.
    assert!(printed.contains("136874 parameters"), "{printed}");

    let per_image = dir.path().join("per-image.jsonl");
    allcnnc(&[
        "eval",
        path(&net),
        "--weights",
        path(&weights),
        "--data",
        &format!("{PYTORCH}/cifar10-100"),
        "--device",
        "cpu",
        "--per-image",
        path(&per_image),
    ]);
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{PYTORCH}/small_cnn.expected.json")).unwrap(),
    )
    .unwrap();
    let expected = expected["probabilities"].as_array().unwrap();
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&per_image)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 100);
    let mut worst: f64 = 0.0;
    for row in &rows {
        let index = row["index"].as_u64().unwrap() as usize;
        let ours = row["probabilities"].as_array().unwrap();
        let theirs = expected[index].as_array().unwrap();
        assert_eq!(ours.len(), 10);
        for (a, b) in ours.iter().zip(theirs) {
            worst = worst.max((a.as_f64().unwrap() - b.as_f64().unwrap()).abs());
        }
    }
    println!("max |p_allcnnc - p_pytorch| over 100 images x 10 classes = {worst:.3e}");
    assert!(worst <= TOLERANCE, "{worst}");

    // The all-conv variant of the imported model.
    let allconv = dir.path().join("small_cnn_allconv.net");
    let printed = allcnnc(&[
        "convert",
        path(&net),
        "--to",
        "allconv",
        "-o",
        path(&allconv),
    ]);
    print!("{printed}");
    let derived = Model::from_file(&allconv).unwrap();
    println!(
        "all-conv variant: {} parameters",
        derived.graph.total_params()
    );
    // Each 2x2 max pool became a 2x2 stride-2 convolution of as many
    // channels: 16*16*4+16 and 32*32*4+32 more parameters.
    assert_eq!(derived.graph.total_params(), 136_874 + 1040 + 4128);
    // The paper's other two variants derive too: Strided (each pool gone,
    // the convolution before it strided, so the fully connected layer's
    // 8x8 kernel still covers the map) and ConvPool (a convolution before
    // each pool).
    for to in ["strided", "convpool"] {
        let out = dir.path().join(format!("small_cnn_{to}.net"));
        print!(
            "{}",
            allcnnc(&["convert", path(&net), "--to", to, "-o", path(&out)])
        );
        let derived = Model::from_file(&out).unwrap();
        assert!(
            derived
                .graph
                .nodes()
                .all(|n| !matches!(n.op, allcnnc::ir::Op::MaxPool { .. }))
                || to == "convpool",
            "{to}"
        );
        println!("{to} variant: {} parameters", derived.graph.total_params());
    }
}

fn bundled_models() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("models")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "net"))
        .collect();
    files.sort();
    files
}

/// A preprocessing of each kind for images of `model`, by turns.
fn preprocess_for(model: &Model, turn: usize) -> Option<Preprocess> {
    let shape = model.plan.input;
    let d = shape.len();
    match turn % 3 {
        0 => None,
        1 => Some(Preprocess {
            shape,
            method: Method::MeanStd {
                mean: (0..shape.c).map(|c| 0.4 + 0.01 * c as f32).collect(),
                std: (0..shape.c).map(|c| 0.2 + 0.02 * c as f32).collect(),
            },
        }),
        // A ZCA matrix over a large input is big; the small ones show it.
        _ if d > 4096 => None,
        _ => Some(Preprocess {
            shape,
            method: Method::GcnZca {
                gcn: Gcn::new(55.0),
                zca: Zca {
                    bias: 0.0,
                    fit_images: 0,
                    mean: (0..d).map(|i| (i % 7) as f32 * 0.01).collect(),
                    matrix: (0..d * d).map(|i| ((i % 13) as f32 - 6.0) * 1e-3).collect(),
                },
            },
        }),
    }
}

#[test]
fn every_bundled_model_round_trips_through_export_and_import() {
    let mut kinds = [0; 3];
    for (turn, file) in bundled_models().into_iter().enumerate() {
        let model = Model::from_file(&file).unwrap();
        let preprocess = preprocess_for(&model, turn);
        let checkpoint = random_checkpoint(&model, preprocess.clone(), Vec::new());
        let bytes = export::export(&model, &checkpoint).unwrap().encode_to_vec();
        let imported = onnx::import(&file.display().to_string(), &bytes, None)
            .unwrap_or_else(|err| panic!("{}: {err}", file.display()));
        let (back, weights) = imported.model("back.net").unwrap();
        assert_eq!(
            back.graph.signature(),
            model.graph.signature(),
            "{}:\n{}",
            file.display(),
            back.source.text
        );
        assert_eq!(back.plan.model_hash, model.plan.model_hash);
        assert_eq!(weights.params.len(), checkpoint.params.len());
        for (a, b) in weights.params.iter().zip(&checkpoint.params) {
            assert!(
                a.iter()
                    .map(|v| v.to_bits())
                    .eq(b.iter().map(|v| v.to_bits())),
                "{}: weights differ",
                file.display()
            );
        }
        let kind = match (&preprocess, &weights.preprocess) {
            (None, None) => 0,
            (Some(a), Some(b)) => {
                assert_eq!(a.shape, b.shape);
                match (&a.method, &b.method) {
                    (Method::MeanStd { .. }, Method::MeanStd { .. }) => {
                        assert_eq!(a.method, b.method);
                        1
                    }
                    (Method::GcnZca { gcn: g1, zca: z1 }, Method::GcnZca { gcn: g2, zca: z2 }) => {
                        assert_eq!(g1, g2);
                        assert_eq!((&z1.mean, &z1.matrix), (&z2.mean, &z2.matrix));
                        2
                    }
                    other => panic!("{}: preprocessing {other:?}", file.display()),
                }
            }
            other => panic!("{}: preprocessing {other:?}", file.display()),
        };
        kinds[kind] += 1;
        println!(
            "{}: same signature, {} weight tensors bit-identical, preprocessing {}",
            file.display(),
            weights.params.len(),
            ["none", "mean-std", "gcn-zca"][kind]
        );
    }
    assert!(kinds.iter().all(|&k| k > 0), "{kinds:?}");
}

/// A one-node-changed copy of the PyTorch model, imported.
fn import_edited(edit: impl FnOnce(&mut allcnnc::onnx::proto::ModelProto)) -> ImportError {
    let bytes = std::fs::read(format!("{PYTORCH}/small_cnn.onnx")).unwrap();
    let mut model = allcnnc::onnx::proto::ModelProto::decode(bytes.as_slice()).unwrap();
    edit(&mut model);
    match onnx::import("edited.onnx", &model.encode_to_vec(), None) {
        Ok(imported) => panic!("imported:\n{}", imported.text()),
        Err(err) => err,
    }
}

#[test]
fn what_the_language_lacks_is_refused_naming_the_node() {
    // An operator the language has not.
    let err = import_edited(|m| {
        let node = &mut m.graph.as_mut().unwrap().node[2];
        node.op_type = Some("Sigmoid".into());
    });
    let text = err.to_string();
    assert!(
        text.contains("node 2") && text.contains("(Sigmoid)"),
        "{text}"
    );

    // A branch: the second conv takes the first pool's input.
    let err = import_edited(|m| {
        let graph = m.graph.as_mut().unwrap();
        let earlier = graph.node[2].output[0].clone();
        graph.node[4].input[0] = earlier;
    });
    let text = err.to_string();
    assert!(
        text.contains("node 4") && text.contains("only chains"),
        "{text}"
    );

    // A grouped convolution.
    let err = import_edited(|m| {
        let node = &mut m.graph.as_mut().unwrap().node[0];
        let group = node
            .attribute
            .iter_mut()
            .find(|a| a.name.as_deref() == Some("group"));
        group.unwrap().i = Some(3);
    });
    assert!(err.to_string().contains("grouped"), "{err}");

    // Not ONNX at all.
    let err = onnx::import("junk.onnx", b"\xff\xff\xff\xff not protobuf", None).unwrap_err();
    assert!(err.to_string().contains("not an ONNX model"), "{err}");
}

/// The percentage after the first `word` that follows `after` in `text`.
fn accuracy_in(text: &str, after: &str, word: &str) -> f64 {
    let find = |from: usize, what: &str| {
        from + text[from..]
            .find(what)
            .unwrap_or_else(|| panic!("no `{what}` in {text}"))
            + what.len()
    };
    let at = find(find(0, after), word);
    let rest = &text[at..];
    let end = rest.find('%').unwrap();
    rest[..end].trim().parse().unwrap()
}

#[test]
fn imported_weights_fine_tune() {
    let Some(cifar) = real_cifar::jpeg_dir() else {
        return;
    };
    let (dir, net, weights, _) = import_fixture();
    let data = path(&cifar);
    let eval = Command::new(env!("CARGO_BIN_EXE_allcnnc"))
        .args([
            "eval",
            path(&net),
            "--weights",
            path(&weights),
            "--data",
            data,
        ])
        .args(["--limit", "500", "--device", "cpu"])
        .output()
        .unwrap();
    let eval = String::from_utf8_lossy(&eval.stdout).into_owned();
    let before = accuracy_in(&eval, "test images", "accuracy ");
    // At a negligible rate the run's first evaluation is the weights'
    // own: they were loaded, with their preprocessing (none), not refitted.
    let run = |lr: &str, out: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_allcnnc"))
            .args([
                "train",
                path(&net),
                "--weights",
                path(&weights),
                "--data",
                data,
            ])
            .args(["--limit", "2000", "--test-limit", "500", "--epochs", "1"])
            .args(["--lr", lr, "--device", "cpu", "--out"])
            .arg(dir.path().join(out))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        assert!(
            stderr.contains("starting from the weights of") && stderr.contains("(none)"),
            "{stderr}"
        );
        accuracy_in(&stderr, "test loss", " acc ")
    };
    let still = run("1e-7", "still");
    let tuned = run("0.01", "tuned");
    println!("imported weights: {before:.2}% on 500 test images; after an epoch at lr 1e-7: {still:.2}%; at lr 0.01: {tuned:.2}%");
    assert!((still - before).abs() <= 0.5, "{still} vs {before}");
    assert!(
        tuned > before,
        "fine-tuning on 2,000 images did not help: {tuned} vs {before}"
    );
}

/// Hand-made ONNX models for the review's cases (one chain of nodes on a
/// `1 x C x H x W` input `x`, float constants by name).
mod tiny {
    use allcnnc::onnx::proto::{
        tensor_shape_proto::{dimension, Dimension},
        type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
        TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
    };
    use prost::Message;

    pub fn value(name: &str, dims: &[i64]) -> ValueInfoProto {
        ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(1),
                    shape: Some(TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|&d| Dimension {
                                value: Some(dimension::Value::DimValue(d)),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn floats(name: &str, dims: &[i64], data: Vec<f32>) -> TensorProto {
        TensorProto {
            name: Some(name.into()),
            dims: dims.to_vec(),
            data_type: Some(1),
            float_data: data,
            ..Default::default()
        }
    }

    pub fn ints(name: &str, data: Vec<i64>) -> TensorProto {
        TensorProto {
            name: Some(name.into()),
            dims: vec![data.len() as i64],
            data_type: Some(7),
            int64_data: data,
            ..Default::default()
        }
    }

    pub fn node(
        op: &str,
        inputs: &[&str],
        output: &str,
        attrs: Vec<(&str, Vec<i64>)>,
    ) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            name: Some(output.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute: attrs
                .into_iter()
                .map(|(name, v)| {
                    // One value is an INT attribute, except those that
                    // are always lists.
                    let list = v.len() != 1 || ["pads", "kernel_shape", "strides"].contains(&name);
                    AttributeProto {
                        name: Some(name.into()),
                        r#type: Some(if list { 7 } else { 2 }),
                        i: (!list).then(|| v[0]),
                        ints: if list { v } else { Vec::new() },
                        ..Default::default()
                    }
                })
                .collect(),
            ..Default::default()
        }
    }

    /// The model's bytes: input `x` of `dims`, the output of the last node.
    pub fn model(dims: &[i64], init: Vec<TensorProto>, nodes: Vec<NodeProto>) -> Vec<u8> {
        let out = nodes.last().unwrap().output[0].clone();
        ModelProto {
            ir_version: Some(8),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(18),
            }],
            graph: Some(GraphProto {
                node: nodes,
                initializer: init,
                input: vec![value("x", dims)],
                output: vec![value(&out, &[])],
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }
}

fn text_of(bytes: &[u8]) -> Result<String, String> {
    onnx::import("tiny.onnx", bytes, None)
        .map(|imported| imported.text())
        .map_err(|err| err.to_string())
}

#[test]
fn pads_fold_into_the_layer_after_them_or_are_refused() {
    use tiny::*;
    let w = floats("w", &[2, 1, 3, 3], vec![0.1; 18]);
    let pads = ints("p", vec![0, 0, 1, 1, 0, 0, 1, 1]);
    // Pad -> Conv: the convolution's own padding (`same` for 3x3).
    let bytes = model(
        &[1, 1, 6, 6],
        vec![w.clone(), pads.clone()],
        vec![
            node("Pad", &["x", "p"], "padded", vec![]),
            node("Conv", &["padded", "w"], "c", vec![]),
            node("GlobalAveragePool", &["c"], "g", vec![]),
        ],
    );
    let text = text_of(&bytes).unwrap();
    assert!(
        text.contains(": conv 2 3x3 act=none bias=false\n"),
        "{text}"
    );
    // Pad -> Pad: refused.
    let bytes = model(
        &[1, 1, 6, 6],
        vec![pads.clone()],
        vec![
            node("Pad", &["x", "p"], "a", vec![]),
            node("Pad", &["a", "p"], "b", vec![]),
            node(
                "AveragePool",
                &["b"],
                "c",
                vec![("kernel_shape", vec![2, 2]), ("strides", vec![2, 2])],
            ),
        ],
    );
    assert!(text_of(&bytes).unwrap_err().contains("a second pad"));
    // Pad -> Relu: the pad does not reach a pool or convolution.
    let bytes = model(
        &[1, 1, 6, 6],
        vec![pads.clone()],
        vec![
            node("Pad", &["x", "p"], "a", vec![]),
            node("Relu", &["a"], "b", vec![]),
        ],
    );
    assert!(text_of(&bytes)
        .unwrap_err()
        .contains("no pool or convolution follows"));
    // Pad -> AveragePool 3/2 (floor) on 4x4: ONNX gives 2x2; the import
    // must too (not Caffe's 3x3).
    let bytes = model(
        &[1, 1, 4, 4],
        vec![pads, w],
        vec![
            node("Pad", &["x", "p"], "a", vec![]),
            node(
                "AveragePool",
                &["a"],
                "b",
                vec![("kernel_shape", vec![3, 3]), ("strides", vec![2, 2])],
            ),
            node("GlobalAveragePool", &["b"], "g", vec![]),
        ],
    );
    let imported = onnx::import("tiny.onnx", &bytes, None).unwrap();
    let (model, _) = imported.model("tiny.net").unwrap();
    let pool = model.graph.signature().layers[0].clone();
    assert_eq!(
        pool.out_shape.map(|s| (s.h, s.w)),
        Some((2, 2)),
        "{}",
        imported.text()
    );
}

#[test]
fn matmul_and_add_and_the_softmax_axis() {
    use tiny::*;
    // Flatten -> MatMul -> Add: a fully connected layer with its bias.
    let bytes = model(
        &[1, 2, 2, 2],
        vec![
            floats("m", &[8, 3], (0..24).map(|i| i as f32 * 0.01).collect()),
            floats("b", &[3], vec![0.5, -0.5, 1.0]),
        ],
        vec![
            node("Flatten", &["x"], "f", vec![("axis", vec![1])]),
            node("MatMul", &["f", "m"], "y", vec![]),
            node("Add", &["y", "b"], "z", vec![]),
            node("Softmax", &["z"], "p", vec![]),
        ],
    );
    let imported = onnx::import("tiny.onnx", &bytes, None).unwrap();
    let (_, weights) = imported.model("tiny.net").unwrap();
    assert_eq!(weights.params[1], [0.5, -0.5, 1.0], "the Add is the bias");
    // GAP -> Softmax over the last axis (opset 18's default) of a 4-D
    // value: that is W, not the classes.
    let bytes = model(
        &[1, 3, 4, 4],
        vec![],
        vec![
            node("GlobalAveragePool", &["x"], "g", vec![]),
            node("Softmax", &["g"], "p", vec![]),
        ],
    );
    assert!(text_of(&bytes).unwrap_err().contains("only the class axis"));
}
