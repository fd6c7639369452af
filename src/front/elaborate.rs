//! Elaboration: the syntax tree to the IR.
//!
//! Evaluates constants, expands `block`/`use` and `repeat`, checks every layer
//! kind, option and value, and builds the [`Graph`] with each layer's span.
//! Errors are collected, not thrown: one run reports every problem it can.

use super::ast::*;
use crate::diagnostic::Diagnostic;
use crate::ir::training::{Init, Preprocess, Schedule};
use crate::ir::{Activation, Graph, Node, Op, Pad, Padding, Rounding, Shape, Training};
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

const LAYER_KINDS: &[&str] = &[
    "input",
    "classes",
    "conv",
    "maxpool",
    "avgpool",
    "gap",
    "global_avg_pool",
    "dropout",
    "softmax",
];
const TRAIN_KINDS: &[&str] = &[
    "optimizer",
    "lr",
    "schedule",
    "epochs",
    "batch",
    "weight_decay",
    "preprocess",
    "augment",
    "warmup",
    "init",
];

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

    fn define(&mut self, def: &ConstDef) {
        if let Some(value) = self.eval(&def.value) {
            if self.scopes.is_empty() {
                self.scopes.push(HashMap::new());
            }
            let scope = self.scopes.last_mut().expect("a scope exists");
            scope.insert(def.name.name.clone(), value);
        }
    }

    fn lookup(&self, name: &str) -> Option<f64> {
        self.scopes
            .iter()
            .rev()
            .find_map(|scope| scope.get(name).copied())
    }

    fn known_names(&self) -> Vec<String> {
        self.scopes
            .iter()
            .flat_map(|scope| scope.keys().cloned())
            .collect()
    }

    fn eval(&mut self, expr: &Expr) -> Option<f64> {
        let value = match &expr.kind {
            ExprKind::Number(value) => *value,
            ExprKind::Name(name) => match self.lookup(name) {
                Some(value) => value,
                None => {
                    let mut diag = Diagnostic::error("E0206", format!("unknown constant `{name}`"))
                        .at(expr.span.clone(), "not defined");
                    let known = self.known_names();
                    if let Some(best) = nearest(name, known.iter().map(String::as_str)) {
                        diag = diag.hint(format!("did you mean `{best}`?"));
                    } else {
                        diag = diag.hint(format!("define it first: `let {name} = ...`"));
                    }
                    self.diags.push(diag);
                    return None;
                }
            },
            ExprKind::Neg(inner) => -self.eval(inner)?,
            ExprKind::Binary(op, lhs, rhs) => {
                let (a, b) = (self.eval(lhs)?, self.eval(rhs)?);
                match op {
                    BinOp::Add => a + b,
                    BinOp::Sub => a - b,
                    BinOp::Mul => a * b,
                    BinOp::Div => {
                        if b == 0.0 {
                            self.diags.push(
                                Diagnostic::error("E0207", "division by zero")
                                    .at(rhs.span.clone(), "this is zero"),
                            );
                            return None;
                        }
                        a / b
                    }
                }
            }
            ExprKind::Call(name, _) => {
                self.diags.push(
                    Diagnostic::error("E0208", format!("`{}(...)` is not a number", name.name))
                        .at(expr.span.clone(), "a function call here")
                        .note("calls are only allowed as an activation: `act=leaky(0.1)`"),
                );
                return None;
            }
        };
        if !value.is_finite() {
            self.diags.push(
                Diagnostic::error("E0207", "value is not a finite number")
                    .at(expr.span.clone(), "overflows"),
            );
            return None;
        }
        Some(value)
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

    fn stmts(&mut self, stmts: &[Stmt]) {
        for stmt in stmts {
            if self.n_errors > MAX_ERRORS {
                return;
            }
            if !self.step(&stmt_span(stmt)) {
                return;
            }
            match stmt {
                Stmt::Layer(layer) => self.layer(layer),
                Stmt::Const(def) => self.define(def),
                Stmt::Use { block, args, span } => self.use_block(block, args, span),
                Stmt::Repeat {
                    var,
                    from,
                    to,
                    body,
                    span,
                } => self.repeat(var.as_ref(), from.as_ref(), to, body, span),
                // Already reported by the parser.
                Stmt::Bad(_) => {}
            }
            self.dedup();
        }
    }

    /// Counts one step of expansion (a statement or a repeat iteration);
    /// false once past [`MAX_STEPS`], reported the first time.
    fn step(&mut self, span: &Span) -> bool {
        self.steps += 1;
        if self.steps == MAX_STEPS + 1 {
            self.diags.push(
                Diagnostic::error(
                    "E0214",
                    format!("expanding the network takes more than {MAX_STEPS} steps"),
                )
                .at(span.clone(), "the limit is reached here")
                .note("each statement and each repeat iteration is a step; nested `repeat`s and blocks multiply their counts"),
            );
        }
        self.steps <= MAX_STEPS
    }

    fn enter(&mut self, span: &Span) -> bool {
        if self.depth >= MAX_DEPTH {
            self.diags.push(
                Diagnostic::error(
                    "E0211",
                    format!("blocks and repeats nest deeper than {MAX_DEPTH} levels"),
                )
                .at(span.clone(), "too deep here")
                .note("a block that uses itself never ends"),
            );
            return false;
        }
        self.depth += 1;
        true
    }

    fn use_block(&mut self, name: &Ident, args: &[Expr], span: &Span) {
        let Some(def) = self.blocks.get(&name.name).cloned() else {
            let mut diag = Diagnostic::error("E0212", format!("unknown block `{}`", name.name))
                .at(name.span.clone(), "no block with this name");
            if let Some(best) = nearest(&name.name, self.blocks.keys().map(String::as_str)) {
                diag = diag.hint(format!("did you mean `{best}`?"));
            } else {
                diag = diag.hint("define it before the network: `block NAME(a, b) { ... }`");
            }
            self.diags.push(diag);
            return;
        };
        if args.len() != def.params.len() {
            self.diags.push(
                Diagnostic::error(
                    "E0213",
                    format!(
                        "block `{}` takes {} arguments, {} given",
                        def.name.name,
                        def.params.len(),
                        args.len()
                    ),
                )
                .at(span.clone(), "this use")
                .also(def.name.span.clone(), "defined here"),
            );
            return;
        }
        let mut scope = HashMap::new();
        for (param, arg) in def.params.iter().zip(args) {
            if let Some(value) = self.eval(arg) {
                scope.insert(param.name.clone(), value);
            }
        }
        if !self.enter(span) {
            return;
        }
        self.scopes.push(scope);
        self.stmts(&def.body);
        self.scopes.pop();
        self.depth -= 1;
    }

    fn repeat(
        &mut self,
        var: Option<&Ident>,
        from: Option<&Expr>,
        to: &Expr,
        body: &[Stmt],
        span: &Span,
    ) {
        let start = match from {
            Some(expr) => {
                let value = self.eval(expr);
                self.int(expr.span.clone(), value, "a repeat bound")
            }
            None => Some(1),
        };
        let end_value = self.eval(to);
        let end = self.int(to.span.clone(), end_value, "a repeat count");
        let (Some(start), Some(end)) = (start, end) else {
            return;
        };
        if end.saturating_sub(start) >= MAX_LAYERS as u64 {
            self.diags.push(
                Diagnostic::error("E0214", format!("repeat runs {} times", end - start + 1))
                    .at(span.clone(), "too many iterations")
                    .note(format!("a network has at most {MAX_LAYERS} layers")),
            );
            return;
        }
        if !self.enter(span) {
            return;
        }
        for i in start..=end {
            // An empty body costs nothing per iteration but the iteration.
            if self.layers.len() >= MAX_LAYERS || !self.step(span) {
                break;
            }
            let mut scope = HashMap::new();
            if let Some(var) = var {
                scope.insert(var.name.clone(), i as f64);
            }
            self.scopes.push(scope);
            let errors_before = self.n_errors;
            self.stmts(body);
            self.scopes.pop();
            // The next iterations would most likely repeat the same mistake
            // (a million times, in nested repeats): one is enough.
            if self.n_errors > errors_before {
                break;
            }
        }
        self.depth -= 1;
    }

    /// Checks that an evaluated value is a non-negative integer in range.
    fn int(&mut self, span: Span, value: Option<f64>, what: &str) -> Option<u64> {
        let value = value?;
        if value < 0.0 || value.fract() != 0.0 || value > MAX_INT as f64 {
            self.diags.push(
                Diagnostic::error(
                    "E0215",
                    format!("{what} must be a whole number from 0 to {MAX_INT}"),
                )
                .at(span, format!("this is {value}")),
            );
            return None;
        }
        Some(value as u64)
    }

    fn layer(&mut self, stmt: &LayerStmt) {
        let mut args = Args::new(stmt);
        let kind = stmt.kind.name.as_str();
        let op = match kind {
            "input" => {
                self.input_stmt(stmt, &mut args);
                None
            }
            "classes" => {
                if let Some((_, prev)) = &self.classes {
                    self.diags.push(
                        Diagnostic::error("E0216", "`classes` is given twice")
                            .at(stmt.span.clone(), "second")
                            .also(prev.clone(), "first"),
                    );
                }
                // A bad count is reported by `positive`; the placeholder keeps
                // the network from also being reported as lacking `classes`.
                let n = self.positive(&mut args, "classes", 0, &["n"], None);
                self.classes = Some((n.unwrap_or(1), stmt.span.clone()));
                None
            }
            "conv" => self.conv(stmt, &mut args),
            "maxpool" | "avgpool" => self.pool(stmt, &mut args, kind == "maxpool"),
            "gap" | "global_avg_pool" => Some(Op::GlobalAvgPool),
            "softmax" => Some(Op::Softmax),
            "dropout" => {
                let p = args.take("p", &[], Some(0)).and_then(|v| self.float(v));
                match p {
                    Some(p) if (0.0..1.0).contains(&p) => Some(Op::Dropout { p }),
                    Some(p) => {
                        let span = args.span_of("p", Some(0)).unwrap_or(stmt.span.clone());
                        self.diags.push(
                            Diagnostic::error("E0301", format!("dropout probability {p} is out of range"))
                                .at(span, "must be at least 0 and below 1")
                                .note("p is the probability of dropping a unit; p = 1 would drop everything"),
                        );
                        None
                    }
                    None => {
                        self.missing(stmt, "p", "dropout 0.5");
                        None
                    }
                }
            }
            _ => {
                let mut diag = Diagnostic::error("E0201", format!("unknown layer kind `{kind}`"))
                    .at(stmt.kind.span.clone(), "not a layer kind");
                diag = match nearest(kind, LAYER_KINDS.iter().copied()).or(alias(kind)) {
                    Some(best) => diag.hint(format!("did you mean `{best}`?")),
                    None => diag,
                };
                self.diags
                    .push(diag.note(format!("layer kinds: {}", LAYER_KINDS.join(", "))));
                return;
            }
        };
        let allowed: &[&str] = match kind {
            "input" => &["dims"],
            "classes" => &["n"],
            "conv" => &[
                "channels", "k", "kernel", "stride", "pad", "act", "slope", "bias",
            ],
            "maxpool" | "avgpool" => &["k", "kernel", "stride", "pad", "round"],
            "dropout" => &["p"],
            _ => &[],
        };
        args.finish(allowed, &mut self.diags);
        if let Some(op) = op {
            if self.layers.len() >= MAX_LAYERS {
                if !self.too_many_reported {
                    self.too_many_reported = true;
                    self.diags.push(
                        Diagnostic::error(
                            "E0214",
                            format!("the network has more than {MAX_LAYERS} layers"),
                        )
                        .at(stmt.span.clone(), "limit reached here"),
                    );
                }
                return;
            }
            let mut node = Node::new(String::new(), op, stmt.span.clone());
            if let Some(label) = &stmt.label {
                node.name = label.name.clone();
                node.labelled = true;
            }
            self.layers.push(node);
        }
    }

    fn missing(&mut self, stmt: &LayerStmt, what: &str, example: &str) {
        self.diags.push(
            Diagnostic::error("E0217", format!("`{}` needs {what}", stmt.kind.name))
                .at(stmt.span.clone(), format!("{what} missing"))
                .hint(format!("for example `{example}`")),
        );
    }

    fn input_stmt(&mut self, stmt: &LayerStmt, args: &mut Args<'_>) {
        if let Some((_, prev)) = &self.input {
            self.diags.push(
                Diagnostic::error("E0216", "`input` is given twice")
                    .at(stmt.span.clone(), "second")
                    .also(prev.clone(), "first"),
            );
        }
        // Until the shape is known good, a placeholder records that `input`
        // was written, so the network is not also reported as lacking one.
        self.input = Some((Shape::new(1, 1, 1), stmt.span.clone()));
        let Some(value) = args.take("dims", &[], Some(0)) else {
            self.missing(stmt, "the input shape", "input 3x32x32");
            return;
        };
        match &value.kind {
            ValueKind::Dims(dims) if dims.len() == 3 => {
                if let Some(bad) = dims.iter().find(|&&d| d == 0 || d > MAX_INT) {
                    self.diags.push(
                        Diagnostic::error(
                            "E0302",
                            format!("input dimension {bad} is out of range"),
                        )
                        .at(
                            value.span.clone(),
                            format!("each of C, H, W must be 1 to {MAX_INT}"),
                        ),
                    );
                    return;
                }
                let shape = Shape::new(dims[0] as usize, dims[1] as usize, dims[2] as usize);
                self.input = Some((shape, stmt.span.clone()));
            }
            _ => self.diags.push(
                Diagnostic::error("E0218", "`input` takes channels x height x width")
                    .at(value.span.clone(), "expected three dimensions")
                    .hint("for example `input 3x32x32` or `input 1x28x28`"),
            ),
        }
    }

    fn conv(&mut self, stmt: &LayerStmt, args: &mut Args<'_>) -> Option<Op> {
        let out_channels = self.positive(args, "channels", 0, &[], Some(stmt));
        let kernel_value = args.take("k", &["kernel"], Some(1));
        let kernel = match kernel_value {
            Some(v) => self.pair(v, "kernel"),
            None => {
                self.missing(stmt, "a kernel size", "conv 96 3x3");
                None
            }
        };
        let stride = match args.take("stride", &[], None) {
            Some(v) => self.pair(v, "stride"),
            None => Some((1, 1)),
        };
        let pad = match args.take("pad", &[], None) {
            Some(v) => self.pad(v),
            None => Some(Pad::Same),
        };
        let slope_value = args.take("slope", &[], None);
        let slope = slope_value.and_then(|v| self.float(v));
        let act = match (args.take("act", &[], None), slope_value) {
            (Some(v), _) => self.activation(v, slope),
            // `slope=` alone selects a leaky ReLU; its range is checked too.
            (None, Some(v)) => self.slope(&v.span, slope),
            (None, None) => Some(Activation::Relu),
        };
        let bias = match args.take("bias", &[], None) {
            Some(v) => self.boolean(v),
            None => Some(true),
        };
        Some(Op::Conv {
            out_channels: out_channels?,
            kernel: kernel?,
            stride: stride?,
            pad: pad?,
            act: act?,
            bias: bias?,
        })
    }

    fn pool(&mut self, stmt: &LayerStmt, args: &mut Args<'_>, max: bool) -> Option<Op> {
        let kernel = match args.take("k", &["kernel"], Some(0)) {
            Some(v) => self.pair(v, "kernel"),
            None => {
                self.missing(stmt, "a kernel size", "maxpool 3x3 stride=2");
                None
            }
        };
        let stride = match args.take("stride", &[], None) {
            Some(v) => self.pair(v, "stride"),
            None => kernel,
        };
        let pad = match args.take("pad", &[], None) {
            Some(v) => self.pad(v),
            None => Some(Pad::Valid),
        };
        let round = match args.take("round", &[], None) {
            Some(v) => match keyword(v).as_deref() {
                Some("up") | Some("ceil") => Some(Rounding::Up),
                Some("down") | Some("floor") => Some(Rounding::Down),
                _ => {
                    self.bad_keyword(v, "round", &["up", "down"]);
                    None
                }
            },
            None => Some(Rounding::Up),
        };
        let (kernel, stride, pad, round) = (kernel?, stride?, pad?, round?);
        Some(if max {
            Op::MaxPool {
                kernel,
                stride,
                pad,
                round,
            }
        } else {
            Op::AvgPool {
                kernel,
                stride,
                pad,
                round,
            }
        })
    }

    /// A positive integer option (channels, classes).
    fn positive(
        &mut self,
        args: &mut Args<'_>,
        key: &str,
        position: usize,
        aliases: &[&str],
        stmt: Option<&LayerStmt>,
    ) -> Option<usize> {
        let Some(value) = args.take(key, aliases, Some(position)) else {
            if let Some(stmt) = stmt {
                self.missing(stmt, &format!("the number of {key}"), "conv 96 3x3");
            } else {
                self.diags.push(
                    Diagnostic::error("E0217", format!("`{}` needs a number", args.kind()))
                        .at(args.stmt.span.clone(), "number missing"),
                );
            }
            return None;
        };
        let n = self.integer(value)?;
        if n == 0 {
            self.diags.push(
                Diagnostic::error("E0303", format!("{key} must be at least 1"))
                    .at(value.span.clone(), "zero")
                    .note(if key == "classes" {
                        "a classifier needs at least one class"
                    } else {
                        "a layer with no channels has no output"
                    }),
            );
            return None;
        }
        Some(n as usize)
    }

    fn integer(&mut self, value: &Value) -> Option<u64> {
        match &value.kind {
            ValueKind::Expr(expr) => {
                let v = self.eval(expr);
                self.int(value.span.clone(), v, "this value")
            }
            ValueKind::Dims(dims) if dims.len() == 1 => Some(dims[0]),
            _ => {
                self.diags.push(
                    Diagnostic::error("E0219", "expected a single number")
                        .at(value.span.clone(), "not a single number"),
                );
                None
            }
        }
    }

    fn float(&mut self, value: &Value) -> Option<f64> {
        match &value.kind {
            ValueKind::Expr(expr) => self.eval(expr),
            _ => {
                self.diags.push(
                    Diagnostic::error("E0219", "expected a number")
                        .at(value.span.clone(), "not a number"),
                );
                None
            }
        }
    }

    /// `3` (square) or `5x3` (height x width); both parts at least 1.
    fn pair(&mut self, value: &Value, what: &str) -> Option<(usize, usize)> {
        let pair = match &value.kind {
            ValueKind::Dims(dims) if dims.len() == 2 => Some((dims[0], dims[1])),
            ValueKind::Expr(_) => self.integer(value).map(|n| (n, n)),
            _ => {
                self.diags.push(
                    Diagnostic::error("E0219", format!("a {what} is `K` or `KHxKW`"))
                        .at(value.span.clone(), "not a size"),
                );
                return None;
            }
        }?;
        if pair.0 == 0 || pair.1 == 0 || pair.0 > MAX_INT || pair.1 > MAX_INT {
            // Shown as written: `stride=0`, not `0x0`.
            let shown = match &value.kind {
                ValueKind::Dims(_) => format!("{}x{}", pair.0, pair.1),
                _ => pair.0.to_string(),
            };
            let diag = if pair.0 == 0 || pair.1 == 0 {
                Diagnostic::error("E0304", format!("{what} {shown} is out of range"))
                    .at(value.span.clone(), format!("{what} must be at least 1"))
                    .note(if what == "stride" {
                        "a stride of 0 would never move the window"
                    } else {
                        "a kernel of size 0 sees nothing"
                    })
            } else {
                // The value may have saturated while parsing: do not show it.
                Diagnostic::error("E0304", format!("{what} is too large")).at(
                    value.span.clone(),
                    format!("{what} must be at most {MAX_INT}"),
                )
            };
            self.diags.push(diag);
            return None;
        }
        Some((pair.0 as usize, pair.1 as usize))
    }

    fn pad(&mut self, value: &Value) -> Option<Pad> {
        match keyword(value).as_deref() {
            Some("same") => return Some(Pad::Same),
            Some("valid") => return Some(Pad::Valid),
            _ => {}
        }
        let sides = match &value.kind {
            ValueKind::Dims(dims) if dims.len() == 2 => [dims[0], dims[1], dims[0], dims[1]],
            ValueKind::Dims(dims) if dims.len() == 4 => [dims[0], dims[1], dims[2], dims[3]],
            ValueKind::Expr(_) if keyword(value).is_some() && !self.is_const(value) => {
                self.bad_keyword(value, "pad", &["same", "valid"]);
                return None;
            }
            ValueKind::Expr(_) => {
                let n = self.integer(value)?;
                [n, n, n, n]
            }
            _ => {
                self.diags.push(
                    Diagnostic::error(
                        "E0219",
                        "padding is `same`, `valid`, `P`, `PHxPW` or `TxLxBxR`",
                    )
                    .at(value.span.clone(), "not a padding"),
                );
                return None;
            }
        };
        if sides.iter().any(|&s| s > MAX_INT) {
            self.diags.push(
                Diagnostic::error("E0304", "padding is out of range")
                    .at(value.span.clone(), "too large"),
            );
            return None;
        }
        Some(Pad::Explicit(Padding {
            top: sides[0] as usize,
            left: sides[1] as usize,
            bottom: sides[2] as usize,
            right: sides[3] as usize,
        }))
    }

    fn is_const(&self, value: &Value) -> bool {
        matches!(&value.kind, ValueKind::Expr(Expr { kind: ExprKind::Name(name), .. }) if self.lookup(name).is_some())
    }

    fn activation(&mut self, value: &Value, slope: Option<f64>) -> Option<Activation> {
        if let ValueKind::Expr(Expr {
            kind: ExprKind::Call(name, call_args),
            span,
        }) = &value.kind
        {
            if name.name == "leaky" || name.name == "leaky_relu" {
                if call_args.len() != 1 {
                    self.diags.push(
                        Diagnostic::error("E0213", "`leaky` takes one argument, its slope")
                            .at(span.clone(), "for example `leaky(0.1)`"),
                    );
                    return None;
                }
                let slope = self.eval(&call_args[0]);
                return self.slope(&call_args[0].span, slope);
            }
            self.bad_keyword(value, "act", &["relu", "leaky(0.1)", "none"]);
            return None;
        }
        match keyword(value).as_deref() {
            Some("relu") => Some(Activation::Relu),
            Some("none") | Some("linear") => Some(Activation::None),
            Some("leaky") | Some("leaky_relu") => {
                self.slope(&value.span, Some(slope.unwrap_or(0.01)))
            }
            _ => {
                self.bad_keyword(value, "act", &["relu", "leaky(0.1)", "none"]);
                None
            }
        }
    }

    fn slope(&mut self, span: &Span, slope: Option<f64>) -> Option<Activation> {
        let slope = slope?;
        // Checked as stored (f32): 0.999999999 rounds to 1.0 there.
        if !(0.0..1.0).contains(&slope) || slope as f32 >= 1.0 {
            let mut diag =
                Diagnostic::error("E0301", format!("leaky ReLU slope {slope} is out of range"))
                    .at(span.clone(), "must be at least 0 and below 1");
            if slope < 1.0 {
                diag = diag.note("slopes are stored as 32-bit floats, where this one is 1");
            }
            self.diags.push(diag);
            return None;
        }
        Some(Activation::LeakyRelu {
            slope: slope as f32,
        })
    }

    fn boolean(&mut self, value: &Value) -> Option<bool> {
        match keyword(value).as_deref() {
            Some("true") | Some("on") | Some("yes") => Some(true),
            Some("false") | Some("off") | Some("no") => Some(false),
            _ => {
                self.bad_keyword(value, "this option", &["true", "false"]);
                None
            }
        }
    }

    fn bad_keyword(&mut self, value: &Value, what: &str, valid: &[&str]) {
        let mut diag = Diagnostic::error("E0220", format!("invalid value for {what}"))
            .at(value.span.clone(), "not recognised")
            .note(format!("valid values: {}", valid.join(", ")));
        if let Some(word) = keyword(value) {
            if let Some(best) = nearest(&word, valid.iter().copied()) {
                diag = diag.hint(format!("did you mean `{best}`?"));
            }
        }
        self.diags.push(diag);
    }

    fn training(&mut self, def: &TrainDef) -> Training {
        let mut training = Training::default();
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for stmt in &def.body {
            let Stmt::Layer(stmt) = stmt else {
                if let Stmt::Const(def) = stmt {
                    self.define(def);
                } else if !matches!(stmt, Stmt::Bad(_)) {
                    self.diags.push(
                        Diagnostic::error("E0221", "only settings may appear in `train`")
                            .at(stmt_span(stmt), "not a setting")
                            .also(def.span.start..def.span.start + 5, "in this section")
                            .note(format!("settings: {}", TRAIN_KINDS.join(", "))),
                    );
                }
                continue;
            };
            let kind = stmt.kind.name.as_str();
            if let Some(prev) = seen.get(kind) {
                self.diags.push(
                    Diagnostic::error("E0216", format!("`{kind}` is given twice"))
                        .at(stmt.span.clone(), "second")
                        .also(prev.clone(), "first"),
                );
            }
            let mut args = Args::new(stmt);
            let allowed: &[&str] = match kind {
                "optimizer" => {
                    match args.take("kind", &[], Some(0)).and_then(keyword).as_deref() {
                        Some("sgd") | None => {}
                        Some(other) => self.diags.push(
                            Diagnostic::error("E0220", format!("unknown optimizer `{other}`"))
                                .at(stmt.span.clone(), "here")
                                .note("the paper's optimizer is SGD with momentum: `optimizer sgd momentum=0.9`"),
                        ),
                    }
                    if let Some(m) = args.take("momentum", &[], None).and_then(|v| self.float(v)) {
                        if (0.0..1.0).contains(&m) {
                            training.momentum = m;
                        } else {
                            self.range_error(
                                args.span_of("momentum", None),
                                "momentum",
                                "0 to below 1",
                            );
                        }
                    }
                    if let Some(v) = args.take("nesterov", &[], None) {
                        training.nesterov = self.boolean(v).unwrap_or(false);
                    }
                    &["kind", "momentum", "nesterov"]
                }
                "lr" => {
                    if let Some(lr) = args.take("value", &[], Some(0)).and_then(|v| self.float(v)) {
                        if lr > 0.0 && lr < 100.0 {
                            training.lr = lr;
                        } else {
                            self.range_error(
                                args.span_of("value", Some(0)),
                                "learning rate",
                                "above 0 and below 100",
                            );
                        }
                    }
                    &["value"]
                }
                "schedule" => {
                    let which = args.take("kind", &[], Some(0)).and_then(keyword);
                    let mut gamma = 0.1;
                    if let Some(g) = args.take("gamma", &[], None).and_then(|v| self.float(v)) {
                        gamma = g;
                    }
                    let at = args.take("at", &["milestones"], None).cloned();
                    training.schedule = match which.as_deref() {
                        Some("step") => {
                            let milestones = match &at {
                                Some(value) => {
                                    let milestones = self.int_list(value);
                                    if milestones.windows(2).any(|w| w[0] >= w[1]) {
                                        self.diags.push(
                                            Diagnostic::error(
                                                "E0305",
                                                "schedule epochs must increase",
                                            )
                                            .at(value.span.clone(), "not in increasing order"),
                                        );
                                    }
                                    milestones
                                }
                                None => {
                                    self.missing(
                                        stmt,
                                        "its epochs",
                                        "schedule step at=200,250,300 gamma=0.1",
                                    );
                                    Vec::new()
                                }
                            };
                            Schedule::Step { gamma, milestones }
                        }
                        Some("cosine") => Schedule::Cosine,
                        Some("constant") => Schedule::Constant,
                        _ => {
                            let span = args.span_of("kind", Some(0)).unwrap_or(stmt.span.clone());
                            self.diags.push(
                                Diagnostic::error("E0220", "unknown schedule")
                                    .at(span, "expected `step`, `cosine` or `constant`"),
                            );
                            Schedule::Constant
                        }
                    };
                    &["kind", "gamma", "at", "milestones"]
                }
                "epochs" | "batch" | "warmup" => {
                    if let Some(v) = args.take("value", &[], Some(0)) {
                        if let Some(n) = self.integer(v) {
                            let n = n.min(u32::MAX as u64) as u32;
                            match kind {
                                "epochs" if n >= 1 => training.epochs = n,
                                "batch" if n >= 1 => training.batch = n,
                                "warmup" => training.warmup = n,
                                _ => self.range_error(Some(v.span.clone()), kind, "at least 1"),
                            }
                        }
                    }
                    &["value"]
                }
                "weight_decay" => {
                    if let Some(wd) = args.take("value", &[], Some(0)).and_then(|v| self.float(v)) {
                        if (0.0..1.0).contains(&wd) {
                            training.weight_decay = wd;
                        } else {
                            self.range_error(
                                args.span_of("value", Some(0)),
                                "weight decay",
                                "0 to below 1",
                            );
                        }
                    }
                    &["value"]
                }
                "preprocess" => {
                    let value = args.take("kind", &[], Some(0));
                    training.preprocess = match value.and_then(keyword).as_deref() {
                        Some("none") => Preprocess::None,
                        Some("normalize") => Preprocess::Normalize,
                        Some("gcn_zca") => Preprocess::GcnZca,
                        _ => {
                            match value {
                                Some(v) => self.bad_keyword(
                                    v,
                                    "preprocess",
                                    &["none", "normalize", "gcn_zca"],
                                ),
                                None => self.missing(stmt, "a method", "preprocess gcn_zca"),
                            }
                            Preprocess::None
                        }
                    };
                    &["kind"]
                }
                "init" => {
                    let value = args.take("kind", &[], Some(0));
                    match value.and_then(keyword).as_deref() {
                        Some("he") => training.init = Init::He,
                        Some("lsuv") => training.init = Init::Lsuv,
                        _ => match value {
                            Some(v) => self.bad_keyword(v, "init", &["he", "lsuv"]),
                            None => self.missing(stmt, "a method", "init lsuv"),
                        },
                    }
                    &["kind"]
                }
                "augment" => {
                    for position in 0..args.positional.len() {
                        let Some(value) = args.take_positional(position) else {
                            continue;
                        };
                        match keyword(value).as_deref() {
                            Some("flip") => training.flip = true,
                            Some("none") => {}
                            _ => {
                                self.bad_keyword(value, "augment", &["flip", "translate=N", "none"])
                            }
                        }
                    }
                    if let Some(v) = args.take("translate", &[], None) {
                        if let Some(n) = self.integer(v) {
                            training.translate = n.min(64) as u32;
                        }
                    }
                    if let Some(v) = args.take("flip", &[], None) {
                        training.flip = self.boolean(v).unwrap_or(false);
                    }
                    &["translate", "flip"]
                }
                _ => {
                    let mut diag =
                        Diagnostic::error("E0202", format!("unknown training setting `{kind}`"))
                            .at(stmt.kind.span.clone(), "not a setting");
                    if let Some(best) = nearest(kind, TRAIN_KINDS.iter().copied()) {
                        diag = diag.hint(format!("did you mean `{best}`?"));
                    }
                    self.diags
                        .push(diag.note(format!("settings: {}", TRAIN_KINDS.join(", "))));
                    continue;
                }
            };
            seen.insert(kind, stmt.span.clone());
            args.finish(allowed, &mut self.diags);
        }
        training
    }

    fn int_list(&mut self, value: &Value) -> Vec<u32> {
        let exprs: Vec<Expr> = match &value.kind {
            ValueKind::List(items) => items.clone(),
            ValueKind::Expr(expr) => vec![expr.clone()],
            ValueKind::Dims(_) => {
                self.diags.push(
                    Diagnostic::error("E0219", "expected a list of epochs like `200,250,300`")
                        .at(value.span.clone(), "not a list"),
                );
                return Vec::new();
            }
        };
        exprs
            .iter()
            .filter_map(|expr| {
                let v = self.eval(expr);
                self.int(expr.span.clone(), v, "an epoch").map(|n| n as u32)
            })
            .collect()
    }

    fn range_error(&mut self, span: Option<Span>, what: &str, range: &str) {
        self.diags.push(
            Diagnostic::error("E0301", format!("{what} is out of range"))
                .at(span.unwrap_or(0..0), format!("must be {range}")),
        );
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

/// The bare word of a value (`same`, `relu`), if it is one.
fn keyword(value: &Value) -> Option<String> {
    match &value.kind {
        ValueKind::Expr(Expr {
            kind: ExprKind::Name(name),
            ..
        }) => Some(name.clone()),
        _ => None,
    }
}

/// Common names from other frameworks, mapped to ours.
fn alias(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "conv2d" | "convolution" | "Conv2d" => "conv",
        "pool" | "max_pool" | "maxpool2d" | "MaxPool2d" => "maxpool",
        "avg_pool" | "avgpool2d" => "avgpool",
        "fc" | "linear" | "dense" => "conv",
        "relu" => "conv",
        _ => return None,
    })
}

