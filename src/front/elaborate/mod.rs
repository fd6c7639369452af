//! Elaboration: the syntax tree to the IR.
//!
//! Evaluates constants, expands `block`/`use` and `repeat`, checks every layer
//! kind, option and value, and builds the [`Graph`] with each layer's span.
//! Errors are collected, not thrown: one run reports every problem it can.
//!
//! The work is split by concern, all of it methods of one `Elaborator`:
//! `scope` evaluates constants and expressions, `expand` walks statements
//! through blocks and repeats, `layers` checks each layer kind, `values`
//! checks option values, `recipe` reads the `train` section, `args` hands
//! out a statement's arguments and `hints` suggests spellings.

mod args;
mod expand;
mod hints;
mod layers;
mod recipe;
mod scope;
mod values;

pub use hints::nearest;

use super::ast::*;
use crate::diagnostic::Diagnostic;
use crate::ir::{Graph, Node, Shape};
use std::collections::{HashMap, HashSet};

/// Most layers an expanded network may have (guards against runaway repeats).
pub const MAX_LAYERS: usize = 10_000;
/// Most nested `use`/`repeat` levels.
const MAX_DEPTH: usize = 32;
/// Largest integer a size, count or channel option may take.
const MAX_INT: u64 = 1 << 24;
/// Most statements elaboration may expand (nested repeats and blocks multiply:
/// without a cap, `repeat 9999 { repeat 9999 { ... } }` would never finish).
const MAX_STEPS: usize = 1_000_000;
/// Errors (duplicates included) after which elaboration stops: past this, a
/// block used many times would only repeat what is already reported.
const MAX_ERRORS: usize = 10_000;

/// Elaborates a parsed file into a graph; the diagnostics hold every error.
pub fn elaborate(file: &File) -> Result<Graph, Vec<Diagnostic>> {
    let mut cx = Elaborator::default();
    let mut network = None;
    let mut train = None;
    for item in &file.items {
        match item {
            Item::Const(def) => cx.define(def),
            Item::Block(def) => {
                if let Some(prev) = cx.blocks.get(&def.name.name) {
                    cx.diags.push(
                        Diagnostic::error(
                            "E0203",
                            format!("block `{}` is defined twice", def.name.name),
                        )
                        .at(def.name.span.clone(), "second definition")
                        .also(prev.name.span.clone(), "first definition"),
                    );
                } else {
                    cx.blocks.insert(def.name.name.clone(), def.clone());
                }
            }
            Item::Network(def) => {
                if let Some(prev) = network {
                    let prev: &NetworkDef = prev;
                    cx.diags.push(
                        Diagnostic::error("E0204", "a file describes one network")
                            .at(def.name.span.clone(), "second network")
                            .also(prev.name.span.clone(), "first network")
                            .hint("put each network in its own .net file"),
                    );
                } else {
                    network = Some(def);
                }
            }
            Item::Train(def) => {
                if train.is_some() {
                    cx.diags.push(
                        Diagnostic::error("E0204", "a file has at most one `train` section")
                            .at(def.span.start..def.span.start + 5, "second `train` section"),
                    );
                } else {
                    train = Some(def);
                }
            }
        }
    }
    let Some(network) = network else {
        cx.diags.push(
            Diagnostic::error("E0205", "no `network` in this file")
                .at(0..0, "expected `network NAME { ... }`")
                .hint("start from one of the files in models/, e.g. models/all-cnn-c.net"),
        );
        return Err(cx.diags);
    };
    let graph = cx.network(network, train);
    cx.dedup();
    if cx.diags.iter().any(Diagnostic::is_error) {
        Err(cx.diags)
    } else {
        Ok(graph)
    }
}

