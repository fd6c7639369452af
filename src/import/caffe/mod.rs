//! The Caffe reader: a `.prototxt` (protobuf text format) or a binary
//! `.caffemodel` to a neutral, fully parsed [`CaffeNet`] that the importer's
//! builder converts to the compiler's IR.
//!
//! - [`parse_prototxt`]: text to a net, with diagnostics that point at the
//!   offending text (codes E0801 to E0808, docs/import.md);
//! - [`decode_caffemodel`]: a binary `NetParameter` to a net whose layers
//!   carry their blobs; [`encode_caffemodel`] writes one (V2 syntax);
//! - [`attach_weights`]: a caffemodel's blobs onto a prototxt's layers.
//!
//! Both syntaxes of Caffe are read: V2 `layer { type: "Convolution" }` and
//! V1 `layers { type: CONVOLUTION }` (mapped to the V2 type names as
//! Caffe's own upgrade does). Both readers go through the same lowering
//! (`model.rs`), so a net reads the same from either file and Caffe's
//! defaults are filled in one place. Nothing here knows the compiler's IR.

mod binary;
mod model;
pub mod proto;
mod text;

pub use binary::{
    attach_weights, decode_caffemodel, encode_caffemodel, AttachReport, CaffeModelError,
    MAX_ENTRIES,
};
pub use model::{
    BatchNormParams, Blob, CaffeLayer, CaffeNet, ConvParams, InnerProductParams, InputDecl, Phase,
    PoolMethod, PoolParams, RoundMode, ScaleParams,
};
pub use text::{parse_prototxt, MAX_NESTING};
