//! The pest parser: `.net` text to the syntax tree of [`super::ast`].
//!
//! Syntax errors become diagnostics that say what was expected. A line inside
//! a body that is not a statement does not stop the parse: it becomes
//! [`Stmt::Bad`] and is explained on its own, so one run reports every bad line.

use super::ast::*;
use crate::diagnostic::Diagnostic;
use pest::iterators::Pair;
use pest::Parser;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/net.pest"]
struct NetParser;

/// Parses a whole file; on a syntax error returns the diagnostics.
pub fn parse(text: &str) -> Result<File, Vec<Diagnostic>> {
    check_limits(text)?;
    let mut pairs = NetParser::parse(Rule::file, text)
        .map_err(|err| vec![syntax_error(&err, text, 0, false)])?;
    let mut file = File::default();
    let Some(root) = pairs.next() else {
        return Ok(file);
    };
    let mut diagnostics = Vec::new();
    for pair in root.into_inner() {
        let item = match pair.as_rule() {
            Rule::const_def => Item::Const(const_def(pair)),
            Rule::block_def => Item::Block(block_def(pair, text, &mut diagnostics)),
            Rule::network => Item::Network(network(pair, text, &mut diagnostics)),
            Rule::train => {
                let span = span_of(&pair);
                let body = body(pair.into_inner().next(), text, &mut diagnostics);
                Item::Train(TrainDef { body, span })
            }
            _ => continue,
        };
        file.items.push(item);
    }
    if diagnostics.is_empty() {
        Ok(file)
    } else {
        Err(diagnostics)
    }
}

fn span_of(pair: &Pair<'_, Rule>) -> Span {
    let span = pair.as_span();
    span.start()..span.end()
}

fn ident(pair: Pair<'_, Rule>) -> Ident {
    Ident {
        name: pair.as_str().to_string(),
        span: span_of(&pair),
    }
}

fn const_def(pair: Pair<'_, Rule>) -> ConstDef {
    let span = span_of(&pair);
    let mut inner = pair.into_inner();
    let name = ident(inner.next().expect("grammar: let has a name"));
    let value = expr(inner.next().expect("grammar: let has a value"));
    ConstDef { name, value, span }
}

fn block_def(pair: Pair<'_, Rule>, text: &str, diagnostics: &mut Vec<Diagnostic>) -> BlockDef {
    let span = span_of(&pair);
    let mut name = None;
    let mut params = Vec::new();
    let mut stmts = Vec::new();
    for part in pair.into_inner() {
        match part.as_rule() {
            Rule::ident => name = Some(ident(part)),
            Rule::params => params = part.into_inner().map(ident).collect(),
            Rule::body => stmts = body(Some(part), text, diagnostics),
            _ => {}
        }
    }
    BlockDef {
        name: name.expect("grammar: block has a name"),
        params,
        body: stmts,
        span,
    }
}

fn network(pair: Pair<'_, Rule>, text: &str, diagnostics: &mut Vec<Diagnostic>) -> NetworkDef {
    let span = span_of(&pair);
    let mut inner = pair.into_inner();
    let name = ident(inner.next().expect("grammar: network has a name"));
    let body = body(inner.next(), text, diagnostics);
    NetworkDef { name, body, span }
}

fn body(pair: Option<Pair<'_, Rule>>, text: &str, diagnostics: &mut Vec<Diagnostic>) -> Vec<Stmt> {
    let Some(pair) = pair else {
        return Vec::new();
    };
    pair.into_inner()
        .filter_map(|part| stmt(part, text, diagnostics))
        .collect()
}

