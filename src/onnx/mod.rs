//! ONNX: the protobuf messages ([`proto`]) and, with the runtime, the
//! exporter of a trained model ([`export`]).
//!
//! [`proto`] is the one definition of ONNX's messages in the code base (an
//! importer reads the same structs); it needs only `prost`, so it builds
//! without the runtime. [`export`] turns a plan and its checkpoint (weights,
//! fitted preprocessing, class names) into a `ModelProto`; `allcnnc export
//! --format onnx` writes its bytes.

#[cfg(feature = "runtime")]
pub mod export;
pub mod proto;
