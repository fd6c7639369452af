//! The Caffe reader (src/import/caffe): Caffe's own CIFAR-10 prototxts
//! (tests/import/caffe/, V1 and V2 syntax), the caffemodel round trip, legacy
//! blobs, attaching weights, and the rendered diagnostics of bad files.

use allcnnc::diagnostic::{render_plain, Source};
use allcnnc::import::caffe::{
    attach_weights, decode_caffemodel, encode_caffemodel, parse_prototxt, proto, Blob, CaffeLayer,
    CaffeModelError, CaffeNet, ConvParams, InnerProductParams, Phase, PoolMethod, PoolParams,
    RoundMode,
};
use prost::Message;
use std::path::Path;

fn reference(name: &str) -> Source {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/import/caffe")
        .join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    Source::new(format!("tests/import/caffe/{name}"), text)
}

fn parse(source: &Source) -> CaffeNet {
    parse_prototxt(source).unwrap_or_else(|diags| panic!("{}", render_plain(source, &diags)))
}

/// The rendered diagnostics of a prototxt that must fail.
fn errors(text: &str) -> String {
    let source = Source::new("bad.prototxt", text);
    match parse_prototxt(&source) {
        Ok(net) => panic!("expected an error, parsed {net:?}"),
        Err(diags) => render_plain(&source, &diags),
    }
}

fn layer<'a>(net: &'a CaffeNet, name: &str) -> &'a CaffeLayer {
    net.layers
        .iter()
        .find(|layer| layer.name == name)
        .unwrap_or_else(|| panic!("no layer {name}"))
}

fn conv(num_output: usize, kernel: usize, pad: usize) -> ConvParams {
    ConvParams {
        num_output,
        kernel: (kernel, kernel),
        stride: (1, 1),
        pad: (pad, pad),
        group: 1,
        bias_term: true,
        dilation: (1, 1),
    }
}

fn pool(method: PoolMethod) -> PoolParams {
    PoolParams {
        method,
        kernel: Some((3, 3)),
        stride: (2, 2),
        pad: (0, 0),
        global_pooling: false,
        round_mode: RoundMode::Ceil,
    }
}

fn ip(num_output: usize) -> InnerProductParams {
    InnerProductParams {
        num_output,
        bias_term: true,
        transpose: false,
        axis: 1,
    }
}

/// The net with its spans cleared (a binary file has none).
fn without_spans(mut net: CaffeNet) -> CaffeNet {
    if let Some(input) = &mut net.input {
        input.span = None;
    }
    for layer in &mut net.layers {
        layer.span = None;
    }
    net
}

#[test]
fn cifar10_quick_deploy() {
    let source = reference("cifar10_quick.prototxt");
    let net = parse(&source);
    assert_eq!(net.name, "CIFAR10_quick_test");
    let input = net.input.as_ref().expect("input_dim declares the input");
    assert_eq!(input.name, "data");
    assert_eq!(input.dims, [1, 3, 32, 32]);
    let span = input.span.clone().expect("a span");
    assert_eq!(&source.text[span], "\"data\"");
    let names: Vec<&str> = net.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "conv1", "pool1", "relu1", "conv2", "relu2", "pool2", "conv3", "relu3", "pool3", "ip1",
            "ip2", "prob"
        ]
    );
    let kinds: Vec<&str> = net.layers.iter().map(|l| l.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "Convolution",
            "Pooling",
            "ReLU",
            "Convolution",
            "ReLU",
            "Pooling",
            "Convolution",
            "ReLU",
            "Pooling",
            "InnerProduct",
            "InnerProduct",
            "Softmax"
        ]
    );
    assert_eq!(layer(&net, "conv1").conv, Some(conv(32, 5, 2)));
    assert_eq!(layer(&net, "conv3").conv, Some(conv(64, 5, 2)));
    assert_eq!(layer(&net, "pool1").pool, Some(pool(PoolMethod::Max)));
    assert_eq!(layer(&net, "pool2").pool, Some(pool(PoolMethod::Ave)));
    assert_eq!(layer(&net, "relu1").relu, Some(0.0));
    assert_eq!(layer(&net, "relu1").bottoms, ["pool1"]);
    assert_eq!(layer(&net, "relu1").tops, ["pool1"]);
    assert_eq!(layer(&net, "ip1").inner_product, Some(ip(64)));
    assert_eq!(layer(&net, "ip2").inner_product, Some(ip(10)));
    let prob = layer(&net, "prob");
    assert_eq!((prob.conv, prob.pool, prob.relu), (None, None, None));
    assert!(net
        .layers
        .iter()
        .all(|l| l.phase.is_none() && l.blobs.is_empty()));
    // Each layer's span is its whole block.
    let span = layer(&net, "conv1").span.clone().expect("a span");
    assert!(source.text[span.clone()].starts_with("layer {\n  name: \"conv1\""));
    assert!(source.text[span].ends_with("}\n}"));
}