fn stmt(pair: Pair<'_, Rule>, text: &str, diagnostics: &mut Vec<Diagnostic>) -> Option<Stmt> {
    let span = span_of(&pair);
    Some(match pair.as_rule() {
        Rule::layer => Stmt::Layer(layer(pair)),
        Rule::const_def => Stmt::Const(const_def(pair)),
        Rule::use_block => {
            let mut inner = pair.into_inner();
            let block = ident(inner.next().expect("grammar: use names a block"));
            let args = inner
                .next()
                .map(|args| args.into_inner().map(expr).collect())
                .unwrap_or_default();
            Stmt::Use { block, args, span }
        }
        Rule::repeat => {
            let parts: Vec<_> = pair.into_inner().collect();
            let mut var = None;
            let mut exprs = Vec::new();
            let mut stmts = Vec::new();
            for part in parts {
                match part.as_rule() {
                    Rule::ident => var = Some(ident(part)),
                    Rule::expr => exprs.push(expr(part)),
                    Rule::body => stmts = body(Some(part), text, diagnostics),
                    _ => {}
                }
            }
            let to = exprs.pop().expect("grammar: repeat has a count");
            let from = exprs.pop();
            Stmt::Repeat {
                var,
                from,
                to,
                body: stmts,
                span,
            }
        }
        Rule::bad_line => {
            diagnostics.push(explain_bad_line(text, span.clone()));
            Stmt::Bad(span)
        }
        _ => return None,
    })
}

fn layer(pair: Pair<'_, Rule>) -> LayerStmt {
    let span = span_of(&pair);
    let mut label = None;
    let mut kind = None;
    let mut args = Vec::new();
    for part in pair.into_inner() {
        match part.as_rule() {
            Rule::label => label = Some(ident(part)),
            Rule::ident => kind = Some(ident(part)),
            Rule::arg => {
                let inner = part
                    .into_inner()
                    .next()
                    .expect("grammar: arg is option or value");
                args.push(match inner.as_rule() {
                    Rule::option => {
                        let mut kv = inner.into_inner();
                        let key = ident(kv.next().expect("grammar: option key"));
                        let val = value(kv.next().expect("grammar: option value"));
                        Arg::Named(key, val)
                    }
                    _ => Arg::Positional(value(inner)),
                });
            }
            _ => {}
        }
    }
    LayerStmt {
        label,
        kind: kind.expect("grammar: layer has a kind"),
        args,
        span,
    }
}

fn value(pair: Pair<'_, Rule>) -> Value {
    let span = span_of(&pair);
    let inner = pair
        .into_inner()
        .next()
        .expect("grammar: value has content");
    let kind = match inner.as_rule() {
        Rule::list => ValueKind::List(inner.into_inner().map(expr).collect()),
        Rule::dims => ValueKind::Dims(
            inner
                .into_inner()
                // Digits only, so the parse fails only on overflow; saturate
                // and let the range checks report the value.
                .map(|int| int.as_str().parse().unwrap_or(u64::MAX))
                .collect(),
        ),
        _ => ValueKind::Expr(expr(inner)),
    };
    Value { kind, span }
}

/// Builds an expression with the usual precedence (`*` `/` over `+` `-`, left
/// associative, unary minus binding tightest).
fn expr(pair: Pair<'_, Rule>) -> Expr {
    let mut operands: Vec<Expr> = Vec::new();
    let mut operators: Vec<BinOp> = Vec::new();
    let mut negate = false;
    for part in pair.into_inner() {
        match part.as_rule() {
            Rule::neg => negate = !negate,
            Rule::add | Rule::sub | Rule::mul | Rule::div => {
                let op = match part.as_rule() {
                    Rule::add => BinOp::Add,
                    Rule::sub => BinOp::Sub,
                    Rule::mul => BinOp::Mul,
                    _ => BinOp::Div,
                };
                while let Some(&top) = operators.last() {
                    if precedence(top) >= precedence(op) {
                        reduce(&mut operands, &mut operators);
                    } else {
                        break;
                    }
                }
                operators.push(op);
            }
            _ => {
                let mut operand = primary(part);
                if negate {
                    let span = operand.span.clone();
                    operand = Expr {
                        kind: ExprKind::Neg(Box::new(operand)),
                        span: span.start.saturating_sub(1)..span.end,
                    };
                    negate = false;
                }
                operands.push(operand);
            }
        }
    }
    while !operators.is_empty() {
        reduce(&mut operands, &mut operators);
    }
    operands.pop().expect("grammar: expression has an operand")
}

