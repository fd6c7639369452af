//! The front end: `.net` text to a checked IR.
//!
//! [`parser`] turns text into the syntax tree of [`ast`]; [`elaborate`] expands
//! constants, blocks and repeats into an IR [`Graph`]. [`load`] runs both and
//! then the analysis passes, so its result has every shape and count filled in.

pub mod ast;
pub mod elaborate;
pub mod parser;

use crate::diagnostic::{Diagnostic, Source};
use crate::ir::Graph;
use crate::passes::PassManager;

/// Parses, elaborates and analyses (shapes, counts, budgets) one source.
pub fn load(source: &Source) -> Result<Graph, Vec<Diagnostic>> {
    if source.text.trim().is_empty() {
        return Err(vec![Diagnostic::error("E0002", "the file is empty")
            .at(0..0, "nothing here")
            .hint("a minimal network: `network tiny {` / `input 1x28x28` / `classes 10` / `conv 10 3x3` / `gap` / `softmax` / `}`")]);
    }
    let file = parser::parse(&source.text)?;
    let mut graph = elaborate::elaborate(&file)?;
    PassManager::analysis().run(&mut graph)?;
    Ok(graph)
}

/// Decodes a file's bytes, turning invalid UTF-8 into a diagnostic that names
/// the line and column of the first bad byte.
pub fn decode(name: &str, bytes: Vec<u8>) -> Result<Source, (Source, Vec<Diagnostic>)> {
    match String::from_utf8(bytes) {
        // A byte-order mark (some Windows editors write one) is not text: drop
        // it, so line 1 column 1 is the first character the user sees.
        Ok(text) => match text.strip_prefix('\u{feff}') {
            Some(rest) => Ok(Source::new(name, rest)),
            None => Ok(Source::new(name, text)),
        },
        Err(err) => {
            let valid = err.utf8_error().valid_up_to();
            let bytes = err.into_bytes();
            // Show the file up to the bad byte so the label has a line to sit on.
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let lossy_offset = String::from_utf8_lossy(&bytes[..valid]).len();
            let source = Source::new(name, text);
            let diag = Diagnostic::error("E0003", "the file is not valid UTF-8")
                .at(
                    lossy_offset..lossy_offset + 1,
                    format!("invalid byte 0x{:02x} at byte offset {valid}", bytes[valid]),
                )
                .note(".net files are UTF-8 text");
            Err((source, vec![diag]))
        }
    }
}