#[test]
fn cifar10_full_deploy() {
    let net = parse(&reference("cifar10_full.prototxt"));
    assert_eq!(
        net.input.as_ref().map(|i| i.dims.clone()),
        Some(vec![1, 3, 32, 32])
    );
    let kinds: Vec<&str> = net.layers.iter().map(|l| l.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "Convolution",
            "Pooling",
            "ReLU",
            "LRN",
            "Convolution",
            "ReLU",
            "Pooling",
            "LRN",
            "Convolution",
            "ReLU",
            "Pooling",
            "InnerProduct",
            "Softmax"
        ]
    );
    assert_eq!(layer(&net, "conv2").conv, Some(conv(32, 5, 2)));
    assert_eq!(layer(&net, "conv3").conv, Some(conv(64, 5, 2)));
    assert_eq!(layer(&net, "pool3").pool, Some(pool(PoolMethod::Ave)));
    assert_eq!(layer(&net, "ip1").inner_product, Some(ip(10)));
    assert_eq!(layer(&net, "norm1").bottoms, ["pool1"]);
}

#[test]
fn cifar10_quick_train_test_v1() {
    let net = parse(&reference("cifar10_quick_train_test.prototxt"));
    assert_eq!(net.name, "CIFAR10_quick");
    assert_eq!(net.input, None);
    let kinds: Vec<&str> = net.layers.iter().map(|l| l.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "Data",
            "Data",
            "Convolution",
            "Pooling",
            "ReLU",
            "Convolution",
            "ReLU",
            "Pooling",
            "Convolution",
            "ReLU",
            "Pooling",
            "InnerProduct",
            "InnerProduct",
            "Accuracy",
            "SoftmaxWithLoss"
        ]
    );
    assert_eq!(net.layers[0].phase, Some(Phase::Train));
    assert_eq!(net.layers[1].phase, Some(Phase::Test));
    assert_eq!(net.layers[0].tops, ["data", "label"]);
    assert_eq!(layer(&net, "accuracy").phase, Some(Phase::Test));
    assert_eq!(layer(&net, "loss").phase, None);
    assert_eq!(layer(&net, "loss").bottoms, ["ip2", "label"]);
    assert_eq!(layer(&net, "conv1").conv, Some(conv(32, 5, 2)));
    assert_eq!(layer(&net, "pool1").pool, Some(pool(PoolMethod::Max)));
    assert_eq!(layer(&net, "ip2").inner_product, Some(ip(10)));
}

#[test]
fn cifar10_full_train_test_v1() {
    let net = parse(&reference("cifar10_full_train_test.prototxt"));
    assert_eq!(net.layers.len(), 16);
    assert_eq!(layer(&net, "norm1").kind, "LRN");
    assert_eq!(layer(&net, "conv3").conv, Some(conv(64, 5, 2)));
    assert_eq!(layer(&net, "ip1").inner_product, Some(ip(10)));
    assert_eq!(layer(&net, "loss").kind, "SoftmaxWithLoss");
}

/// The layers the deploy (V2) and train/test (V1) files of one network
/// share read the same, but for their spans.
#[test]
fn v1_and_v2_reference_files_agree() {
    for (deploy, train_test) in [
        (
            "cifar10_quick.prototxt",
            "cifar10_quick_train_test.prototxt",
        ),
        ("cifar10_full.prototxt", "cifar10_full_train_test.prototxt"),
    ] {
        let v2 = without_spans(parse(&reference(deploy)));
        let v1 = without_spans(parse(&reference(train_test)));
        let mut shared = 0;
        for layer in &v2.layers {
            if let Some(other) = v1.layers.iter().find(|l| l.name == layer.name) {
                assert_eq!(layer, other, "{deploy} vs {train_test}");
                shared += 1;
            }
        }
        assert!(shared >= 10, "{deploy}: only {shared} shared layers");
    }
}

