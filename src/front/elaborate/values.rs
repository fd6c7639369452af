//! Option values: whole numbers, floats, sizes (`3`, `5x3`), paddings,
//! activations, booleans and keywords, each checked with a diagnostic that
//! names what a valid value looks like.

use super::hints::nearest;
use super::{Elaborator, MAX_INT};
use crate::diagnostic::Diagnostic;
use crate::front::ast::*;
use crate::ir::{Activation, Pad, Padding};

impl Elaborator {
    /// A whole number from 0 to [`MAX_INT`], written as an expression or a
    /// single dimension.
    pub(super) fn integer(&mut self, value: &Value) -> Option<u64> {
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

    /// Any finite number.
    pub(super) fn float(&mut self, value: &Value) -> Option<f64> {
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
    pub(super) fn pair(&mut self, value: &Value, what: &str) -> Option<(usize, usize)> {
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

    /// `same`, `valid`, `P`, `PHxPW` or `TxLxBxR` (top, left, bottom, right).
    pub(super) fn pad(&mut self, value: &Value) -> Option<Pad> {
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

    /// Whether a bare word names a constant (then it is a number, not a
    /// keyword).
    fn is_const(&self, value: &Value) -> bool {
        matches!(&value.kind, ValueKind::Expr(Expr { kind: ExprKind::Name(name), .. }) if self.lookup(name).is_some())
    }

    /// `relu`, `none`, `leaky` (with `slope=`, else 0.01) or `leaky(SLOPE)`.
    pub(super) fn activation(&mut self, value: &Value, slope: Option<f64>) -> Option<Activation> {
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

    /// A leaky ReLU slope, at least 0 and below 1 as stored.
    pub(super) fn slope(&mut self, span: &Span, slope: Option<f64>) -> Option<Activation> {
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

    pub(super) fn boolean(&mut self, value: &Value) -> Option<bool> {
        match keyword(value).as_deref() {
            Some("true") | Some("on") | Some("yes") => Some(true),
            Some("false") | Some("off") | Some("no") => Some(false),
            _ => {
                self.bad_keyword(value, "this option", &["true", "false"]);
                None
            }
        }
    }

    /// Reports a word that is not one of `valid`, suggesting the closest.
    pub(super) fn bad_keyword(&mut self, value: &Value, what: &str, valid: &[&str]) {
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
}

/// The bare word of a value (`same`, `relu`), if it is one.
pub(super) fn keyword(value: &Value) -> Option<String> {
    match &value.kind {
        ValueKind::Expr(Expr {
            kind: ExprKind::Name(name),
            ..
        }) => Some(name.clone()),
        _ => None,
    }
}
