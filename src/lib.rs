//! allcnnc: a compiler for a small language that describes convolutional
//! networks, after Springenberg et al., "Striving for Simplicity: The All
//! Convolutional Net" (2015).
//!
//! The pipeline, one folder a stage: [`front`] (text to IR), [`ir`] (the
//! graph), [`passes`] (analysis and rewrites), [`back`] (printers, summary,
//! lowering to the runtime's plan). [`diagnostic`] renders every error;
//! [`driver`] is the one way from a file to a checked model and a running
//! executor, shared by [`cli`], the benches and the tests.

pub mod back;
pub mod cli;
pub mod diagnostic;
pub mod driver;
pub mod front;
pub mod ir;
pub mod paper;
pub mod passes;
pub mod vis;