#[test]
fn v1_and_v2_syntax_give_the_same_net() {
    let v2 = r#"
name: "small"
layer { name: "d" type: "Data" top: "data" top: "label" include { phase: TRAIN } }
layer {
  name: "c" type: "Convolution" bottom: "data" top: "c"
  convolution_param { num_output: 8 kernel_h: 3 kernel_w: 1 stride: 2 pad: 1 group: 2 bias_term: false }
}
layer { name: "p" type: "Pooling" bottom: "c" top: "p" pooling_param { pool: AVE global_pooling: true } }
layer { name: "r" type: "ReLU" bottom: "p" top: "p" relu_param { negative_slope: 0.1 } }
layer { name: "x" type: "Dropout" bottom: "p" top: "p" dropout_param { dropout_ratio: 0.25 } }
layer { name: "f" type: "InnerProduct" bottom: "p" top: "f" inner_product_param { num_output: 10 } }
layer { name: "l" type: "SoftmaxWithLoss" bottom: "f" bottom: "label" exclude { phase: TEST } }
"#;
    let v1 = r#"
name: "small"
layers { name: "d" type: DATA top: "data" top: "label" include: { phase: TRAIN } }
layers {
  name: "c" type: CONVOLUTION bottom: "data" top: "c"
  convolution_param { num_output: 8 kernel_h: 3 kernel_w: 1 stride: 2 pad: 1 group: 2 bias_term: false }
}
layers { name: "p" type: POOLING bottom: "c" top: "p" pooling_param { pool: AVE global_pooling: true } }
layers { name: "r" type: RELU bottom: "p" top: "p" relu_param { negative_slope: 0.1 } }
layers { name: "x" type: DROPOUT bottom: "p" top: "p" dropout_param { dropout_ratio: 0.25 } }
layers { name: "f" type: INNER_PRODUCT bottom: "p" top: "f" inner_product_param { num_output: 10 } }
layers { name: "l" type: SOFTMAX_LOSS bottom: "f" bottom: "label" exclude { phase: TEST } }
"#;
    let a = without_spans(parse(&Source::new("v2.prototxt", v2)));
    let b = without_spans(parse(&Source::new("v1.prototxt", v1)));
    assert_eq!(a, b);
    let c = layer(&a, "c").conv.expect("conv");
    assert_eq!(
        (c.kernel, c.stride, c.pad, c.group, c.bias_term),
        ((3, 1), (2, 2), (1, 1), 2, false)
    );
    let p = layer(&a, "p").pool.expect("pool");
    assert_eq!(
        (p.kernel, p.global_pooling, p.method),
        (None, true, PoolMethod::Ave)
    );
    assert_eq!(layer(&a, "r").relu, Some(0.1));
    assert_eq!(layer(&a, "x").dropout, Some(0.25));
    assert_eq!(layer(&a, "l").phase, Some(Phase::Train));
}

