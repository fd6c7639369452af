//! Property-based fuzzing of the whole front end.
//!
//! Every input goes through [`decode`], [`load`], the diagnostic renderer,
//! and, when it loads, the `.net` printer and the three paper rewrites. The
//! properties: nothing panics, every input finishes within [`TIME_LIMIT`],
//! every diagnostic points inside the file, and printing a valid model (or a
//! derived one) and parsing the text again gives the same
//! [`Graph::signature`].
//!
//! Inputs come from five generators: random bytes, random printable ASCII,
//! random sequences of the language's own tokens, mutations of every model in
//! `models/`, and generated well-formed models. Case counts are small by
//! default (the whole file runs in well under 30 s in a debug build); a long
//! run sets `PROPTEST_CASES`, e.g.
//! `PROPTEST_CASES=200000 cargo test --release --test fuzz -- --nocapture`.
//! Each test prints how many inputs it ran.
//!
//! Crashes found by fuzzing are kept below as named regression tests.

use allcnnc::diagnostic::{render_plain, Source};
use allcnnc::front::load;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{Config, TestRunner};
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest any single input may take through the whole pipeline (debug build).
const TIME_LIMIT: Duration = Duration::from_secs(10);

/// What one run of the pipeline saw.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    executions: u64,
    valid: u64,
}

/// Runs the whole front end on `bytes` and checks the properties; returns
/// whether the input was a valid model.
fn front_end(bytes: &[u8]) -> bool {
    let started = Instant::now();
    let valid = front_end_unclocked(bytes);
    let elapsed = started.elapsed();
    assert!(
        elapsed < TIME_LIMIT,
        "took {elapsed:?} on {:?}",
        String::from_utf8_lossy(bytes)
    );
    valid
}

/// The property itself lives in the libFuzzer crate, so `cargo fuzz` and
/// this suite check the same thing.
#[path = "../fuzz/src/lib.rs"]
mod property;

mod common;
use common::{cases, layer};

use property::front_end as front_end_unclocked;

/// An input, shown as (lossy) text when proptest reports a failure.
#[derive(Clone)]
struct Input(Vec<u8>);

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// Runs `strategy` through the front end `n_cases` times and prints a tally.
fn fuzz<S>(name: &str, default_cases: u32, strategy: S) -> Tally
where
    S: Strategy,
    S::Value: AsRef<[u8]>,
{
    let strategy = strategy.prop_map(|value| Input(value.as_ref().to_vec()));
    let config = Config {
        cases: cases(default_cases),
        // Failures become named tests in this file, not a regressions file.
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let tally = std::cell::Cell::new(Tally::default());
    let result = runner.run(&strategy, |input| {
        let valid = front_end(&input.0);
        let mut t = tally.get();
        t.executions += 1;
        t.valid += u64::from(valid);
        tally.set(t);
        Ok(())
    });
    let tally = tally.get();
    println!(
        "fuzz {name}: {} executions ({} valid models), no panic",
        tally.executions, tally.valid
    );
    if let Err(err) = result {
        panic!("fuzz {name}: {err}");
    }
    tally
}

/// The models of `models/`, as text.
fn models() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("models/ exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "net"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| std::fs::read_to_string(path).expect("a UTF-8 model"))
        .collect()
}

/// Tokens of the language, and values at the edges of every range.
const TOKENS: &[&str] = &[
    "network",
    "block",
    "let",
    "use",
    "repeat",
    "in",
    "train",
    "input",
    "classes",
    "conv",
    "maxpool",
    "avgpool",
    "gap",
    "global_avg_pool",
    "dropout",
    "softmax",
    "{",
    "}",
    "(",
    ")",
    "=",
    ",",
    ":",
    "..",
    "+",
    "-",
    "*",
    "/",
    "x",
    "\n",
    "\n",
    "\n",
    " ",
    "#",
    "//",
    "stride=",
    "pad=",
    "act=",
    "bias=",
    "round=",
    "k=",
    "channels=",
    "same",
    "valid",
    "relu",
    "none",
    "leaky(0.1)",
    "leaky",
    "up",
    "down",
    "true",
    "false",
    "3x3",
    "1x1",
    "2x2",
    "3x32x32",
    "1x28x28",
    "0",
    "1",
    "2",
    "3",
    "10",
    "96",
    "0.5",
    "-1",
    "1e308",
    "-1e308",
    "1e-308",
    "99999999999999999999",
    "16777216",
    "16777217",
    "4294967296",
    "0.0",
    "1.0",
    "0x0",
    "1x1x1x1",
    "optimizer",
    "sgd",
    "momentum=",
    "lr",
    "schedule",
    "step",
    "cosine",
    "at=",
    "gamma=",
    "epochs",
    "batch",
    "weight_decay",
    "preprocess",
    "gcn_zca",
    "augment",
    "flip",
    "translate=",
    "warmup",
    "init",
    "lsuv",
    "a",
    "i",
    "w",
];

/// Replacement tokens for mutations: numbers at the edges, and syntax.
const MUTANTS: &[&str] = &[
    "99999999999999999999",
    "0",
    "-1",
    "1e308",
    "-1e308",
    "1e-308",
    "0.999999999",
    "1",
    "16777216",
    "16777217",
    "18446744073709551616",
    "4294967295",
    "2147483648",
    "0x0",
    "1x0",
    "100000x100000",
    "{",
    "}",
    "(",
    ")",
    "=",
    "\n",
    "#",
    ":",
    ",",
    "..",
    "/ 0",
    "* 1e308",
    "conv",
    "softmax",
    "gap",
    "maxpool 3x3 stride=2",
    "dropout 1",
    "repeat 10000 {",
    "use b()",
    "\u{e9}",
    "\u{feff}",
    "\r\n",
    "\t",
    "\0",
];

/// One edit of a model's text.
#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
    FlipByte(Index, u8),
    Insert(Index, &'static str),
    ReplaceNumber(Index, &'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::DeleteLine),
        any::<Index>().prop_map(Mutation::DuplicateLine),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::FlipByte(at, byte)),
        (any::<Index>(), select(MUTANTS)).prop_map(|(at, token)| Mutation::Insert(at, token)),
        (any::<Index>(), select(MUTANTS)).prop_map(|(at, n)| Mutation::ReplaceNumber(at, n)),
    ]
}

