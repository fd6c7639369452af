//! Property-based fuzzing of the Caffe reader (src/import/caffe), in the
//! style of tests/fuzz.rs.
//!
//! Prototxt inputs go through `parse_prototxt` and the diagnostic renderer;
//! binary inputs through `decode_caffemodel`. The properties: nothing panics,
//! every input finishes within [`TIME_LIMIT`], every diagnostic points inside
//! the file, and a net that reads back is encoded and decoded to the same
//! net. Inputs: random bytes, random sequences of the text format's tokens,
//! mutations of the reference prototxts (tests/import/caffe/), and random
//! bytes and mutations of encoded caffemodels. Case counts are small by
//! default; a long run sets `PROPTEST_CASES`, e.g.
//! `PROPTEST_CASES=100000 cargo test --release --test caffe_fuzz -- --nocapture`.
//! Each test prints how many inputs it ran.

use allcnnc::diagnostic::{render_plain, Source};
use allcnnc::import::caffe::{
    decode_caffemodel, encode_caffemodel, parse_prototxt, Blob, CaffeNet,
};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{Config, TestRunner};
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest any single input may take (debug build).
const TIME_LIMIT: Duration = Duration::from_secs(10);

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// An input, shown as (lossy) text when proptest reports a failure.
#[derive(Clone)]
struct Input(Vec<u8>);

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

fn clear_spans(mut net: CaffeNet) -> CaffeNet {
    if let Some(input) = &mut net.input {
        input.span = None;
    }
    for layer in &mut net.layers {
        layer.span = None;
    }
    net
}

/// Equality that treats NaN values of the same bits as equal.
fn same(a: &CaffeNet, b: &CaffeNet) -> bool {
    let bits = |net: &CaffeNet| -> Vec<Vec<u32>> {
        net.layers
            .iter()
            .flat_map(|l| {
                l.blobs
                    .iter()
                    .map(|b| b.data.iter().map(|v| v.to_bits()).collect())
            })
            .collect()
    };
    let strip = |net: &CaffeNet| {
        let mut net = net.clone();
        for layer in &mut net.layers {
            for blob in &mut layer.blobs {
                blob.data.clear();
            }
            // NaN slopes and ratios are refused, so the rest compares with ==.
        }
        net
    };
    bits(a) == bits(b) && strip(a) == strip(b)
}

/// Runs a prototxt through the reader; returns whether it read.
fn prototxt(bytes: &[u8]) -> bool {
    let started = Instant::now();
    let text = String::from_utf8_lossy(bytes).into_owned();
    let source = Source::new("fuzz.prototxt", text);
    let read = match parse_prototxt(&source) {
        Ok(net) => {
            let net = clear_spans(net);
            let back = decode_caffemodel(&encode_caffemodel(&net))
                .unwrap_or_else(|err| panic!("a read net does not round-trip: {err}\n{net:?}"));
            assert!(
                same(&back, &net),
                "round trip changed the net:\n{net:?}\n{back:?}"
            );
            true
        }
        Err(diags) => {
            assert!(!diags.is_empty(), "an error without diagnostics");
            for diag in &diags {
                for label in &diag.labels {
                    assert!(
                        label.span.start <= label.span.end && label.span.end <= source.text.len(),
                        "span {:?} outside a file of {} bytes: {}",
                        label.span,
                        source.text.len(),
                        diag.title
                    );
                    assert!(
                        source.text.is_char_boundary(label.span.start)
                            && source.text.is_char_boundary(label.span.end),
                        "span {:?} splits a character: {}",
                        label.span,
                        diag.title
                    );
                }
            }
            let rendered = render_plain(&source, &diags);
            assert!(rendered.contains("error[E08"), "{rendered}");
            false
        }
    };
    let elapsed = started.elapsed();
    assert!(
        elapsed < TIME_LIMIT,
        "took {elapsed:?} on {:?}",
        source.text
    );
    read
}

/// Runs a caffemodel through the decoder; returns whether it decoded.
fn caffemodel(bytes: &[u8]) -> bool {
    let started = Instant::now();
    let decoded = match decode_caffemodel(bytes) {
        Ok(net) => {
            let back = decode_caffemodel(&encode_caffemodel(&net))
                .unwrap_or_else(|err| panic!("a decoded net does not round-trip: {err}"));
            assert!(same(&back, &net), "round trip changed the net");
            true
        }
        Err(err) => {
            assert!(!err.to_string().is_empty());
            false
        }
    };
    let elapsed = started.elapsed();
    assert!(
        elapsed < TIME_LIMIT,
        "took {elapsed:?} on {} bytes",
        bytes.len()
    );
    decoded
}