/// The state of one elaboration: constant scopes, blocks, the layers built so
/// far and the diagnostics collected; each concern's methods live in the
/// submodule named after it.
#[derive(Default)]
struct Elaborator {
    /// Constant scopes, innermost last.
    scopes: Vec<HashMap<String, f64>>,
    blocks: HashMap<String, BlockDef>,
    diags: Vec<Diagnostic>,
    layers: Vec<Node>,
    input: Option<(Shape, Span)>,
    classes: Option<(usize, Span)>,
    depth: usize,
    too_many_reported: bool,
    /// Statements expanded so far (see [`MAX_STEPS`]).
    steps: usize,
    /// Diagnostics already kept, so a mistake inside a `repeat` or a block
    /// used many times is reported once, not once per expansion.
    reported: HashSet<String>,
    /// `diags[..deduplicated]` has been through [`Elaborator::dedup`].
    deduplicated: usize,
    /// Errors pushed so far, duplicates included.
    n_errors: usize,
}

impl Elaborator {
    /// Drops the diagnostics pushed since the last call that repeat an
    /// earlier one exactly (same code, message, labels and notes).
    fn dedup(&mut self) {
        let fresh: Vec<Diagnostic> = self.diags.drain(self.deduplicated..).collect();
        self.n_errors += fresh.iter().filter(|diag| diag.is_error()).count();
        for diag in fresh {
            if self.reported.insert(format!("{diag:?}")) {
                self.diags.push(diag);
            }
        }
        self.deduplicated = self.diags.len();
    }

    fn network(&mut self, def: &NetworkDef, train: Option<&TrainDef>) -> Graph {
        self.scopes.push(HashMap::new());
        self.stmts(&def.body);
        self.scopes.pop();
        let (input, input_span) = self.input.clone().unwrap_or_else(|| {
            self.diags.push(
                Diagnostic::error(
                    "E0209",
                    format!("network `{}` has no `input`", def.name.name),
                )
                .at(def.name.span.clone(), "this network")
                .hint("add a line `input 3x32x32` (channels x height x width)"),
            );
            (Shape::new(1, 1, 1), def.name.span.clone())
        });
        let (classes, classes_span) = self.classes.clone().unwrap_or_else(|| {
            self.diags.push(
                Diagnostic::error(
                    "E0209",
                    format!("network `{}` has no `classes`", def.name.name),
                )
                .at(def.name.span.clone(), "this network")
                .hint("add a line `classes 10`"),
            );
            (1, def.name.span.clone())
        });
        let mut graph = Graph::new(def.name.name.clone(), input, classes);
        graph.name_span = def.name.span.clone();
        graph.input_span = input_span;
        graph.classes_span = classes_span;
        let layers = std::mem::take(&mut self.layers);
        // After an error in the body, no layers is its consequence (a bad
        // layer, or the rest of the body skipped), not news.
        if layers.is_empty() && self.n_errors == 0 {
            self.diags.push(
                Diagnostic::error(
                    "E0209",
                    format!("network `{}` has no layers", def.name.name),
                )
                .at(def.name.span.clone(), "this network"),
            );
        }
        for node in layers {
            graph.push(node);
        }
        graph.renumber();
        self.check_names(&graph);
        if let Some(train) = train {
            graph.training = Some(self.training(train));
        }
        graph
    }

    fn check_names(&mut self, graph: &Graph) {
        let mut seen: HashMap<&str, &Node> = HashMap::new();
        for node in graph.nodes() {
            if let Some(first) = seen.get(node.name.as_str()) {
                let mut diag =
                    Diagnostic::error("E0210", format!("duplicate layer name `{}`", node.name))
                        .at(node.span.clone(), "second layer with this name")
                        .also(first.span.clone(), "first layer with this name");
                if !node.labelled || !first.labelled {
                    diag = diag.note(format!(
                        "unnamed layers are called `{}N` by their position; `{}` is also a default name",
                        node.op.name_prefix(),
                        node.name
                    ));
                }
                self.diags.push(diag.hint("give the layers distinct names"));
            } else {
                seen.insert(node.name.as_str(), node);
            }
        }
    }
}

/// The span of a statement, for diagnostics.
fn stmt_span(stmt: &Stmt) -> Span {
    match stmt {
        Stmt::Layer(layer) => layer.span.clone(),
        Stmt::Const(def) => def.span.clone(),
        Stmt::Use { span, .. } | Stmt::Repeat { span, .. } | Stmt::Bad(span) => span.clone(),
    }
}