fn precedence(op: BinOp) -> u8 {
    match op {
        BinOp::Add | BinOp::Sub => 1,
        BinOp::Mul | BinOp::Div => 2,
    }
}

fn reduce(operands: &mut Vec<Expr>, operators: &mut Vec<BinOp>) {
    let op = operators.pop().expect("reduce needs an operator");
    let rhs = operands.pop().expect("reduce needs two operands");
    let lhs = operands.pop().expect("reduce needs two operands");
    let span = lhs.span.start..rhs.span.end;
    operands.push(Expr {
        kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
        span,
    });
}

fn primary(pair: Pair<'_, Rule>) -> Expr {
    let span = span_of(&pair);
    let kind = match pair.as_rule() {
        Rule::number => ExprKind::Number(pair.as_str().parse().unwrap_or(f64::INFINITY)),
        Rule::ident => ExprKind::Name(pair.as_str().to_string()),
        Rule::call => {
            let mut inner = pair.into_inner();
            let name = ident(inner.next().expect("grammar: call has a name"));
            let args = inner
                .next()
                .map(|args| args.into_inner().map(expr).collect())
                .unwrap_or_default();
            ExprKind::Call(name, args)
        }
        _ => return expr(pair),
    };
    Expr { kind, span }
}

/// Parses a bad line on its own to learn what was expected where.
fn explain_bad_line(text: &str, span: Span) -> Diagnostic {
    let line = &text[span.clone()];
    match NetParser::parse(Rule::line_check, line) {
        Err(err) => syntax_error(&err, text, span.start, true),
        // The line parses alone, so it failed only because of what follows it.
        Ok(_) => Diagnostic::error(
            "E0001",
            "syntax error: unexpected text at the end of the line",
        )
        .at(span, "this line is not a statement"),
    }
}

/// Most nested `(` and `{` levels the parser accepts (deeper text would
/// overflow the stack of the recursive-descent parser).
pub const MAX_NESTING: usize = 64;
/// Most operators on one line (an expression is one line; evaluating a longer
/// chain would recurse too deeply).
pub const MAX_OPERATORS_PER_LINE: usize = 256;

/// Rejects, before pest sees it, text that is nested too deeply or has too
/// long an expression (either would overflow the stack), and text whose
/// braces do not close properly. The last matters for speed: a `repeat` whose
/// body never closes, or is followed by text on its line, fails only after
/// parsing its whole body, and the parser then parses that body again as
/// plain lines; nested, that doubles per level (minutes for ten levels).
/// Only those two shapes can make a body-holding statement fail late, so
/// ruling them out keeps parsing linear.
fn check_limits(text: &str) -> Result<(), Vec<Diagnostic>> {
    let mut depth = 0usize;
    let mut operators = 0usize;
    let mut in_comment = false;
    let mut prev = '\0';
    let mut open_braces = Vec::new();
    let mut diags = Vec::new();
    for (pos, ch) in text.char_indices() {
        match ch {
            '\n' => {
                in_comment = false;
                operators = 0;
            }
            _ if in_comment => {}
            '#' => in_comment = true,
            '/' if text[pos + 1..].starts_with('/') => in_comment = true,
            '(' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(vec![Diagnostic::error(
                        "E0004",
                        format!("brackets nest deeper than {MAX_NESTING} levels"),
                    )
                    .at(pos..pos + 1, "too deep here")]);
                }
                if ch == '{' {
                    open_braces.push(pos);
                }
            }
            ')' | '}' => {
                depth = depth.saturating_sub(1);
                if ch == '}' {
                    open_braces.pop();
                    if let Some(diag) = text_after_brace(text, pos) {
                        diags.push(diag);
                    }
                }
            }
            // The `-` of an exponent (`1e-5`) is not an operator.
            '+' | '-' | '*' | '/' if !(ch == '-' && prev == 'e') => {
                operators += 1;
                if operators > MAX_OPERATORS_PER_LINE {
                    return Err(vec![Diagnostic::error(
                        "E0004",
                        format!("more than {MAX_OPERATORS_PER_LINE} operators on one line"),
                    )
                    .at(pos..pos + 1, "too long here")
                    .hint("split the expression with `let` constants")]);
                }
            }
            _ => {}
        }
        prev = ch;
    }
    if let Some(&open) = open_braces.last() {
        let end = text.len();
        diags.push(
            Diagnostic::error("E0001", "syntax error: a `{` is never closed")
                .at(open..open + 1, "this `{` is never closed")
                .also(end..end, "the file ends here")
                .hint("add the missing `}`"),
        );
    }
    if diags.is_empty() {
        Ok(())
    } else {
        Err(diags)
    }
}