/// Applies `mutations` to `text`, as bytes (so a flip may break UTF-8).
fn mutate(text: &str, mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
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
        }
        bytes = lines.join(&b'\n');
    }
    bytes
}

/// Byte ranges of the runs of digits (and `.`) in `bytes`.
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

/// A generated model: mostly valid, with the occasional out-of-range value.
fn generated_model() -> impl Strategy<Value = String> {
    let input = (1usize..4, 8usize..64, 8usize..64);
    let classes = 1usize..20;
    let layers = prop::collection::vec(layer(48, 6), 0..8);
    let train = prop::option::of(train());
    // `+` and `*` of small whole numbers keep every constant a valid width;
    // `- 0` and `/ 1` still exercise the other operators.
    let lets = prop::collection::vec(
        prop_oneof![
            (1u32..16).prop_map(|n| format!("+ {n}")),
            (1u32..4).prop_map(|n| format!("* {n}")),
            Just("- 0".to_string()),
            Just("/ 1".to_string()),
            Just("* (2 - 1)".to_string()),
        ],
        0..3,
    );
    (
        input,
        classes,
        layers,
        train,
        lets,
        prop::bool::weighted(0.85),
        any::<bool>(),
    )
        .prop_map(
            |((c, h, w), classes, layers, train, lets, ends_well, use_block)| {
                let mut text = String::from("# generated\n");
                let mut value = String::from("8");
                for (idx, op) in lets.iter().enumerate() {
                    text.push_str(&format!("let c{idx} = {value} {op}\n"));
                    value = format!("c{idx}");
                }
                if use_block {
                    text.push_str("block pair(width, p) {\n    conv width 3x3\n    dropout p\n}\n");
                }
                text.push_str(&format!(
                    "network gen {{\n    input {c}x{h}x{w}\n    classes {classes}\n"
                ));
                if !lets.is_empty() {
                    text.push_str(&format!("    conv {value} 1x1\n"));
                }
                if use_block {
                    text.push_str(
                        "    repeat i in 1..2 {\n        use pair(4 * i, 0.1 * i)\n    }\n",
                    );
                }
                for (idx, layer) in layers.iter().enumerate() {
                    let label = if idx % 4 == 3 {
                        format!("l{idx}: ")
                    } else {
                        String::new()
                    };
                    text.push_str(&format!("    {label}{layer}\n"));
                }
                if ends_well {
                    text.push_str(&format!(
                        "    conv {classes} 1x1 act=none\n    gap\n    softmax\n"
                    ));
                } else {
                    text.push_str("    gap\n    softmax\n");
                }
                text.push_str("}\n");
                if let Some(train) = train {
                    text.push_str(&train);
                }
                text
            },
        )
}