#[test]
fn text_format_details() {
    // `name: { }`, separators, single quotes, escapes, joined strings, lists,
    // enum numbers, exponents, comments, unknown fields, Input layers,
    // BatchNorm and Scale.
    let text = r#"
name: 'n\x41' "\"q\""  # comment
layer: { name: "in"; type: "Input", top: "data" input_param { shape: { dim: [1, 3, 8, 8] } } }
layer {
  name: "c" type: "Convolution" bottom: "data" top: "c"
  param { lr_mult: 1e0 decay_mult: -2.5E-3 } weight_filler { type: "xavier" }
  convolution_param { num_output: 4 kernel_size: 3 kernel_size: 5 dilation: 2 engine: CUDNN }
}
layer { name: "b" type: "BatchNorm" bottom: "c" top: "c" batch_norm_param { use_global_stats: true eps: 1e-3 } }
layer { name: "s" type: "Scale" bottom: "c" top: "c" scale_param { bias_term: true } }
layer { name: "p" type: "Pooling" bottom: "c" top: "p" pooling_param { pool: 1 kernel_size: 2 stride_h: 2 stride_w: 1 round_mode: FLOOR } }
"#;
    let net = parse(&Source::new("details.prototxt", text));
    assert_eq!(net.name, "nA\"q\"");
    let input = net
        .input
        .clone()
        .expect("the Input layer declares the input");
    assert_eq!(
        (input.name.as_str(), input.dims.as_slice()),
        ("data", &[1, 3, 8, 8][..])
    );
    assert_eq!(net.layers[0].kind, "Input");
    let c = layer(&net, "c").conv.expect("conv");
    assert_eq!((c.kernel, c.dilation), ((3, 5), (2, 2)));
    let b = layer(&net, "b").batch_norm.expect("batch norm");
    assert_eq!((b.use_global_stats, b.eps), (Some(true), 1e-3));
    let s = layer(&net, "s").scale.expect("scale");
    assert_eq!((s.bias_term, s.axis, s.num_axes), (true, 1, 1));
    let p = layer(&net, "p").pool.expect("pool");
    assert_eq!(
        (p.method, p.stride, p.round_mode),
        (PoolMethod::Ave, (2, 1), RoundMode::Floor)
    );
}

fn with_blobs(mut net: CaffeNet) -> CaffeNet {
    let mut seed = 1u32;
    let mut next = || {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        f32::from_bits((seed >> 9) | 0x3f80_0000) - 1.5
    };
    for layer in &mut net.layers {
        let shapes: Vec<Vec<usize>> = match (&layer.conv, &layer.inner_product) {
            (Some(c), _) => vec![
                vec![c.num_output, 3, c.kernel.0, c.kernel.1],
                vec![c.num_output],
            ],
            (_, Some(p)) => vec![vec![p.num_output, 7], vec![p.num_output]],
            _ => continue,
        };
        layer.blobs = shapes
            .into_iter()
            .map(|shape| {
                let n: usize = shape.iter().product();
                Blob {
                    data: (0..n).map(|_| next()).collect(),
                    shape,
                    legacy: false,
                }
            })
            .collect();
    }
    // Values whose bits must survive exactly.
    if let Some(blob) = net.layers.iter_mut().find_map(|l| l.blobs.first_mut()) {
        blob.data[0] = -0.0;
        blob.data[1] = f32::MIN_POSITIVE / 2.0;
        blob.data[2] = f32::NAN;
    }
    net
}

fn bits(net: &CaffeNet) -> Vec<Vec<u32>> {
    net.layers
        .iter()
        .flat_map(|l| {
            l.blobs
                .iter()
                .map(|b| b.data.iter().map(|v| v.to_bits()).collect())
        })
        .collect()
}

#[test]
fn caffemodel_round_trip() {
    for name in [
        "cifar10_quick.prototxt",
        "cifar10_full.prototxt",
        "cifar10_quick_train_test.prototxt",
        "cifar10_full_train_test.prototxt",
    ] {
        let net = with_blobs(without_spans(parse(&reference(name))));
        let bytes = encode_caffemodel(&net);
        let back = decode_caffemodel(&bytes).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(bits(&back), bits(&net), "{name}: blobs bit-exact");
        // NaN != NaN: compare the rest with the blobs' bits checked above.
        let strip = |mut n: CaffeNet| {
            for l in &mut n.layers {
                for b in &mut l.blobs {
                    b.data.clear();
                }
            }
            n
        };
        assert_eq!(strip(back), strip(net), "{name}");
    }
}

