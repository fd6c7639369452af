//! The bundled models: exact parameter counts, the paper's three rewrites
//! against the hand-written variants, and print/parse round trips.

use allcnnc::back::net::print;
use allcnnc::cli::{derive, Variant};
use allcnnc::diagnostic::{render_plain, Source};
use allcnnc::front;
use allcnnc::ir::{Graph, Signature};
use std::path::Path;

fn load(path: &Path) -> (Source, Graph) {
    let text = std::fs::read_to_string(path).expect("model file");
    let source = Source::new(path.display().to_string(), text);
    match front::load(&source) {
        Ok(graph) => (source, graph),
        Err(diags) => panic!("{}", render_plain(&source, &diags)),
    }
}

fn model(name: &str) -> (Source, Graph) {
    load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models")
            .join(name),
    )
}

/// The signature without layer names: the hand-written variants and the
/// derived ones must agree on ops, shapes and counts.
fn structure(graph: &Graph) -> Signature {
    let mut sig = graph.signature();
    for layer in &mut sig.layers {
        layer.name.clear();
    }
    sig
}

#[test]
fn exact_parameter_counts() {
    // Counted by hand from Table 1 (weights + biases); see PAPER.md.
    let expected = [
        ("model-a.net", 839_242),
        ("model-b.net", 885_610),
        ("model-c.net", 954_730),
        ("strided-cnn-a.net", 839_242),
        ("strided-cnn-b.net", 885_610),
        ("strided-cnn-c.net", 954_730),
        ("convpool-cnn-a.net", 1_254_250),
        ("convpool-cnn-b.net", 1_300_618),
        ("convpool-cnn-c.net", 1_369_738),
        ("all-cnn-a.net", 1_254_250),
        ("all-cnn-b.net", 1_300_618),
        ("all-cnn-c.net", 1_369_738),
    ];
    for (file, params) in expected {
        let (_, graph) = model(file);
        assert_eq!(graph.total_params(), params, "{file}");
    }
}

fn assert_converts(base: &str, variant: Variant, hand_written: &str) {
    let (source, graph) = model(base);
    let Ok(derived) = derive(&source, &graph, variant) else {
        panic!("{base}: conversion failed");
    };
    let (_, expected) = model(hand_written);
    assert_eq!(
        structure(&derived),
        structure(&expected),
        "{base} -> {hand_written}"
    );
    assert_eq!(derived.total_params(), expected.total_params());
    assert_eq!(derived.total_macs(), expected.total_macs());
    assert_eq!(derived.name, expected.name);
    // Unlabelled models keep their default names: the derived model is the
    // hand-written one, hash included, so weights move between them.
    assert_eq!(
        derived.model_hash(),
        expected.model_hash(),
        "{base} -> {hand_written}"
    );
}

fn load_text(name: &str, text: &str) -> Result<Graph, String> {
    let source = Source::new(name.to_string(), text.to_string());
    front::load(&source).map_err(|diags| render_plain(&source, &diags))
}

/// Derived layers never take a name the source wrote (a labelled `conv2`
/// once clashed with the positional default of the conv that replaced
/// `pool1`: E0210), and the printed variant parses back to the same model.
#[test]
fn derived_names_never_clash_with_written_ones() {
    let labelled = "network lab {
    input 3x32x32
    classes 10
    conv1: conv 16 3x3
    pool1: maxpool 3x3 stride=2
    conv2: conv 32 3x3
    pool2: maxpool 3x3 stride=2
    conv3: conv 10 1x1
    gap
    softmax
}
";
    // Unlabelled convs among labelled ones: the first default shifts onto a
    // written name (`conv 24` was conv2, becomes conv3 after an insertion).
    let mixed = "network mixed {
    input 3x32x32
    classes 10
    conv 16 3x3
    maxpool 3x3 stride=2
    conv 24 3x3
    conv3: conv 32 3x3
    maxpool 3x3 stride=2
    conv 10 1x1
    gap
    softmax
}
";
    for (name, text) in [("lab.net", labelled), ("mixed.net", mixed)] {
        let source = Source::new(name.to_string(), text.to_string());
        let graph = load_text(name, text).unwrap();
        for variant in [Variant::Strided, Variant::Convpool, Variant::Allconv] {
            let Ok(derived) = derive(&source, &graph, variant) else {
                panic!("{name}: conversion failed");
            };
            let names: Vec<String> = derived.nodes().map(|n| n.name.clone()).collect();
            let mut unique = names.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), names.len(), "{name} {variant:?}: {names:?}");
            // Every written name of a layer the rewrite keeps (all but the
            // max-pools) survives.
            let kept = |n: &&allcnnc::ir::Node| {
                n.labelled && !matches!(n.op, allcnnc::ir::Op::MaxPool { .. })
            };
            for node in graph.nodes().filter(kept) {
                assert!(
                    derived.nodes().any(|d| d.name == node.name && d.labelled),
                    "{name} {variant:?}: lost {}",
                    node.name
                );
            }
            let printed = print(&derived, &[]);
            let reparsed = load_text(name, &printed)
                .unwrap_or_else(|err| panic!("{name} {variant:?}:\n{printed}\n{err}"));
            assert_eq!(
                reparsed.signature(),
                derived.signature(),
                "{name} {variant:?}"
            );
        }
    }
    let source = Source::new("lab.net", labelled);
    let Ok(all) = derive(
        &source,
        &load_text("lab.net", labelled).unwrap(),
        Variant::Allconv,
    ) else {
        panic!("lab.net: conversion failed");
    };
    let names: Vec<&str> = all.nodes().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "conv1",
            "pool1_conv",
            "conv2",
            "pool2_conv",
            "conv3",
            "gap1",
            "softmax"
        ]
    );
}

