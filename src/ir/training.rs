//! The training recipe of a `.net` file's `train { ... }` section.
//!
//! The compiler parses, checks and shows it; the recipe is the contract
//! crate's [`plan::recipe::Recipe`] (with its schedule, preprocessing and
//! initialisation types), which the runtime re-exports as
//! `runtime::train::Recipe`, so the trainer consumes what the front end
//! fills in, with command-line flags overriding it. The names here are the IR's:
//! `Training` for the section, `Preprocess` for the choice of preprocessing
//! (the runtime's `PreprocessKind`; its `Preprocess` is the fitted one).
//!
//! Invariant: there is no second copy of these types in the compiler and no
//! conversion between the two crates.

pub use plan::recipe::PreprocessKind as Preprocess;
pub use plan::recipe::{ranges, Init, Recipe as Training, Schedule};
