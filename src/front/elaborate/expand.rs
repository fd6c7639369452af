//! Expansion: statements run in order, `use` expands a block's body in a
//! scope of its arguments, `repeat` runs its body once per iteration. Step,
//! depth and error caps keep a runaway expansion finite.

use super::hints::nearest;
use super::{stmt_span, Elaborator, MAX_DEPTH, MAX_ERRORS, MAX_LAYERS, MAX_STEPS};
use crate::diagnostic::Diagnostic;
use crate::front::ast::*;
use std::collections::HashMap;

impl Elaborator {
    /// Elaborates statements in order, deduplicating the diagnostics of each.
    pub(super) fn stmts(&mut self, stmts: &[Stmt]) {
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

    /// Enters one more level of `use`/`repeat` nesting; false (reported) past
    /// [`MAX_DEPTH`]. The caller leaves the level by decrementing `depth`.
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

    /// Expands `use NAME(args)`: the block's body in a scope binding its
    /// parameters.
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

    /// Expands `repeat [VAR in FROM..]TO { ... }`, stopping after the first
    /// iteration that reports an error.
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
}