macro_rules! conversion_tests {
    ($($name:ident: $base:literal, $variant:ident => $hand:literal;)*) => {
        $(
            #[test]
            fn $name() {
                assert_converts($base, Variant::$variant, $hand);
            }
        )*
    };
}

conversion_tests! {
    strided_a: "model-a.net", Strided => "strided-cnn-a.net";
    strided_b: "model-b.net", Strided => "strided-cnn-b.net";
    strided_c: "model-c.net", Strided => "strided-cnn-c.net";
    convpool_a: "model-a.net", Convpool => "convpool-cnn-a.net";
    convpool_b: "model-b.net", Convpool => "convpool-cnn-b.net";
    convpool_c: "model-c.net", Convpool => "convpool-cnn-c.net";
    allconv_a: "model-a.net", Allconv => "all-cnn-a.net";
    allconv_b: "model-b.net", Allconv => "all-cnn-b.net";
    allconv_c: "model-c.net", Allconv => "all-cnn-c.net";
}

#[test]
fn every_model_round_trips_through_the_printer() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).expect("models/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("net") {
            continue;
        }
        let (_, graph) = load(&path);
        let printed = print(&graph, &["round trip".to_string()]);
        let source = Source::new("printed.net", printed.clone());
        let reparsed = front::load(&source)
            .unwrap_or_else(|diags| panic!("{}", render_plain(&source, &diags)));
        assert_eq!(
            graph.signature(),
            reparsed.signature(),
            "{}:\n{printed}",
            path.display()
        );
        assert_eq!(graph.training, reparsed.training, "{}", path.display());
        assert_eq!(graph.name, reparsed.name);
        // Printing is a fixed point: the printed text prints to itself.
        assert_eq!(print(&reparsed, &["round trip".to_string()]), printed);
        count += 1;
    }
    assert!(count >= 15, "expected every bundled model, saw {count}");
}

#[test]
fn derived_models_round_trip_too() {
    for base in ["model-a.net", "model-b.net", "model-c.net"] {
        for variant in [Variant::Strided, Variant::Allconv, Variant::Convpool] {
            let (source, graph) = model(base);
            let Ok(derived) = derive(&source, &graph, variant) else {
                panic!("{base}");
            };
            let printed = print(&derived, &[]);
            let reparsed =
                front::load(&Source::new("d.net", printed)).expect("derived model parses");
            assert_eq!(derived.signature(), reparsed.signature());
        }
    }
}

#[test]
fn pooling_rounds_up_like_caffe() {
    let (_, graph) = model("model-c.net");
    let pools: Vec<_> = graph
        .nodes()
        .filter(|n| n.op.keyword() == "maxpool")
        .map(|n| (n.in_shape.unwrap().h, n.out_shape.unwrap().h))
        .collect();
    assert_eq!(pools, vec![(32, 16), (16, 8)]);
}

#[test]
fn receptive_field_of_all_cnn_c() {
    let (_, graph) = model("all-cnn-c.net");
    let conv9 = graph.nodes().find(|n| n.name == "conv9").expect("conv9");
    let stats = conv9.stats.unwrap();
    // 3x3 convs: 3,5 ; s2 ->7 (jump 2) ; 11,15 ; s2 -> 19 (jump 4) ; valid 3x3 -> 27 ; 1x1 -> 27.
    assert_eq!((stats.receptive_field, stats.jump), (27, 4));
}
