//! Constant scopes and expressions: `let` definitions, name lookup through
//! the nested scopes of blocks and repeats, and arithmetic that refuses to
//! divide by zero or to produce a value that is not finite.

use super::hints::nearest;
use super::{Elaborator, MAX_INT};
use crate::diagnostic::Diagnostic;
use crate::front::ast::*;
use std::collections::HashMap;

impl Elaborator {
    /// Binds a `let` constant in the innermost scope; a value that does not
    /// evaluate is reported by [`Elaborator::eval`] and left unbound.
    pub(super) fn define(&mut self, def: &ConstDef) {
        if let Some(value) = self.eval(&def.value) {
            if self.scopes.is_empty() {
                self.scopes.push(HashMap::new());
            }
            let scope = self.scopes.last_mut().expect("a scope exists");
            scope.insert(def.name.name.clone(), value);
        }
    }

    /// The value of a constant, searching the innermost scope first.
    pub(super) fn lookup(&self, name: &str) -> Option<f64> {
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

    /// Evaluates an expression; `None` once an error has been reported.
    pub(super) fn eval(&mut self, expr: &Expr) -> Option<f64> {
        let value = match &expr.kind {
            ExprKind::Number(value) => *value,
            ExprKind::Name(name) => match self.lookup(name) {
                Some(value) => value,
                None => {
                    self.unknown_constant(name, expr);
                    return None;
                }
            },
            ExprKind::Neg(inner) => -self.eval(inner)?,
            ExprKind::Binary(op, lhs, rhs) => {
                let (a, b) = (self.eval(lhs)?, self.eval(rhs)?);
                self.binary(*op, a, b, rhs)?
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

    fn unknown_constant(&mut self, name: &str, expr: &Expr) {
        let mut diag = Diagnostic::error("E0206", format!("unknown constant `{name}`"))
            .at(expr.span.clone(), "not defined");
        let known = self.known_names();
        if let Some(best) = nearest(name, known.iter().map(String::as_str)) {
            diag = diag.hint(format!("did you mean `{best}`?"));
        } else {
            diag = diag.hint(format!("define it first: `let {name} = ...`"));
        }
        self.diags.push(diag);
    }

    /// One arithmetic operation on evaluated operands; `rhs` is the right
    /// operand's expression, pointed at when it is a zero divisor.
    fn binary(&mut self, op: BinOp, a: f64, b: f64, rhs: &Expr) -> Option<f64> {
        Some(match op {
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
        })
    }

    /// Checks that an evaluated value is a non-negative integer in range.
    pub(super) fn int(&mut self, span: Span, value: Option<f64>, what: &str) -> Option<u64> {
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
}
