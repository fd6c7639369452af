//! The training recipe of a `.net` file's `train { ... }` section.
//!
//! The compiler parses, checks and shows it; the recipe is the runtime's own
//! [`runtime::train::Recipe`] (with its schedule, preprocessing and
//! initialisation types), so the trainer consumes what the front end fills
//! in, with command-line flags overriding it. The names here are the IR's:
//! `Training` for the section, `Preprocess` for the choice of preprocessing
//! (the runtime's `PreprocessKind`; its `Preprocess` is the fitted one).
//!
//! Invariant: there is no second copy of these types in the compiler and no
//! conversion between the two crates.

pub use runtime::data::PreprocessKind as Preprocess;
pub use runtime::train::{Init, Recipe as Training, Schedule};