/// Runs `strategy` through `check` and prints a tally.
fn fuzz<S>(name: &str, default_cases: u32, strategy: S, check: fn(&[u8]) -> bool) -> (u64, u64)
where
    S: Strategy,
    S::Value: AsRef<[u8]>,
{
    let strategy = strategy.prop_map(|value| Input(value.as_ref().to_vec()));
    let config = Config {
        cases: cases(default_cases),
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let tally = std::cell::Cell::new((0u64, 0u64));
    let result = runner.run(&strategy, |input| {
        let ok = check(&input.0);
        let (runs, good) = tally.get();
        tally.set((runs + 1, good + u64::from(ok)));
        Ok(())
    });
    let (runs, good) = tally.get();
    println!("fuzz {name}: {runs} executions ({good} read), no panic");
    if let Err(err) = result {
        panic!("fuzz {name}: {err}");
    }
    (runs, good)
}

fn references() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import/caffe");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("tests/import/caffe exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "prototxt"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| std::fs::read_to_string(path).expect("a UTF-8 prototxt"))
        .collect()
}

const TOKENS: &[&str] = &[
    "layer",
    "layers",
    "name",
    "type",
    "bottom",
    "top",
    "input",
    "input_dim",
    "input_shape",
    "dim",
    "include",
    "exclude",
    "phase",
    "TRAIN",
    "TEST",
    "convolution_param",
    "pooling_param",
    "inner_product_param",
    "relu_param",
    "dropout_param",
    "batch_norm_param",
    "scale_param",
    "input_param",
    "shape",
    "num_output",
    "kernel_size",
    "kernel_h",
    "kernel_w",
    "stride",
    "stride_h",
    "pad",
    "pad_w",
    "group",
    "dilation",
    "bias_term",
    "pool",
    "MAX",
    "AVE",
    "STOCHASTIC",
    "global_pooling",
    "round_mode",
    "FLOOR",
    "negative_slope",
    "dropout_ratio",
    "eps",
    "use_global_stats",
    "axis",
    "num_axes",
    "transpose",
    "CONVOLUTION",
    "POOLING",
    "RELU",
    "INNER_PRODUCT",
    "DATA",
    "\"Convolution\"",
    "\"Pooling\"",
    "\"InnerProduct\"",
    "\"ReLU\"",
    "\"Dropout\"",
    "\"Input\"",
    "\"BatchNorm\"",
    "\"Scale\"",
    "\"data\"",
    "'x'",
    "\"a\\\"b\"",
    "\"\\x41\\101\"",
    "{",
    "}",
    "{",
    "}",
    ":",
    ":",
    ",",
    ";",
    "[",
    "]",
    "#",
    "\n",
    " ",
    " ",
    "\t",
    "0",
    "1",
    "2",
    "3",
    "-1",
    "-3",
    "0.5",
    "1e-5",
    "1e40",
    "-0",
    "4294967295",
    "4294967296",
    "99999999999999999999",
    "true",
    "false",
    "\"",
    "'",
    "\\",
];

const MUTANTS: &[&str] = &[
    "0",
    "-1",
    "-3",
    "4294967296",
    "99999999999999999999",
    "1e40",
    "0.5",
    "1.5",
    "\"abc\"",
    "MAX",
    "{",
    "}",
    "[",
    "]",
    ":",
    "\"",
    "#",
    "\n",
    ",",
    "layer {",
    "layers {",
    "convolution_param {",
    "kernel_size: 0",
    "stride: 0",
    "global_pooling: true",
    "kernel_h: 2",
    "type: CONVOLUTION",
    "type: \"Input\"",
    "\u{e9}",
    "\u{feff}",
    "\r\n",
    "\0",
];

