//! Snapshot tests of the compiler's diagnostics.
//!
//! Tests are data: every `tests/diagnostics/*.net` file is a small bad input.
//! Each one is run through the front end ([`decode`], [`load`]) and its source
//! and rendered plain-text diagnostics are snapshotted together (as gleam and
//! naga do), so a reviewer sees the input and the message side by side. A few
//! inputs that cannot live in a committed text file (invalid UTF-8) are built
//! here from bytes.
//!
//! Update the snapshots with `INSTA_UPDATE=always cargo test --test diagnostics`
//! (or `cargo insta review`), then read every changed `.snap` file.

use allcnnc::diagnostic::{escape_controls, render_plain, Diagnostic, Source};
use allcnnc::front::{decode, load};
use std::path::{Path, PathBuf};

/// Runs the front end on `bytes` and returns the diagnostics it reports.
fn diagnose(name: &str, bytes: Vec<u8>) -> (Source, Vec<Diagnostic>) {
    match decode(name, bytes) {
        Err((source, diags)) => (source, diags),
        Ok(source) => match load(&source) {
            Ok(graph) => panic!(
                "{name}: expected diagnostics, but it loaded ({} layers)",
                graph.len()
            ),
            Err(diags) => (source, diags),
        },
    }
}

/// The snapshot text: the source (line-numbered) and its diagnostics.
fn snapshot_text(source: &Source, diags: &[Diagnostic]) -> String {
    let mut out = String::from("--- source ---\n");
    for (line_idx, line) in source.text.lines().enumerate() {
        // Control characters as escapes: a snapshot is read in a terminal too.
        out.push_str(&format!(
            "{:>3} | {}\n",
            line_idx + 1,
            escape_controls(line)
        ));
    }
    out.push_str("--- diagnostics ---\n");
    out.push_str(&render_plain(source, diags));
    out
}

/// Checks one case against its snapshot `diagnostics__<stem>.snap`.
fn check(stem: &str, bytes: Vec<u8>) {
    let name = format!("tests/diagnostics/{stem}.net");
    let (source, diags) = diagnose(&name, bytes);
    assert!(
        diags.iter().any(Diagnostic::is_error),
        "{name}: no error reported"
    );
    for diag in &diags {
        assert!(
            !diag.labels.is_empty(),
            "{name}: diagnostic {} `{}` points nowhere",
            diag.code,
            diag.title
        );
        for label in &diag.labels {
            assert!(
                label.span.start <= label.span.end && label.span.end <= source.text.len() + 1,
                "{name}: label {:?} of {} is outside the file",
                label.span,
                diag.code
            );
        }
    }
    insta::with_settings!({ omit_expression => true, description => name.clone() }, {
        insta::assert_snapshot!(stem.to_string(), snapshot_text(&source, &diags));
    });
}

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/diagnostics");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/diagnostics exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "net"))
        .collect();
    files.sort();
    files
}

/// Every `.net` file of the folder; all failures are listed, not just the first.
#[test]
fn every_bad_file_has_its_snapshot() {
    let files = cases();
    assert!(files.len() >= 24, "only {} cases", files.len());
    let mut failed = Vec::new();
    for path in &files {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(path).expect("readable case");
        if std::panic::catch_unwind(|| check(&stem, bytes)).is_err() {
            failed.push(stem);
        }
    }
    assert!(failed.is_empty(), "failing cases: {failed:?}");
}

/// A file with a byte that is not UTF-8 (Latin-1 `é`) in a comment on line 3.
#[test]
fn invalid_utf8() {
    let mut bytes = b"network tiny {\n    input 1x28x28\n    # caf".to_vec();
    bytes.push(0xe9);
    bytes
        .extend_from_slice(b" au lait\n    classes 10\n    conv 10 3x3\n    gap\n    softmax\n}\n");
    check("invalid_utf8", bytes);
}

/// A truncated multi-byte sequence at the very end of the file.
#[test]
fn invalid_utf8_at_end() {
    let mut bytes = b"network tiny {\n}\n".to_vec();
    bytes.push(0xe2);
    bytes.push(0x82);
    check("invalid_utf8_at_end", bytes);
}

