//! Diagnostics are plain data (a title, labelled spans, notes and a hint),
//! built by every stage of the compiler and rendered in one place with
//! codespan-reporting, so each message names `FILE:LINE:COL` and shows the
//! offending `.net` line.

use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label as CsLabel};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, termcolor, Config};
use std::ops::Range;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// A span of the source with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub span: Range<usize>,
    pub message: String,
    /// The primary label is where the problem is; secondary ones give context.
    pub primary: bool,
}

/// One message for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// A short stable code such as `E0101`, documented in docs/language.md.
    pub code: &'static str,
    pub title: String,
    pub labels: Vec<Label>,
    pub notes: Vec<String>,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, title: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            code,
            title: title.into(),
            labels: Vec::new(),
            notes: Vec::new(),
            hint: None,
        }
    }

    pub fn warning(code: &'static str, title: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(code, title)
        }
    }

    /// Adds the primary label: where the problem is.
    pub fn at(mut self, span: Range<usize>, message: impl Into<String>) -> Self {
        self.labels.push(Label {
            span,
            message: message.into(),
            primary: true,
        });
        self
    }

    /// Adds a secondary label: context for the problem.
    pub fn also(mut self, span: Range<usize>, message: impl Into<String>) -> Self {
        self.labels.push(Label {
            span,
            message: message.into(),
            primary: false,
        });
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    fn to_codespan(&self, source_len: usize) -> CsDiagnostic<()> {
        let base = match self.severity {
            Severity::Error => CsDiagnostic::error(),
            Severity::Warning => CsDiagnostic::warning(),
        };
        let clamp = |span: &Range<usize>| {
            let start = span.start.min(source_len);
            start..span.end.clamp(start, source_len)
        };
        let labels = self
            .labels
            .iter()
            .map(|label| {
                let span = clamp(&label.span);
                if label.primary {
                    CsLabel::primary((), span).with_message(&label.message)
                } else {
                    CsLabel::secondary((), span).with_message(&label.message)
                }
            })
            .collect();
        let mut notes = self.notes.clone();
        if let Some(hint) = &self.hint {
            notes.push(format!("hint: {hint}"));
        }
        base.with_code(self.code)
            .with_message(&self.title)
            .with_labels(labels)
            .with_notes(notes)
    }
}

/// A source file being compiled: its display name and text.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub text: String,
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            text: text.into(),
        }
    }

    /// 1-based line number of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        self.text.as_bytes()[..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }
}

/// Renders diagnostics as plain text (what snapshot tests compare).
pub fn render_plain(source: &Source, diagnostics: &[Diagnostic]) -> String {
    let file = SimpleFile::new(source.name.as_str(), source.text.as_str());
    let config = Config::default();
    let mut out = String::new();
    for diagnostic in diagnostics {
        let cs = diagnostic.to_codespan(source.text.len());
        // Rendering into a String cannot fail for spans clamped to the file.
        if term::emit_to_string(&mut out, &config, &file, &cs).is_err() {
            out.push_str(&format!(
                "error[{}]: {}\n",
                diagnostic.code, diagnostic.title
            ));
        }
    }
    out
}

/// Renders diagnostics to standard error, in colour when it is a terminal.
pub fn emit_stderr(source: &Source, diagnostics: &[Diagnostic]) {
    use std::io::IsTerminal;
    let choice = if std::io::stderr().is_terminal() {
        termcolor::ColorChoice::Auto
    } else {
        termcolor::ColorChoice::Never
    };
    let stream = termcolor::StandardStream::stderr(choice);
    let mut lock = stream.lock();
    let file = SimpleFile::new(source.name.as_str(), source.text.as_str());
    let config = Config::default();
    let styles = term::Styles::default();
    let mut writer = term::StylesWriter::new(&mut lock, &styles);
    for diagnostic in diagnostics {
        let cs = diagnostic.to_codespan(source.text.len());
        if term::emit_to_write_style(&mut writer, &config, &file, &cs).is_err() {
            eprintln!("error[{}]: {}", diagnostic.code, diagnostic.title);
        }
    }
}