fn train() -> impl Strategy<Value = String> {
    let schedule = prop_oneof![
        Just("schedule constant".to_string()),
        Just("schedule cosine".to_string()),
        prop::collection::btree_set(1u32..400, 1..4).prop_map(|at| {
            let at: Vec<String> = at.iter().map(u32::to_string).collect();
            format!("schedule step gamma=0.1 at={}", at.join(","))
        }),
    ];
    (
        schedule,
        1u32..1000,
        1u32..400,
        1u32..512,
        0u32..10,
        select(&["none", "normalize", "gcn_zca"][..]),
        any::<bool>(),
        0u32..8,
        any::<bool>(),
        select(&["he", "lsuv"][..]),
    )
        .prop_map(
            |(schedule, lr, epochs, batch, warmup, pre, flip, translate, nesterov, init)| {
                let flip = if flip { " flip" } else { "" };
                format!(
                    "train {{\n    optimizer sgd momentum=0.9 nesterov={nesterov}\n    lr {}\n    {schedule}\n    warmup {warmup}\n    epochs {epochs}\n    batch {batch}\n    weight_decay 0.0005\n    preprocess {pre}\n    augment{flip} translate={translate}\n    init {init}\n}}\n",
                    lr as f64 / 1000.0
                )
            },
        )
}

#[test]
fn fuzz_random_bytes() {
    fuzz(
        "random bytes",
        6_000,
        prop::collection::vec(any::<u8>(), 0..400),
    );
}

#[test]
fn fuzz_random_ascii() {
    fuzz("random ascii", 6_000, "[ -~\n\t]{0,400}");
}

#[test]
fn fuzz_token_soup() {
    let soup = prop::collection::vec(select(TOKENS), 0..120).prop_map(|tokens| {
        tokens
            .iter()
            .map(|t| format!("{t} "))
            .collect::<String>()
            .into_bytes()
    });
    fuzz("token soup", 12_000, soup);
}

#[test]
fn fuzz_mutated_models() {
    let models = models();
    assert!(!models.is_empty());
    for model in &models {
        assert!(
            front_end(model.as_bytes()),
            "a model of models/ does not load"
        );
    }
    let strategy = (select(models), prop::collection::vec(mutation(), 1..6))
        .prop_map(|(model, mutations)| mutate(&model, &mutations));
    fuzz("mutated models", 12_000, strategy);
}

#[test]
fn fuzz_generated_models() {
    let tally = fuzz(
        "generated models",
        5_000,
        generated_model().prop_map(String::into_bytes),
    );
    // The generator is meant to produce mostly valid models (about 70%); if
    // most failed, it would test only the error paths.
    assert!(
        tally.valid * 2 >= tally.executions,
        "only {} of {} generated models are valid",
        tally.valid,
        tally.executions
    );
}

// Regression cases: inputs that once crashed or hung the front end.

/// Found by `fuzz_mutated_models` (200000-case release run): a slope of
/// 0.999999999 passed the range check as f64 but is stored as f32, where it
/// is 1.0; the printed `act=leaky(1)` then failed to load.
#[test]
fn regression_leaky_slope_rounds_to_one() {
    let text = "network t {\n    input 1x8x8\n    classes 2\n    conv 2 1x1 act=leaky(0.999999999)\n    gap\n    softmax\n}\n";
    assert!(!front_end(text.as_bytes()));
}

/// Found while fixing the case above: `slope=` without `act=` skipped the
/// range check, so `slope=5` was accepted.
#[test]
fn regression_slope_option_unchecked() {
    let text = "network t {\n    input 1x8x8\n    classes 2\n    conv 2 1x1 slope=5\n    gap\n    softmax\n}\n";
    assert!(!front_end(text.as_bytes()));
    let ok = text.replace("slope=5", "slope=0.2");
    assert!(front_end(ok.as_bytes()));
}

/// Found by libFuzzer (`fuzz/`, slow unit of 33 s): a mistake inside nested
/// repeats was reported once per expansion, a million identical diagnostics
/// (900 MB, and as many messages on the terminal). Now reported once.
#[test]
fn regression_repeated_diagnostic_flood() {
    let text = "network tiny {\n    input 3x32x321x1\n    classes 10\n    repeat 9000 {\n        repeat 9000 {\n            repeat 9000 {\n                llret x = 1\n            }\n        }\n    }\n    conv 10 1x1\n    gap\n    softmax\n}\n";
    let source = Source::new("flood.net", text);
    let diags = load(&source).expect_err("an unknown layer kind");
    let unknown = diags.iter().filter(|d| d.code == "E0201").count();
    assert_eq!(unknown, 1, "{}", render_plain(&source, &diags));
    assert!(!front_end(text.as_bytes()));
}

