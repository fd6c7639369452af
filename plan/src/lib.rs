//! The contract between the allcnnc compiler and its runtime, in a crate of
//! its own so that both sides depend on it and neither pulls in the other's
//! dependencies (the runtime's BLAS, CUDA and plotting crates).
//!
//! - [`model`]: the executable plan (layers, shapes, windows, parameters),
//!   re-exported at the crate root;
//! - [`device`]: the device plan of the CUDA back end (buffers, kernels,
//!   launches, schedules);
//! - [`recipe`]: the training recipe (schedule, preprocessing, initialisation).
//!
//! Invariant: data and pure functions of it only; nothing here runs a model,
//! and the only dependency is serde.

pub mod device;
pub mod model;
pub mod recipe;

pub use model::*;