/// Control characters on the lines a diagnostic quotes (built here: a
/// committed file would act on the terminal of whoever prints it): an ANSI
/// "clear screen", a bell, an OSC "set title" sequence, a C1 CSI (two bytes)
/// and a right-to-left override (three). The rendering holds none of them:
/// the quoted lines show one `?` per byte, so the carets still point at the
/// right columns, and the snapshot's source shows their escapes.
#[test]
fn control_characters_are_not_printed() {
    let text = "network t\u{1b}[2J {\n    input 1x28x28\n    classes 10\n    conv 10 3x3\n    gap\n    softmax\n}\n";
    let (source, diags) = diagnose("syntax.net", text.as_bytes().to_vec());
    let rendered = render_plain(&source, &diags);
    assert!(rendered.contains("network t?[2J {"), "{rendered}");
    let text = "network tiny {\n    input 1x28x28 # \u{7}\u{1b}]0;pwned\u{7}\n    classes 10\n    conv 10 3x3 wide=1 # \u{9b}2J \u{202e}dlrow\n    gap\n    softmax\n}\n";
    let (source, diags) = diagnose("semantic.net", text.as_bytes().to_vec());
    let rendered = render_plain(&source, &diags);
    assert!(
        !rendered
            .chars()
            .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
        "{rendered:?}"
    );
    assert!(rendered.contains("wide=1 # ??2J ???dlrow"), "{rendered}");
    check("control_characters", text.as_bytes().to_vec());
}

/// A UTF-8 byte-order mark is dropped by `decode`, not reported.
#[test]
fn byte_order_mark_is_ignored() {
    let mut bytes = vec![0xef, 0xbb, 0xbf];
    bytes.extend_from_slice(
        b"network tiny {\n    input 1x28x28\n    classes 10\n    conv 10 3x3\n    gap\n    softmax\n}\n",
    );
    let source = decode("bom.net", bytes).expect("valid UTF-8");
    assert!(source.text.starts_with("network"));
    load(&source).expect("a BOM does not stop the file from loading");
}

/// Brackets nested deeper than the parser allows (built here: a committed
/// file of 100 parentheses would be unreadable).
#[test]
fn nesting_too_deep() {
    let text = format!(
        "let x = {}1{}\nnetwork tiny {{\n    input 1x28x28\n    classes 10\n    conv 10 3x3\n    gap\n    softmax\n}}\n",
        "(".repeat(100),
        ")".repeat(100)
    );
    check("nesting_too_deep", text.into_bytes());
}

/// An expression chain longer than the parser allows.
#[test]
fn expression_too_long() {
    let text = format!(
        "let x = 1{}\nnetwork tiny {{\n    input 1x28x28\n    classes 10\n    conv 10 3x3\n    gap\n    softmax\n}}\n",
        " + 1".repeat(300)
    );
    check("expression_too_long", text.into_bytes());
}

/// Every diagnostic code the checker emits for the folder's files is one
/// documented in docs/language.md.
#[test]
fn every_code_is_documented() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/language.md"))
            .expect("docs/language.md exists");
    for path in cases() {
        let bytes = std::fs::read(&path).unwrap();
        let name = path.display().to_string();
        let (_, diags) = diagnose(&name, bytes);
        for diag in diags {
            assert!(
                doc.contains(diag.code),
                "{name}: code {} is not in docs/language.md",
                diag.code
            );
        }
    }
}

/// One fenced example of docs/language.md: its fence tag, text, and the text
/// that follows it up to the next fence (where a failing example names its
/// code).
struct DocExample {
    tag: String,
    code: String,
    after: String,
}

fn doc_examples() -> Vec<DocExample> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/language.md"))
            .expect("docs/language.md exists");
    let mut examples: Vec<DocExample> = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in doc.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(tag)) => current = Some((tag.trim().to_string(), String::new())),
            (Some((tag, code)), Some(_)) => {
                examples.push(DocExample {
                    tag: std::mem::take(tag),
                    code: std::mem::take(code),
                    after: String::new(),
                });
                current = None;
            }
            (Some((_, code)), None) => {
                code.push_str(line);
                code.push('\n');
            }
            (None, None) => {
                if let Some(last) = examples.last_mut() {
                    last.after.push_str(line);
                    last.after.push('\n');
                }
            }
        }
    }
    examples
}

/// Every `net` example of the language reference loads; every `net-error`
/// example fails with the code named right after it.
#[test]
fn doc_examples_check() {
    let examples = doc_examples();
    let mut n_checked = 0;
    for (idx, example) in examples.iter().enumerate() {
        let source = Source::new(
            format!("docs/language.md example {idx}"),
            example.code.clone(),
        );
        match example.tag.as_str() {
            "net" => {
                if let Err(diags) = load(&source) {
                    panic!(
                        "example {idx} does not load:\n{}\n{}",
                        example.code,
                        render_plain(&source, &diags)
                    );
                }
            }
            "net-error" => {
                let diags = load(&source).expect_err("a net-error example must fail");
                let named = example
                    .after
                    .split(|c: char| !c.is_ascii_alphanumeric())
                    .find(|word| word.len() == 5 && word.starts_with("E0"))
                    .expect("a net-error example is followed by its code");
                assert!(
                    diags.iter().any(|d| d.code == named),
                    "example {idx} should fail with {named}:\n{}",
                    render_plain(&source, &diags)
                );
            }
            _ => continue,
        }
        n_checked += 1;
    }
    assert!(n_checked >= 10, "only {n_checked} examples found");
}
