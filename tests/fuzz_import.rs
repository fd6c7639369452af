//! Property-based fuzzing of the model importers (`allcnnc import`).
//!
//! Every input goes through the importer and, when it imports, through
//! [`Imported::model`] (the `.net` text checked by the whole front end and
//! the checkpoint built). The properties: nothing panics, every input
//! finishes within [`TIME_LIMIT`], every diagnostic points inside the file.
//! Each test prints how many inputs ran and how many imported.
//!
//! Caffe inputs: byte mutations of every prototxt in `tests/import/caffe/`
//! through the reader and the converter (the reader alone is fuzzed in
//! `tests/caffe_fuzz.rs`).
//!
//! ONNX inputs: random bytes; byte mutations (flips, cuts, splices) of the
//! PyTorch fixture and of an `allcnnc export` of a small model; and
//! structural mutations of the fixture's decoded message (operators swapped,
//! attributes and dimensions set to hostile values, inputs rewired, nodes
//! dropped or repeated), which reach the importer's logic rather than the
//! protobuf decoder. Case counts are small by default; a long run sets
//! `PROPTEST_CASES`.

use allcnnc::driver::Model;
use allcnnc::import::{from_caffe, onnx};
use allcnnc::onnx::proto::{AttributeProto, ModelProto};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{Config, TestRunner};
use prost::Message;
use std::cell::Cell;
use std::time::{Duration, Instant};

#[allow(dead_code)] // the layer generators serve the front end's fuzzing
mod common;
mod random_checkpoint;
use common::cases;

/// Longest any single input may take.
const TIME_LIMIT: Duration = Duration::from_secs(10);

/// Imports `bytes` as ONNX and, when that succeeds, checks the model;
/// returns whether it imported.
fn import_onnx(bytes: &[u8]) -> bool {
    let started = Instant::now();
    let imported = match onnx::import("fuzz.onnx", bytes, None) {
        Ok(imported) => {
            // Errors are fine; panics and hangs are not.
            let _ = imported.model("fuzz.net");
            true
        }
        Err(err) => {
            assert!(!err.to_string().is_empty());
            false
        }
    };
    let elapsed = started.elapsed();
    assert!(elapsed < TIME_LIMIT, "took {elapsed:?}");
    imported
}

/// Runs `strategy`'s byte strings through [`import_onnx`] and prints a tally.
fn fuzz<S>(name: &str, default_cases: u32, strategy: S)
where
    S: Strategy<Value = Vec<u8>>,
{
    let config = Config {
        cases: cases(default_cases),
        failure_persistence: None,
        max_shrink_iters: 500,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let runs = Cell::new((0u64, 0u64));
    let result = runner.run(&strategy, |bytes| {
        let imported = import_onnx(&bytes);
        let (n, ok) = runs.get();
        runs.set((n + 1, ok + u64::from(imported)));
        Ok(())
    });
    let (n, ok) = runs.get();
    println!("fuzz {name}: {n} executions ({ok} imported), no panic");
    if let Err(err) = result {
        panic!("fuzz {name}: {err}");
    }
}

fn fixture() -> Vec<u8> {
    std::fs::read("tests/import/pytorch/small_cnn.onnx").unwrap()
}

/// `allcnnc export` of a small model with every layer kind, random weights
/// and mean-std preprocessing.
fn exported() -> Vec<u8> {
    let model = Model::from_text(
        "small.net",
        "network small {\n input 3x12x12\n classes 4\n dropout 0.2\n conv 8 3x3 act=leaky(0.1)\n maxpool 3x3 stride=2\n conv 8 3x3 stride=2 pad=1x0x1x1\n avgpool 2x2 pad=1\n conv 4 1x1 act=none bias=false\n gap\n softmax\n}\n",
    )
    .unwrap();
    let shape = model.plan.input;
    let preprocess = runtime::data::Preprocess {
        shape,
        method: runtime::data::preprocess::Method::MeanStd {
            mean: vec![0.5; shape.c],
            std: vec![0.25; shape.c],
        },
    };
    let checkpoint = random_checkpoint::random_checkpoint(&model, Some(preprocess), Vec::new());
    allcnnc::onnx::export::export(&model, &checkpoint)
        .unwrap()
        .encode_to_vec()
}

/// Byte-level mutations of `seed`: flips, cuts and splices.
fn mutations(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len();
    prop::collection::vec((any::<Index>(), any::<u8>(), 0u8..4), 1..8).prop_map(move |edits| {
        let mut bytes = seed.clone();
        for (at, value, kind) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match kind {
                0 => bytes[i] = value,
                1 => bytes[i] ^= 1 << (value % 8),
                2 => bytes.truncate(i.max(len / 4)),
                _ => {
                    let insert = vec![value; usize::from(value % 16) + 1];
                    bytes.splice(i..i, insert);
                }
            }
        }
        bytes
    })
}