/// A `}` ends its line: only spaces, a comment or more `}` may follow it.
fn text_after_brace(text: &str, pos: usize) -> Option<Diagnostic> {
    let rest = &text[pos + 1..];
    let line = &rest[..rest.find(['\n', '\r']).unwrap_or(rest.len())];
    let trimmed = line.trim_start_matches([' ', '\t']);
    if trimmed.is_empty()
        || trimmed.starts_with('}')
        || trimmed.starts_with('#')
        || trimmed.starts_with("//")
    {
        return None;
    }
    let start = pos + 1 + (line.len() - trimmed.len());
    Some(
        Diagnostic::error("E0001", "syntax error: unexpected text after `}`")
            .at(start..pos + 1 + line.len(), "move this to its own line")
            .also(pos..pos + 1, "a `}` ends its line"),
    )
}

/// A diagnostic for a pest error at `offset` into `text`; `in_line` when a
/// single bad line was parsed on its own (its end is the end of the line).
fn syntax_error(
    err: &pest::error::Error<Rule>,
    text: &str,
    offset: usize,
    in_line: bool,
) -> Diagnostic {
    let pos = match err.location {
        pest::error::InputLocation::Pos(pos) => pos,
        pest::error::InputLocation::Span((start, _)) => start,
    } + offset;
    let expected = match &err.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => {
            let mut names: Vec<&str> = positives
                .iter()
                .filter_map(|rule| match rule {
                    Rule::EOI if in_line => Some("end of the line"),
                    _ => rule_name(*rule),
                })
                .collect();
            names.sort_unstable();
            names.dedup();
            names
        }
        pest::error::ErrorVariant::CustomError { .. } => Vec::new(),
    };
    let message = if expected.is_empty() {
        "unexpected text".to_string()
    } else {
        format!("expected {}", join_or(&expected))
    };
    // Underline one character, but never a line break: a label that spans
    // it would be drawn over two lines.
    let end = match text[pos.min(text.len())..].chars().next() {
        Some(ch) if ch != '\n' && ch != '\r' => pos + ch.len_utf8(),
        _ => pos,
    };
    Diagnostic::error("E0001", format!("syntax error: {message}"))
        .at(pos..end, message)
        .note("a file holds `let` constants, `block`s, one `network { ... }` and an optional `train { ... }`; each statement sits on its own line")
}

fn join_or(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} or {}", rest.join(", "), last),
    }
}

/// Human names of the grammar rules that appear in "expected" lists.
fn rule_name(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::EOI => "end of file",
        Rule::const_def => "`let`",
        Rule::block_def => "`block`",
        Rule::network => "`network`",
        Rule::train => "`train`",
        Rule::body => "`{`",
        Rule::ident | Rule::label => "a name",
        Rule::expr | Rule::value | Rule::number | Rule::int | Rule::call => "a value",
        Rule::dims => "dimensions like 3x32x32",
        Rule::arg | Rule::option => "an argument",
        Rule::list => "a list",
        Rule::args | Rule::params => "arguments",
        Rule::add | Rule::sub | Rule::mul | Rule::div => "an operator",
        Rule::layer | Rule::repeat | Rule::use_block => "a statement",
        _ => return None,
    })
}
