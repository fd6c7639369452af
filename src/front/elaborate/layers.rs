//! Layer statements: each layer kind of the network body, its options
//! and their defaults, and the cap on how many layers a network may have.

use super::args::Args;
use super::hints::{alias, nearest};
use super::values::keyword;
use super::{Elaborator, MAX_INT, MAX_LAYERS};
use crate::diagnostic::Diagnostic;
use crate::front::ast::*;
use crate::ir::{Activation, Node, Op, Pad, Rounding, Shape};

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

impl Elaborator {
    /// Checks one layer statement and, if it is good, appends its node.
    pub(super) fn layer(&mut self, stmt: &LayerStmt) {
        let mut args = Args::new(stmt);
        let kind = stmt.kind.name.as_str();
        let op = match kind {
            "input" => {
                self.input_stmt(stmt, &mut args);
                None
            }
            "classes" => {
                self.classes_stmt(stmt, &mut args);
                None
            }
            "conv" => self.conv(stmt, &mut args),
            "maxpool" | "avgpool" => self.pool(stmt, &mut args, kind == "maxpool"),
            "gap" | "global_avg_pool" => Some(Op::GlobalAvgPool),
            "softmax" => Some(Op::Softmax),
            "dropout" => self.dropout(stmt, &mut args),
            _ => {
                self.unknown_kind(stmt);
                return;
            }
        };
        args.finish(allowed_options(kind), &mut self.diags);
        if let Some(op) = op {
            self.push_layer(stmt, op);
        }
    }

    /// Appends a checked layer, unless the network already has
    /// [`MAX_LAYERS`] (reported once).
    fn push_layer(&mut self, stmt: &LayerStmt, op: Op) {
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

    fn unknown_kind(&mut self, stmt: &LayerStmt) {
        let kind = stmt.kind.name.as_str();
        let mut diag = Diagnostic::error("E0201", format!("unknown layer kind `{kind}`"))
            .at(stmt.kind.span.clone(), "not a layer kind");
        diag = match nearest(kind, LAYER_KINDS.iter().copied()).or(alias(kind)) {
            Some(best) => diag.hint(format!("did you mean `{best}`?")),
            None => diag,
        };
        self.diags
            .push(diag.note(format!("layer kinds: {}", LAYER_KINDS.join(", "))));
    }

    /// Reports a statement lacking a required argument, with an example.
    pub(super) fn missing(&mut self, stmt: &LayerStmt, what: &str, example: &str) {
        self.diags.push(
            Diagnostic::error("E0217", format!("`{}` needs {what}", stmt.kind.name))
                .at(stmt.span.clone(), format!("{what} missing"))
                .hint(format!("for example `{example}`")),
        );
    }

    fn classes_stmt(&mut self, stmt: &LayerStmt, args: &mut Args<'_>) {
        if let Some((_, prev)) = &self.classes {
            self.diags.push(
                Diagnostic::error("E0216", "`classes` is given twice")
                    .at(stmt.span.clone(), "second")
                    .also(prev.clone(), "first"),
            );
        }
        // A bad count is reported by `positive`; the placeholder keeps
        // the network from also being reported as lacking `classes`.
        let n = self.positive(args, "classes", 0, &["n"], None);
        self.classes = Some((n.unwrap_or(1), stmt.span.clone()));
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
    fn dropout(&mut self, stmt: &LayerStmt, args: &mut Args<'_>) -> Option<Op> {
        let p = args.take("p", &[], Some(0)).and_then(|v| self.float(v));
        match p {
            Some(p) if (0.0..1.0).contains(&p) => Some(Op::Dropout { p }),
            Some(p) => {
                let span = args.span_of("p", Some(0)).unwrap_or(stmt.span.clone());
                self.diags.push(
                    Diagnostic::error("E0301", format!("dropout probability {p} is out of range"))
                        .at(span, "must be at least 0 and below 1")
                        .note(
                            "p is the probability of dropping a unit; p = 1 would drop everything",
                        ),
                );
                None
            }
            None => {
                self.missing(stmt, "p", "dropout 0.5");
                None
            }
        }
    }

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
}

/// The options a layer kind accepts by name.
fn allowed_options(kind: &str) -> &'static [&'static str] {
    match kind {
        "input" => &["dims"],
        "classes" => &["n"],
        "conv" => &[
            "channels", "k", "kernel", "stride", "pad", "act", "slope", "bias",
        ],
        "maxpool" | "avgpool" => &["k", "kernel", "stride", "pad", "round"],
        "dropout" => &["p"],
        _ => &[],
    }
}