#[test]
fn caffemodel_with_legacy_blobs() {
    // An old-style model: V1 layers, 4-D num/channels/height/width blobs,
    // one of them in double precision.
    let legacy = |dims: [i32; 4], data: Vec<f32>, double: bool| proto::BlobProto {
        num: Some(dims[0]),
        channels: Some(dims[1]),
        height: Some(dims[2]),
        width: Some(dims[3]),
        data: if double { Vec::new() } else { data.clone() },
        double_data: if double {
            data.iter().map(|&v| f64::from(v)).collect()
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    let model = proto::NetParameter {
        name: Some("old".into()),
        layers: vec![
            proto::V1LayerParameter {
                name: Some("conv1".into()),
                r#type: Some(proto::V1LayerType::Convolution as i32),
                convolution_param: Some(proto::ConvolutionParameter {
                    num_output: Some(2),
                    kernel_size: vec![1],
                    ..Default::default()
                }),
                blobs: vec![
                    legacy([2, 3, 1, 1], (0..6).map(|v| v as f32).collect(), false),
                    legacy([1, 1, 1, 2], vec![0.5, -0.5], true),
                ],
                ..Default::default()
            },
            proto::V1LayerParameter {
                name: Some("ip".into()),
                r#type: Some(proto::V1LayerType::InnerProduct as i32),
                inner_product_param: Some(proto::InnerProductParameter {
                    num_output: Some(3),
                    ..Default::default()
                }),
                blobs: vec![legacy([1, 1, 3, 4], vec![1.0; 12], false)],
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let net = decode_caffemodel(&model.encode_to_vec()).expect("decodes");
    let conv1 = layer(&net, "conv1");
    assert_eq!(conv1.kind, "Convolution");
    assert_eq!(conv1.blobs[0].shape, [2, 3, 1, 1]);
    assert_eq!(conv1.blobs[1].shape, [2]);
    assert_eq!(conv1.blobs[1].data, [0.5, -0.5]);
    assert!(conv1.blobs[1].legacy && conv1.blobs[1].fits(&[2]) && conv1.blobs[1].fits(&[1, 2]));
    let ip_weights = &layer(&net, "ip").blobs[0];
    assert_eq!(ip_weights.shape, [3, 4]);
    assert!(
        ip_weights.fits(&[3, 4]) && ip_weights.fits(&[1, 1, 3, 4]) && !ip_weights.fits(&[4, 3])
    );
    // Re-encoded, a legacy blob stays legacy.
    let again = decode_caffemodel(&encode_caffemodel(&net)).expect("decodes");
    assert_eq!(again, net);
}

#[test]
fn caffemodel_errors_name_the_layer_and_field() {
    let mut net = without_spans(parse(&reference("cifar10_quick.prototxt")));
    net.layers[0].blobs = vec![Blob {
        shape: vec![32, 3, 5, 5],
        data: vec![0.0; 864],
        legacy: false,
    }];
    let err = decode_caffemodel(&encode_caffemodel(&net)).expect_err("wrong size");
    assert_eq!(
        err.to_string(),
        "layer `conv1` (NetParameter.layer[0]): blob 0 has 864 values but its shape 32x3x5x5 needs 2400"
    );

    let mut model =
        proto::NetParameter::decode(encode_caffemodel(&net).as_slice()).expect("decodes");
    model.layer[0].blobs.clear();
    if let Some(conv) = &mut model.layer[0].convolution_param {
        conv.stride = vec![0];
    }
    let err = decode_caffemodel(&model.encode_to_vec()).expect_err("zero stride");
    assert_eq!(
        err.to_string(),
        "layer `conv1` (NetParameter.layer[0].convolution_param.stride[0]): `stride` must be a positive whole number, found 0"
    );

    let err = decode_caffemodel(&[0x0a, 0x05, b'a']).expect_err("truncated");
    assert!(matches!(err, CaffeModelError::Decode(_)), "{err}");

    // A dimension product that overflows is a size error, not a panic.
    let huge = proto::NetParameter {
        layer: vec![proto::LayerParameter {
            name: Some("x".into()),
            r#type: Some("Foo".into()),
            blobs: vec![proto::BlobProto {
                shape: Some(proto::BlobShape {
                    dim: vec![i64::MAX, i64::MAX, 4],
                }),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let err = decode_caffemodel(&huge.encode_to_vec()).expect_err("overflow");
    assert!(
        err.to_string().contains("needs more than can be counted"),
        "{err}"
    );

    // Millions of empty layers (2 bytes each) are refused before decoding.
    let spam: Vec<u8> = std::iter::repeat_n([0xa2u8, 0x06, 0x00], 1_100_000)
        .flatten()
        .collect();
    let err = decode_caffemodel(&spam).expect_err("too many");
    assert!(
        matches!(err, CaffeModelError::TooManyEntries { .. }),
        "{err}"
    );
}

#[test]
fn attach_weights_by_name() {
    let deploy = parse(&reference("cifar10_quick.prototxt"));
    let trained = with_blobs(without_spans(parse(&reference(
        "cifar10_quick_train_test.prototxt",
    ))));
    let weights = decode_caffemodel(&encode_caffemodel(&trained)).expect("decodes");
    let mut net = deploy.clone();
    let report = attach_weights(&mut net, weights).expect("attaches");
    assert_eq!(report.attached, ["conv1", "conv2", "conv3", "ip1", "ip2"]);
    assert!(report.unused.is_empty());
    let conv1 = &layer(&net, "conv1").blobs;
    let want = &layer(&trained, "conv1").blobs;
    assert_eq!(
        conv1.iter().map(|b| &b.shape).collect::<Vec<_>>(),
        want.iter().map(|b| &b.shape).collect::<Vec<_>>()
    );
    assert_eq!(bits(&net)[..2], bits(&trained)[..2]);
    assert!(layer(&net, "pool1").blobs.is_empty());
    // Spans survive: the net is still the prototxt's.
    assert_eq!(layer(&net, "conv1").span, layer(&deploy, "conv1").span);

    // A weights layer the net lacks is reported, not refused.
    let mut renamed = trained.clone();
    renamed
        .layers
        .iter_mut()
        .filter(|l| l.name == "ip2")
        .for_each(|l| l.name = "fc".into());
    let mut net = deploy.clone();
    let report = attach_weights(&mut net, renamed).expect("attaches");
    assert_eq!(report.unused, ["fc"]);
    assert!(layer(&net, "ip2").blobs.is_empty());

    // Two weights layers of one name with blobs are ambiguous.
    let mut doubled = trained.clone();
    let copy = layer(&trained, "conv1").clone();
    doubled.layers.push(copy);
    let err = attach_weights(&mut deploy.clone(), doubled).expect_err("ambiguous");
    assert!(
        err.to_string()
            .starts_with("the weights have two layers named `conv1`"),
        "{err}"
    );
}

#[test]
fn error_negative_kernel() {
    let out = errors("layer {\n  name: \"c\"\n  type: \"Convolution\"\n  convolution_param { num_output: 2 kernel_size: -3 }\n}\n");
    assert!(
        out.contains("error[E0804]: `kernel_size` must be a positive whole number, found -3"),
        "{out}"
    );
    assert!(out.contains("bad.prototxt:4:50"), "{out}");
}

#[test]
fn error_zero_stride_points_at_the_value() {
    let out = errors(
        "layer { name: \"p\" type: \"Pooling\"\n pooling_param { kernel_size: 2 stride: 0 } }\n",
    );
    assert!(
        out.contains("error[E0804]: `stride` must be a positive whole number, found 0"),
        "{out}"
    );
    assert!(out.contains("bad.prototxt:2:41"), "{out}");
}

#[test]
fn error_zero_kernel_in_a_list() {
    let out = errors("layer { name: \"c\" type: \"Convolution\"\n convolution_param { num_output: 1 kernel_size: 3 kernel_size: 0 } }\n");
    assert!(
        out.contains("`kernel_size` must be a positive whole number, found 0"),
        "{out}"
    );
    assert!(out.contains("bad.prototxt:2:64"), "{out}");
}

#[test]
fn error_string_where_a_number_belongs() {
    let out = errors("layer { name: \"c\" type: \"InnerProduct\"\n  inner_product_param { num_output: \"abc\" } }\n");
    assert!(
        out.contains(
            "error[E0803]: `num_output` must be a positive whole number, found the string \"abc\""
        ),
        "{out}"
    );
    assert!(out.contains("bad.prototxt:2:37"), "{out}");
}

#[test]
fn error_unclosed_block() {
    let out = errors(
        "name: \"x\"\nlayer {\n  name: \"c\"\n  convolution_param {\n    num_output: 3\n  }\n",
    );
    assert!(
        out.contains("error[E0801]: syntax error: expected `}` to close `layer`"),
        "{out}"
    );
    assert!(out.contains("bad.prototxt:7:1"), "{out}");
    assert!(out.contains("`layer` opened here"), "{out}");
}

#[test]
fn error_syntax_says_what_was_expected() {
    let out = errors("layer {\n  name \"c\"\n}\n");
    assert!(
        out.contains("error[E0801]: syntax error: expected `:` or `{`, found `\"`"),
        "{out}"
    );
    assert!(out.contains("bad.prototxt:2:8"), "{out}");
    let out = errors("layer { name: \"c\" type: }\n");
    assert!(out.contains("found `}`"), "{out}");
    assert!(out.contains("bad.prototxt:1:25"), "{out}");
    let out = errors("name: \"open\nlayer { }\n");
    assert!(
        out.contains("error[E0801]: syntax error: a string is not closed on its line"),
        "{out}"
    );
    assert!(out.contains("bad.prototxt:1:7"), "{out}");
}

#[test]
fn error_missing_and_conflicting_fields() {
    let out = errors(
        "layer { name: \"c\" type: \"Convolution\" convolution_param { kernel_size: 3 } }\n",
    );
    assert!(
        out.contains("error[E0806]: `convolution_param` has no `num_output`"),
        "{out}"
    );
    let out = errors("layer { name: \"c\" type: \"Convolution\"\nconvolution_param { num_output: 1 kernel_size: 3 kernel_h: 3 kernel_w: 1 } }\n");
    assert!(
        out.contains("error[E0805]: `kernel_size` and `kernel_h`/`kernel_w` are both given"),
        "{out}"
    );
    assert!(out.contains("bad.prototxt:2:"), "{out}");
    let out = errors(
        "layer { name: \"p\" type: \"Pooling\" pooling_param { kernel_size: 2 kernel_size: 3 } }\n",
    );
    assert!(
        out.contains("error[E0805]: `kernel_size` is given twice"),
        "{out}"
    );
    assert!(out.contains("first given here"), "{out}");
    let out = errors(
        "layer { name: \"p\" type: \"Pooling\" pooling_param { pool: MEAN kernel_size: 2 } }\n",
    );
    assert!(
        out.contains("error[E0807]: unknown `pool` value MEAN"),
        "{out}"
    );
    let out = errors("layers { name: \"c\" type: CONVOLUTON }\n");
    assert!(
        out.contains("error[E0807]: unknown `type` value CONVOLUTON"),
        "{out}"
    );
    assert!(out.contains("did you mean CONVOLUTION?"), "{out}");
    let out = errors("layer { name: \"c\" type: CONVOLUTION }\n");
    assert!(out.contains("error[E0803]"), "{out}");
    assert!(
        out.contains("type: \\\"Convolution\\\"") || out.contains("type: \"Convolution\""),
        "{out}"
    );
    let out = errors("layer { name: \"a\" type: \"ReLU\" }\nlayers { name: \"b\" type: RELU }\n");
    assert!(
        out.contains("error[E0808]: the net has both V2 `layer` and V1 `layers` blocks"),
        "{out}"
    );
    let out = errors("input: \"data\"\ninput_dim: 1\ninput_dim: 3\n");
    assert!(
        out.contains("error[E0808]: `input_dim` needs 4 values"),
        "{out}"
    );
    let out =
        errors("layer { name: \"x\" type: \"Dropout\" dropout_param { dropout_ratio: 1.5 } }\n");
    assert!(
        out.contains("`dropout_ratio` must be at least 0 and below 1, found 1.5"),
        "{out}"
    );
}

#[test]
fn error_deep_nesting_is_a_diagnostic() {
    let text = format!("{}{}", "a {".repeat(10_000), "}".repeat(10_000));
    let out = errors(&text);
    assert!(
        out.contains("error[E0802]: blocks nest deeper than 32 levels"),
        "{out}"
    );
    let out = errors("a { } }");
    assert!(out.contains("unexpected `}`"), "{out}");
}

#[test]
fn long_inputs_parse_in_linear_time() {
    let one = "layer { name: \"r\" type: \"ReLU\" bottom: \"x\" top: \"x\" }\n";
    let started = std::time::Instant::now();
    let net = parse(&Source::new("long.prototxt", one.repeat(20_000)));
    assert_eq!(net.layers.len(), 20_000);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}