/// One edit of a text or a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
    FlipByte(Index, u8),
    Insert(Index, &'static str),
    ReplaceNumber(Index, &'static str),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::DeleteLine),
        any::<Index>().prop_map(Mutation::DuplicateLine),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::FlipByte(at, byte)),
        (any::<Index>(), select(MUTANTS)).prop_map(|(at, token)| Mutation::Insert(at, token)),
        (any::<Index>(), select(MUTANTS)).prop_map(|(at, n)| Mutation::ReplaceNumber(at, n)),
        any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(bytes: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    for mutation in mutations {
        let mut lines: Vec<Vec<u8>> = bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
        match mutation {
            Mutation::DeleteLine(at) => {
                lines.remove(at.index(lines.len()));
            }
            Mutation::DuplicateLine(at) => {
                let line = lines[at.index(lines.len())].clone();
                lines.insert(at.index(lines.len()), line);
            }
            Mutation::SwapLines(a, b) => {
                let n = lines.len();
                lines.swap(a.index(n), b.index(n));
            }
            Mutation::FlipByte(at, byte) => {
                if !bytes.is_empty() {
                    let at = at.index(bytes.len());
                    bytes[at] = *byte;
                }
                continue;
            }
            Mutation::Insert(at, token) => {
                let at = at.index(bytes.len() + 1);
                bytes.splice(at..at, token.bytes());
                continue;
            }
            Mutation::ReplaceNumber(at, replacement) => {
                let numbers = number_spans(&bytes);
                if !numbers.is_empty() {
                    let span = numbers[at.index(numbers.len())].clone();
                    bytes.splice(span, replacement.bytes());
                }
                continue;
            }
            Mutation::Truncate(at) => {
                bytes.truncate(at.index(bytes.len() + 1));
                continue;
            }
        }
        bytes = lines.join(&b'\n');
    }
    bytes
}

fn number_spans(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut spans = Vec::new();
    let mut start = None;
    for (pos, &b) in bytes.iter().enumerate() {
        let digit = b.is_ascii_digit() || (b == b'.' && start.is_some());
        match (digit, start) {
            (true, None) => start = Some(pos),
            (false, Some(s)) => {
                spans.push(s..pos);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push(s..bytes.len());
    }
    spans
}

/// The reference nets with small random blobs, encoded.
fn encoded_models() -> Vec<Vec<u8>> {
    references()
        .iter()
        .enumerate()
        .map(|(idx, text)| {
            let source = Source::new("ref.prototxt", text.clone());
            let mut net = clear_spans(parse_prototxt(&source).expect("a reference reads"));
            for (layer_idx, layer) in net.layers.iter_mut().enumerate() {
                if layer.conv.is_some() || layer.inner_product.is_some() {
                    let n = 3 + (idx + layer_idx) % 5;
                    layer.blobs = vec![
                        Blob {
                            shape: vec![n, 2],
                            data: (0..2 * n).map(|v| v as f32 * 0.25).collect(),
                            legacy: false,
                        },
                        Blob {
                            shape: vec![n],
                            data: vec![1.0; n],
                            legacy: layer_idx % 2 == 0,
                        },
                    ];
                }
            }
            encode_caffemodel(&net)
        })
        .collect()
}

#[test]
fn fuzz_prototxt_random_bytes() {
    fuzz(
        "prototxt random bytes",
        2_000,
        prop::collection::vec(any::<u8>(), 0..400),
        prototxt,
    );
}

#[test]
fn fuzz_prototxt_token_soup() {
    let soup = prop::collection::vec(select(TOKENS), 0..120).prop_map(|tokens| tokens.join(" "));
    fuzz("prototxt token soup", 3_000, soup, prototxt);
}

#[test]
fn fuzz_prototxt_mutated_references() {
    let refs = references();
    assert!(refs.len() >= 4);
    let strategy = (select(refs), prop::collection::vec(mutation(), 1..6))
        .prop_map(|(text, mutations)| mutate(text.as_bytes(), &mutations));
    let (_, read) = fuzz("prototxt mutated references", 3_000, strategy, prototxt);
    assert!(
        read > 0,
        "no mutation read: the round trip was never checked"
    );
}

#[test]
fn fuzz_caffemodel_random_bytes() {
    fuzz(
        "caffemodel random bytes",
        3_000,
        prop::collection::vec(any::<u8>(), 0..600),
        caffemodel,
    );
}

#[test]
fn fuzz_caffemodel_mutated() {
    let models = encoded_models();
    let strategy = (select(models), prop::collection::vec(mutation(), 1..5))
        .prop_map(|(bytes, mutations)| mutate(&bytes, &mutations));
    fuzz("caffemodel mutations", 3_000, strategy, caffemodel);
}

/// Deep or long inputs stay within the limits.
#[test]
fn fuzz_regressions_deep_and_long() {
    assert!(!prototxt("a {".repeat(100_000).as_bytes()));
    // An unknown field holding 100,000 joined strings: valid, and fast.
    assert!(prototxt(
        format!("a: {}", "\"x\" ".repeat(100_000)).as_bytes()
    ));
    assert!(!prototxt("layer { name: \"".repeat(10_000).as_bytes()));
    let mut nested = Vec::new();
    for _ in 0..10_000 {
        // A length-delimited field 100 wrapping the rest, again and again.
        let mut outer = vec![0xa2, 0x06];
        let mut len = nested.len();
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                outer.push(byte);
                break;
            }
            outer.push(byte | 0x80);
        }
        outer.extend_from_slice(&nested);
        nested = outer;
        if nested.len() > 1 << 20 {
            break;
        }
    }
    assert!(!caffemodel(&nested));
}