#[test]
fn onnx_random_bytes() {
    fuzz(
        "onnx random bytes",
        500,
        prop::collection::vec(any::<u8>(), 0..2048),
    );
}

#[test]
fn onnx_byte_mutations_of_the_pytorch_fixture() {
    fuzz("onnx mutated fixture", 150, mutations(fixture()));
}

#[test]
fn onnx_byte_mutations_of_an_export() {
    fuzz("onnx mutated export", 300, mutations(exported()));
}

/// A structural edit of a decoded model.
#[derive(Debug, Clone)]
enum Edit {
    /// Node `0` gets operator `1`.
    Op(Index, &'static str),
    /// Attribute `1` of node `0` gets the integers `2`.
    Ints(Index, &'static str, Vec<i64>),
    /// Attribute `1` of node `0` gets the integer `2`.
    Int(Index, &'static str, i64),
    /// Attribute `1` of node `0` gets the float `2`.
    Float(Index, &'static str, f32),
    /// Input `1` of node `0` becomes the output of node `2`.
    Rewire(Index, Index, Index),
    /// Node `0` is removed.
    Drop(Index),
    /// Node `0` appears twice.
    Repeat(Index),
    /// Initializer `0` gets the dimensions `1`.
    Dims(Index, Vec<i64>),
    /// The graph input gets the sizes `0`.
    InputDims(Vec<i64>),
}

fn hostile_int() -> impl Strategy<Value = i64> {
    prop_oneof![
        -3i64..8,
        select(vec![0, 1, 2, 1 << 20, 1 << 31, i64::MAX, i64::MIN, -1]),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    let ops = select(vec![
        "Conv",
        "Relu",
        "LeakyRelu",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "BatchNormalization",
        "Flatten",
        "Gemm",
        "MatMul",
        "Add",
        "Sub",
        "Div",
        "Dropout",
        "Softmax",
        "Reshape",
        "ReduceMean",
        "Pad",
        "Identity",
        "Constant",
        "Concat",
    ]);
    let attrs = select(vec![
        "kernel_shape",
        "strides",
        "pads",
        "dilations",
        "group",
        "ceil_mode",
        "count_include_pad",
        "axis",
        "transA",
        "transB",
        "alpha",
        "beta",
        "epsilon",
        "axes",
        "keepdims",
    ]);
    prop_oneof![
        (any::<Index>(), ops).prop_map(|(n, op)| Edit::Op(n, op)),
        (
            any::<Index>(),
            attrs.clone(),
            prop::collection::vec(hostile_int(), 0..6)
        )
            .prop_map(|(n, a, v)| Edit::Ints(n, a, v)),
        (any::<Index>(), attrs.clone(), hostile_int()).prop_map(|(n, a, v)| Edit::Int(n, a, v)),
        (
            any::<Index>(),
            attrs,
            prop_oneof![any::<f32>(), Just(f32::NAN), Just(-1.0f32), Just(0.0f32)]
        )
            .prop_map(|(n, a, v)| Edit::Float(n, a, v)),
        (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(n, i, m)| Edit::Rewire(n, i, m)),
        any::<Index>().prop_map(Edit::Drop),
        any::<Index>().prop_map(Edit::Repeat),
        (any::<Index>(), prop::collection::vec(hostile_int(), 0..5))
            .prop_map(|(n, d)| Edit::Dims(n, d)),
        prop::collection::vec(hostile_int(), 0..6).prop_map(Edit::InputDims),
    ]
}

fn set_attr(
    node: &mut allcnnc::onnx::proto::NodeProto,
    name: &str,
    f: impl FnOnce(&mut AttributeProto),
) {
    let position = node
        .attribute
        .iter()
        .position(|a| a.name.as_deref() == Some(name));
    let index = position.unwrap_or_else(|| {
        node.attribute.push(AttributeProto {
            name: Some(name.to_string()),
            ..Default::default()
        });
        node.attribute.len() - 1
    });
    f(&mut node.attribute[index]);
}

fn apply(model: &mut ModelProto, edit: &Edit) {
    use allcnnc::onnx::proto::{tensor_shape_proto::dimension::Value, type_proto};
    let graph = model.graph.as_mut().unwrap();
    let n = graph.node.len();
    match edit {
        Edit::Op(i, op) if n > 0 => graph.node[i.index(n)].op_type = Some(op.to_string()),
        Edit::Ints(i, a, v) if n > 0 => set_attr(&mut graph.node[i.index(n)], a, |attr| {
            attr.ints = v.clone();
        }),
        Edit::Int(i, a, v) if n > 0 => set_attr(&mut graph.node[i.index(n)], a, |attr| {
            attr.i = Some(*v);
        }),
        Edit::Float(i, a, v) if n > 0 => set_attr(&mut graph.node[i.index(n)], a, |attr| {
            attr.f = Some(*v);
        }),
        Edit::Rewire(i, k, m) if n > 0 => {
            let from = graph.node[m.index(n)]
                .output
                .first()
                .cloned()
                .unwrap_or_default();
            let node = &mut graph.node[i.index(n)];
            if !node.input.is_empty() {
                let k = k.index(node.input.len());
                node.input[k] = from;
            }
        }
        Edit::Drop(i) if n > 0 => {
            graph.node.remove(i.index(n));
        }
        Edit::Repeat(i) if n > 0 => {
            let i = i.index(n);
            let node = graph.node[i].clone();
            graph.node.insert(i, node);
        }
        Edit::Dims(i, d) if !graph.initializer.is_empty() => {
            let i = i.index(graph.initializer.len());
            graph.initializer[i].dims = d.clone();
        }
        Edit::InputDims(d) => {
            if let Some(type_proto::Value::TensorType(t)) = graph
                .input
                .first_mut()
                .and_then(|v| v.r#type.as_mut())
                .and_then(|t| t.value.as_mut())
            {
                if let Some(shape) = t.shape.as_mut() {
                    for (dim, v) in shape.dim.iter_mut().zip(d) {
                        dim.value = Some(Value::DimValue(*v));
                    }
                }
            }
        }
        _ => {}
    }
}

#[test]
fn onnx_structural_mutations_of_the_pytorch_fixture() {
    let seed = ModelProto::decode(fixture().as_slice()).unwrap();
    let strategy = prop::collection::vec(edit(), 1..5).prop_map(move |edits| {
        let mut model = seed.clone();
        for edit in &edits {
            apply(&mut model, edit);
        }
        model.encode_to_vec()
    });
    fuzz("onnx structural mutations", 400, strategy);
}

/// Imports `bytes` as a Caffe prototxt (3x32x32 images when the file does
/// not say, LRN dropped) and checks the model; returns whether it imported.
fn import_caffe(bytes: &[u8]) -> bool {
    let started = Instant::now();
    let text = String::from_utf8_lossy(bytes).into_owned();
    let source = allcnnc::diagnostic::Source::new("fuzz.prototxt", text);
    let drop = vec!["LRN".to_string()];
    let input = Some(plan::Shape::new(3, 32, 32));
    let imported = match from_caffe::import(&source, None, input, &drop) {
        Ok(imported) => {
            let _ = imported.model("fuzz.net");
            true
        }
        Err(from_caffe::CaffeError::Diagnostics(source, diagnostics)) => {
            for d in &diagnostics {
                for label in &d.labels {
                    assert!(
                        label.span.end <= source.text.len(),
                        "a span outside the file"
                    );
                }
            }
            let _ = allcnnc::diagnostic::render_plain(&source, &diagnostics);
            false
        }
        Err(from_caffe::CaffeError::Import(err)) => {
            assert!(!err.to_string().is_empty());
            false
        }
    };
    let elapsed = started.elapsed();
    assert!(elapsed < TIME_LIMIT, "took {elapsed:?}");
    imported
}

#[test]
fn caffe_conversion_of_mutated_networks() {
    let files = [
        "cifar10_quick.prototxt",
        "cifar10_full.prototxt",
        "cifar10_quick_train_test.prototxt",
        "cifar10_full_train_test.prototxt",
        "nin_cifar10.prototxt",
    ];
    let seeds: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(format!("tests/import/caffe/{f}")).unwrap())
        .collect();
    // The seeds themselves import.
    for (file, seed) in files.iter().zip(&seeds) {
        assert!(import_caffe(seed), "{file}");
    }
    let config = Config {
        cases: cases(600),
        failure_persistence: None,
        max_shrink_iters: 500,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let runs = Cell::new((0u64, 0u64));
    let strategy = any::<Index>().prop_flat_map(move |which| {
        let seed = seeds[which.index(seeds.len())].clone();
        mutations(seed)
    });
    let result = runner.run(&strategy, |bytes| {
        let imported = import_caffe(&bytes);
        let (n, ok) = runs.get();
        runs.set((n + 1, ok + u64::from(imported)));
        Ok(())
    });
    let (n, ok) = runs.get();
    println!("fuzz caffe conversion: {n} executions ({ok} imported), no panic");
    if let Err(err) = result {
        panic!("fuzz caffe conversion: {err}");
    }
}