/// The candidate closest to `word` by edit distance, if close enough.
pub fn nearest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|candidate| (strsim::damerau_levenshtein(word, candidate), candidate))
        .filter(|(distance, candidate)| {
            *distance <= 2.max(candidate.len() / 3) && *distance < candidate.len()
        })
        .min()
        .map(|(_, candidate)| candidate)
}

/// The arguments of one statement: positional values and `key=value` options,
/// each taken at most once; [`Args::finish`] reports what nobody took.
struct Args<'a> {
    stmt: &'a LayerStmt,
    positional: Vec<Option<&'a Value>>,
    named: Vec<(&'a Ident, &'a Value, bool)>,
    /// Names already given positionally (`conv 96` then `channels=96`).
    taken: Vec<(String, Span)>,
}

impl<'a> Args<'a> {
    fn new(stmt: &'a LayerStmt) -> Self {
        let mut positional = Vec::new();
        let mut named = Vec::new();
        for arg in &stmt.args {
            match arg {
                Arg::Positional(value) => positional.push(Some(value)),
                Arg::Named(key, value) => named.push((key, value, false)),
            }
        }
        Self {
            stmt,
            positional,
            named,
            taken: Vec::new(),
        }
    }

    fn kind(&self) -> &str {
        &self.stmt.kind.name
    }

