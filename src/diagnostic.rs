//! Diagnostics are plain data (a title, labelled spans, notes and a hint),
//! built by every stage of the compiler and rendered in one place with
//! codespan-reporting, so each message names `FILE:LINE:COL` and shows the
//! offending `.net` line.
//!
//! A `.net` file may hold control characters (an escape sequence pasted by
//! mistake, or on purpose): rendering never writes them to the terminal,
//! where they would recolour it, move the cursor or set its title. Messages
//! and the file name show them as Rust escapes (`\u{1b}`, [`escape_controls`]);
//! the quoted source line shows `?` in their place, one per byte, so every
//! span keeps its offsets.

use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label as CsLabel};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, termcolor, Config};
use std::borrow::Cow;
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
                let message = escape_controls(&label.message);
                if label.primary {
                    CsLabel::primary((), span).with_message(message)
                } else {
                    CsLabel::secondary((), span).with_message(message)
                }
            })
            .collect();
        let mut notes: Vec<String> = self
            .notes
            .iter()
            .map(|note| escape_controls(note).into_owned())
            .collect();
        if let Some(hint) = &self.hint {
            notes.push(format!("hint: {}", escape_controls(hint)));
        }
        base.with_code(self.code)
            .with_message(escape_controls(&self.title))
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

/// Whether `c` acts on a terminal instead of showing: the control
/// characters (C0 but newline and tab, DEL, C1) and the bidirectional
/// embeddings, overrides and isolates (which reorder what is shown).
fn acts_on_terminal(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every character that would act on a terminal written as a
/// Rust escape (`\u{1b}`); unchanged (and not copied) when it has none.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(acts_on_terminal) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if acts_on_terminal(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The source as codespan shows it: every character that would act on a
/// terminal replaced by one `?` per byte, so byte offsets (the spans) stay
/// valid; a carriage return before a newline (Windows line ends) is kept.
fn displayable(text: &str) -> Cow<'_, str> {
    let mut chars = text.char_indices().peekable();
    let mut out: Option<String> = None;
    while let Some((at, c)) = chars.next() {
        let crlf = c == '\r' && chars.peek().is_some_and(|&(_, next)| next == '\n');
        if acts_on_terminal(c) && !crlf {
            let out = out.get_or_insert_with(|| text[..at].to_string());
            out.extend(std::iter::repeat_n('?', c.len_utf8()));
        } else if let Some(out) = &mut out {
            out.push(c);
        }
    }
    out.map_or(Cow::Borrowed(text), Cow::Owned)
}

/// The file codespan renders: the name and text made safe to print.
fn display_file(source: &Source) -> SimpleFile<Cow<'_, str>, Cow<'_, str>> {
    SimpleFile::new(escape_controls(&source.name), displayable(&source.text))
}

/// Renders diagnostics as plain text (what snapshot tests compare).
pub fn render_plain(source: &Source, diagnostics: &[Diagnostic]) -> String {
    let file = display_file(source);
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
    let file = display_file(source);
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
