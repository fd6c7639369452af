//! Back ends: everything that turns the IR into output.
//!
//! - [`net`]: the pretty printer back to `.net` text (used by `convert`);
//! - [`dot`] and [`json`]: the graph for Graphviz and for scripts;
//! - [`summary`]: the per-layer table and its JSON form;
//! - [`plan`]: lowering to the executable [`::plan::Plan`] (in the contract
//!   crate `allcnnc-plan`; the runtime runs it);
//! - [`cuda`]: fused CUDA C kernels and the device plan the runtime's CUDA
//!   executor runs;
//! - [`names`]: unique names for generated code and exported models.

pub mod cuda;
pub mod dot;
pub mod json;
pub mod names;
pub mod net;
pub mod plan;
pub mod summary;