/// The same flood through blocks, each using the previous one twice (2^30
/// uses of a block with a mistake): elaboration stops after 10000 errors.
#[test]
fn regression_exponential_blocks_with_error() {
    let mut text = String::from("block b0() {\n    cnov 1 1x1\n}\n");
    for level in 1..=30 {
        let prev = level - 1;
        text.push_str(&format!(
            "block b{level}() {{\n    use b{prev}()\n    use b{prev}()\n}}\n"
        ));
    }
    text.push_str("network t {\ninput 1x8x8\nclasses 1\nuse b30()\ngap\nsoftmax\n}\n");
    let source = Source::new("blocks.net", text.as_str());
    let diags = load(&source).expect_err("an unknown layer kind");
    assert_eq!(diags.len(), 1, "{}", render_plain(&source, &diags));
    assert!(!front_end(text.as_bytes()));
}

/// Found by libFuzzer (`fuzz/`, timeout): nested repeats around an empty
/// body. The step limit counted statements only, and an empty body has none,
/// so 9000^3 iterations ran (two minutes in a debug build). Iterations count
/// as steps now.
#[test]
fn regression_nested_empty_repeats() {
    let text = "network tiny {\n    input 3x32x32\n    classes 10\n    repeat 9000 {\n        repeat 9000 {\n            repeat 9000 {\n                # nothing\n            }\n        }\n    }\n    conv 10 1x1\n    gap\n    softmax\n}\n";
    let source = Source::new("empty.net", text);
    let diags = load(&source).expect_err("the step limit");
    assert!(diags.iter().any(|d| d.code == "E0214"));
    assert!(!front_end(text.as_bytes()));
}

/// Found by libFuzzer (`fuzz/`, timeout): nested `repeat ... {` lines that
/// never close made pest parse each body, fail at the end of the file, and
/// parse it again as plain lines: twice the work per level. Unclosed braces
/// (and text after a `}`, the other late failure) are now found first.
#[test]
fn regression_unclosed_nested_repeats() {
    let mut text = String::from("network tiny {\n    input 3x32x32\n    classes 10\n");
    text.push_str(&"    repeat 9000 {\n    lasses 10\n".repeat(30));
    assert!(!front_end(text.as_bytes()));
    let mut text = String::from("network tiny {\n    input 3x32x32\n    classes 10\n");
    text.push_str(&"    repeat 2 {\n".repeat(30));
    text.push_str(&"    } x\n".repeat(30));
    text.push_str("}\n");
    assert!(!front_end(text.as_bytes()));
}

/// A chain of 200000 additions overflowed the stack while evaluating (and
/// dropping) the expression tree.
#[test]
fn regression_long_operator_chain() {
    let text = format!("let x = {}1\n", "1+".repeat(200_000));
    assert!(!front_end(text.as_bytes()));
}

/// 50000 nested parentheses: pest gave up with "unexpected text" at a
/// random column; now the nesting limit reports it.
#[test]
fn regression_deep_parentheses() {
    let text = format!("let x = {}1{}\n", "(".repeat(50_000), ")".repeat(50_000));
    assert!(!front_end(text.as_bytes()));
}

/// 20000 nested repeats.
#[test]
fn regression_deep_repeats() {
    let text = format!(
        "network t {{\ninput 1x8x8\nclasses 1\n{}{}gap\nsoftmax\n}}\n",
        "repeat 1 {\n".repeat(20_000),
        "}\n".repeat(20_000)
    );
    assert!(!front_end(text.as_bytes()));
}

/// Three nested repeats of 9000 never finished (the layer cap stopped
/// adding layers, not iterating).
#[test]
fn regression_nested_repeats_hang() {
    let text = "network t {\ninput 1x8x8\nclasses 1\nrepeat 9000 {\nrepeat 9000 {\nrepeat 9000 {\nconv 1 1x1\n}\n}\n}\ngap\nsoftmax\n}\n";
    assert!(!front_end(text.as_bytes()));
}

/// Blocks that each use the previous one twice: 2^30 uses.
#[test]
fn regression_exponential_blocks() {
    let mut text = String::from("block b0() {\n    gap\n}\n");
    for level in 1..=30 {
        let prev = level - 1;
        text.push_str(&format!(
            "block b{level}() {{\n    use b{prev}()\n    use b{prev}()\n}}\n"
        ));
    }
    text.push_str("network t {\ninput 1x8x8\nclasses 1\nuse b30()\nsoftmax\n}\n");
    assert!(!front_end(text.as_bytes()));
}
