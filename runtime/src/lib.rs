//! The allcnnc runtime: executes the plans the compiler produces.
//!
//! - [`plan`]: the contract with the compiler (layers, shapes, parameters),
//!   re-exported from the `allcnnc-plan` crate (lib `plan`), which also holds
//!   the device plan ([`cuda::program`]) and the training recipe
//!   ([`train::Recipe`], [`data::preprocess::PreprocessKind`]);
//! - [`backend`]: the [`backend::Executor`] trait every device implements;
//! - [`budget`]: the memory budget every size a user controls is checked
//!   against before allocating;
//! - [`cpu`]: the CPU backend (kernels and the executor);
//! - [`cuda`]: the CUDA backend (generated kernels run through the driver API);
//! - [`data`]: data set readers, preprocessing and augmentation;
//! - [`draw`]: the font and text of every labelled PNG (curves, figures);
//! - [`file`]: reading a user's file, bounded, with one set of messages;
//! - [`rng`]: the SplitMix64 streams every random decision draws from;
//! - [`train`]: the training loop, evaluation, checkpoints and curves.

pub mod backend;
pub mod budget;
pub mod cpu;
pub mod cuda;
pub mod data;
pub mod draw;
pub mod file;
pub use ::plan::model as plan;
pub mod rng;
pub mod train;

/// Counted skips for the unit tests (the integration tests' module).
#[cfg(test)]
#[path = "../../tests/skip/mod.rs"]
mod skip;
