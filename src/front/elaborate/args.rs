//! The argument bag of one statement: positional values and `key=value`
//! options, each taken at most once, and the report of whatever was given
//! twice, unknown or left over.

use super::hints::nearest;
use crate::diagnostic::Diagnostic;
use crate::front::ast::*;

/// The arguments of one statement: positional values and `key=value` options,
/// each taken at most once; [`Args::finish`] reports what nobody took.
pub(super) struct Args<'a> {
    pub(super) stmt: &'a LayerStmt,
    pub(super) positional: Vec<Option<&'a Value>>,
    named: Vec<(&'a Ident, &'a Value, bool)>,
    /// Names already given positionally (`conv 96` then `channels=96`).
    taken: Vec<(String, Span)>,
}

impl<'a> Args<'a> {
    pub(super) fn new(stmt: &'a LayerStmt) -> Self {
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

    pub(super) fn kind(&self) -> &str {
        &self.stmt.kind.name
    }

    pub(super) fn take_positional(&mut self, position: usize) -> Option<&'a Value> {
        self.positional.get_mut(position).and_then(Option::take)
    }

    /// Takes option `key` (or an alias), or else the positional argument at
    /// `position`.
    pub(super) fn take(
        &mut self,
        key: &str,
        aliases: &[&str],
        position: Option<usize>,
    ) -> Option<&'a Value> {
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

    /// The span of option `key` or, failing that, of the positional argument
    /// at `position`, whether or not it has been taken.
    pub(super) fn span_of(&self, key: &str, position: Option<usize>) -> Option<Span> {
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

    /// Reports arguments given twice, options not in `allowed` and
    /// positional arguments nobody took.
    pub(super) fn finish(self, allowed: &[&str], diags: &mut Vec<Diagnostic>) {
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

/// The usage line of a statement kind, shown after too many arguments.
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
