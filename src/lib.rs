//! allcnnc: a compiler for a small language that describes convolutional
//! networks, after Springenberg et al., "Striving for Simplicity: The All
//! Convolutional Net" (2015).
//!
//! The pipeline, one folder a stage: [`front`] (text to IR), [`ir`] (the
//! graph), [`passes`] (analysis and rewrites), [`back`] (printers, summary,
//! lowering to the runtime's plan). [`onnx`] holds ONNX's protobuf messages
//! and the exporter of trained models, `pytorch` the safetensors and
//! `MODEL.py` export. [`diagnostic`] renders every error;
//! `driver` is the one way from a file to a checked model and a running
//! executor, shared by `cli`, the benches and the tests.
//!
//! The plan contract comes from the `allcnnc-plan` crate. The driver, the
//! command line (`cli`) and the visualisations (`vis`) run models and need
//! the runtime: they exist only with the default `runtime` feature, so the
//! library builds with `--no-default-features` without the BLAS, CUDA and
//! plotting crates.

pub mod back;
#[cfg(feature = "runtime")]
pub mod cli;
pub mod diagnostic;
#[cfg(feature = "runtime")]
pub mod driver;
pub mod front;
#[cfg(feature = "runtime")]
pub mod import;
pub mod ir;
pub mod onnx;
pub mod paper;
pub mod passes;
#[cfg(feature = "runtime")]
pub mod pytorch;
#[cfg(feature = "runtime")]
pub mod vis;