    fn take_positional(&mut self, position: usize) -> Option<&'a Value> {
        self.positional.get_mut(position).and_then(Option::take)
    }

    /// Takes option `key` (or an alias), or else the positional argument at
    /// `position`.
    fn take(&mut self, key: &str, aliases: &[&str], position: Option<usize>) -> Option<&'a Value> {
        let named = self
            .named
            .iter_mut()
            .find(|(k, _, used)| !used && (k.name == key || aliases.contains(&k.name.as_str())));
        if let Some(entry) = named {
            entry.2 = true;
            let value = entry.1;
            // The positional value in the same slot is the same argument given
            // twice: report it once, as such, not also as one too many.
            if let Some(pos) = position.and_then(|p| self.take_positional(p)) {
                self.taken.push((key.to_string(), pos.span.clone()));
            }
            return Some(value);
        }
        position.and_then(|p| self.take_positional(p))
    }

    fn span_of(&self, key: &str, position: Option<usize>) -> Option<Span> {
        self.named
            .iter()
            .find(|(k, _, _)| k.name == key)
            .map(|(_, v, _)| v.span.clone())
            .or_else(|| {
                position
                    .and_then(|p| {
                        self.stmt
                            .args
                            .iter()
                            .filter(|a| matches!(a, Arg::Positional(_)))
                            .nth(p)
                    })
                    .map(Arg::span)
            })
    }

    fn finish(self, allowed: &[&str], diags: &mut Vec<Diagnostic>) {
        let kind = self.stmt.kind.name.clone();
        for (key, span) in &self.taken {
            diags.push(
                Diagnostic::error("E0222", format!("`{key}` is given twice"))
                    .at(span.clone(), format!("`{key}` given here by position"))
                    .hint(format!("remove it or the `{key}=` option")),
            );
        }
        let mut seen: Vec<&str> = Vec::new();
        for (key, value, used) in &self.named {
            if *used {
                seen.push(&key.name);
                continue;
            }
            if seen.contains(&key.name.as_str()) || allowed.contains(&key.name.as_str()) {
                diags.push(
                    Diagnostic::error("E0222", format!("option `{}` is given twice", key.name))
                        .at(key.span.start..value.span.end, "repeated here"),
                );
                continue;
            }
            let mut diag = Diagnostic::error(
                "E0202",
                format!("unknown option `{}` for `{kind}`", key.name),
            )
            .at(key.span.clone(), "not an option of this layer");
            if let Some(best) = nearest(&key.name, allowed.iter().copied()) {
                diag = diag.hint(format!("did you mean `{best}`?"));
            }
            let note = if allowed.is_empty() {
                format!("`{kind}` takes no options")
            } else {
                format!("options of `{kind}`: {}", allowed.join(", "))
            };
            diags.push(diag.note(note));
        }
        for value in self.positional.iter().flatten() {
            diags.push(
                Diagnostic::error("E0223", format!("too many arguments for `{kind}`"))
                    .at(value.span.clone(), "unexpected argument")
                    .hint(usage(&kind)),
            );
        }
    }
}

fn usage(kind: &str) -> String {
    match kind {
        "conv" => "usage: `conv CHANNELS K [stride=S] [pad=same|valid|P] [act=relu|leaky(0.1)|none] [bias=false]`",
        "maxpool" | "avgpool" => "usage: `maxpool K [stride=S] [pad=P] [round=up|down]`",
        "dropout" => "usage: `dropout P`",
        "input" => "usage: `input CxHxW`",
        "classes" => "usage: `classes N`",
        _ => "this statement takes no positional arguments",
    }
    .to_string()
}
