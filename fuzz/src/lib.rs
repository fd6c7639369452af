//! The property every fuzz input is checked against, shared by the
//! libFuzzer target (`fuzz_targets/front_end.rs`) and the stable `replay`
//! binary. It mirrors `tests/fuzz.rs` of the main crate: decode, load and
//! render diagnostics; for a valid model, print it and parse it again, and do
//! the same for each of the paper's rewrites. A panic is a finding.
//! `tests/fuzz.rs` includes this file as a module, so both check one property.

use allcnnc::back::net::print;
use allcnnc::diagnostic::{render_plain, Diagnostic, Source};
use allcnnc::front::{decode, load};
use allcnnc::ir::Graph;
use allcnnc::passes::{self, PassManager};

/// Runs the whole front end on `data`; panics when a property fails.
/// Returns whether `data` was a valid model.
pub fn front_end(data: &[u8]) -> bool {
    let source = match decode("fuzz.net", data.to_vec()) {
        Ok(source) => source,
        Err((source, diags)) => {
            check_diagnostics(&source, &diags);
            return false;
        }
    };
    let graph = match load(&source) {
        Ok(graph) => graph,
        Err(diags) => {
            check_diagnostics(&source, &diags);
            return false;
        }
    };
    round_trip(&graph, "printed");
    let _ = graph.model_hash();
    for name in ["strided", "allconv", "convpool"] {
        let pass = passes::by_name(name).expect("a known pass");
        let mut derived = graph.clone();
        match PassManager::derive(pass).run(&mut derived) {
            Ok(()) => round_trip(&derived.compacted(), name),
            Err(diags) => check_diagnostics(&source, &diags),
        }
    }
    true
}

fn round_trip(graph: &Graph, what: &str) {
    let source = Source::new(format!("{what}.net"), print(graph, &[]));
    match load(&source) {
        Ok(again) => assert_eq!(
            again.signature(),
            graph.signature(),
            "{what}: print -> parse changed the model:\n{}",
            source.text
        ),
        Err(diags) => panic!(
            "{what}: the printed model does not load:\n{}\n{}",
            source.text,
            render_plain(&source, &diags)
        ),
    }
}

/// Every diagnostic has a label inside the file, and rendering does not panic.
fn check_diagnostics(source: &Source, diags: &[Diagnostic]) {
    assert!(!diags.is_empty(), "an error without a diagnostic");
    for diag in diags {
        assert!(!diag.labels.is_empty(), "{} has no label", diag.code);
        for label in &diag.labels {
            assert!(
                label.span.start <= label.span.end && label.span.end <= source.text.len() + 1,
                "{}: label {:?} outside a file of {} bytes",
                diag.code,
                label.span,
                source.text.len()
            );
        }
    }
    let rendered = render_plain(source, diags);
    assert!(!rendered.is_empty());
}
