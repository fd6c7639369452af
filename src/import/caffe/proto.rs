//! Caffe's protobuf messages, as `prost` structs with the field numbers of
//! BVLC Caffe's `src/caffe/proto/caffe.proto` (proto2; `round_mode` of
//! `PoolingParameter` is field 13 as in Caffe's master branch).
//!
//! Written by hand from the published `.proto`, as `src/onnx/proto.rs` is,
//! so the build needs no `protoc`. Only the messages and fields the importer
//! reads are declared; `prost` skips every other field when decoding (the
//! gradients `diff` / `double_diff` of a blob, fillers, learning-rate
//! multipliers, data-layer settings, ...). proto2's semantics are kept:
//! - a singular scalar (`optional` in caffe.proto) is an `Option`, so the
//!   importer tells "absent" (take Caffe's default) from "given";
//! - repeated numbers are packed only where caffe.proto says `[packed =
//!   true]` (blob data and shapes); decoders accept both forms anyway;
//! - enumerations are `i32` fields, so a value this file does not know is
//!   kept and reported by name of field rather than refused by the decoder.
//!
//! Absent on purpose: `LayerParameter.phase` (field 10), which Caffe fills
//! with the phase the net was built in when it saves a model (every layer of
//! a snapshot says `TRAIN`), so it says nothing about when a layer runs; the
//! importer reads `include` / `exclude` rules instead.

use prost::{Enumeration, Message};

/// A whole net: its layers (V2 `layer` or V1 `layers`) and the deprecated
/// net-level input declaration.
#[derive(Clone, PartialEq, Message)]
pub struct NetParameter {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// Deprecated V1 layers.
    #[prost(message, repeated, tag = "2")]
    pub layers: Vec<V1LayerParameter>,
    /// Deprecated: names of the net's input blobs.
    #[prost(string, repeated, tag = "3")]
    pub input: Vec<String>,
    /// Deprecated: four values (num, channels, height, width) per input.
    #[prost(int32, repeated, packed = "false", tag = "4")]
    pub input_dim: Vec<i32>,
    /// Deprecated: one shape per input.
    #[prost(message, repeated, tag = "8")]
    pub input_shape: Vec<BlobShape>,
    #[prost(message, repeated, tag = "100")]
    pub layer: Vec<LayerParameter>,
}

/// The dimensions of a blob.
#[derive(Clone, PartialEq, Message)]
pub struct BlobShape {
    #[prost(int64, repeated, packed = "true", tag = "1")]
    pub dim: Vec<i64>,
}

/// The values of a parameter blob, with its shape (or the legacy 4-D
/// num/channels/height/width).
#[derive(Clone, PartialEq, Message)]
pub struct BlobProto {
    #[prost(message, optional, tag = "7")]
    pub shape: Option<BlobShape>,
    #[prost(float, repeated, packed = "true", tag = "5")]
    pub data: Vec<f32>,
    #[prost(double, repeated, packed = "true", tag = "8")]
    pub double_data: Vec<f64>,
    #[prost(int32, optional, tag = "1")]
    pub num: Option<i32>,
    #[prost(int32, optional, tag = "2")]
    pub channels: Option<i32>,
    #[prost(int32, optional, tag = "3")]
    pub height: Option<i32>,
    #[prost(int32, optional, tag = "4")]
    pub width: Option<i32>,
}

/// `TRAIN` or `TEST`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Enumeration)]
#[repr(i32)]
pub enum Phase {
    Train = 0,
    Test = 1,
}

/// A rule saying in which nets a layer is included (or excluded).
#[derive(Clone, PartialEq, Message)]
pub struct NetStateRule {
    #[prost(enumeration = "Phase", optional, tag = "1")]
    pub phase: Option<i32>,
}

/// A V2 layer.
#[derive(Clone, PartialEq, Message)]
pub struct LayerParameter {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub r#type: Option<String>,
    #[prost(string, repeated, tag = "3")]
    pub bottom: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    pub top: Vec<String>,
    #[prost(message, repeated, tag = "7")]
    pub blobs: Vec<BlobProto>,
    #[prost(message, repeated, tag = "8")]
    pub include: Vec<NetStateRule>,
    #[prost(message, repeated, tag = "9")]
    pub exclude: Vec<NetStateRule>,
    #[prost(message, optional, tag = "106")]
    pub convolution_param: Option<ConvolutionParameter>,
    #[prost(message, optional, tag = "108")]
    pub dropout_param: Option<DropoutParameter>,
    #[prost(message, optional, tag = "117")]
    pub inner_product_param: Option<InnerProductParameter>,
    #[prost(message, optional, tag = "121")]
    pub pooling_param: Option<PoolingParameter>,
    #[prost(message, optional, tag = "123")]
    pub relu_param: Option<ReLuParameter>,
    #[prost(message, optional, tag = "139")]
    pub batch_norm_param: Option<BatchNormParameter>,
    #[prost(message, optional, tag = "142")]
    pub scale_param: Option<ScaleParameter>,
    #[prost(message, optional, tag = "143")]
    pub input_param: Option<InputParameter>,
}

/// The layer types of V1 `layers` (`V1LayerParameter.LayerType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Enumeration)]
#[repr(i32)]
pub enum V1LayerType {
    None = 0,
    Absval = 35,
    Accuracy = 1,
    Argmax = 30,
    Bnll = 2,
    Concat = 3,
    ContrastiveLoss = 37,
    Convolution = 4,
    Data = 5,
    Deconvolution = 39,
    Dropout = 6,
    DummyData = 32,
    EuclideanLoss = 7,
    Eltwise = 25,
    Exp = 38,
    Flatten = 8,
    Hdf5Data = 9,
    Hdf5Output = 10,
    HingeLoss = 28,
    Im2col = 11,
    ImageData = 12,
    InfogainLoss = 13,
    InnerProduct = 14,
    Lrn = 15,
    MemoryData = 29,
    MultinomialLogisticLoss = 16,
    Mvn = 34,
    Pooling = 17,
    Power = 26,
    Relu = 18,
    Sigmoid = 19,
    SigmoidCrossEntropyLoss = 27,
    Silence = 36,
    Softmax = 20,
    SoftmaxLoss = 21,
    Split = 22,
    Slice = 33,
    Tanh = 23,
    WindowData = 24,
    Threshold = 31,
}

/// A deprecated V1 layer: its own field numbers, an enumerated type.
#[derive(Clone, PartialEq, Message)]
pub struct V1LayerParameter {
    #[prost(string, repeated, tag = "2")]
    pub bottom: Vec<String>,
    #[prost(string, repeated, tag = "3")]
    pub top: Vec<String>,
    #[prost(string, optional, tag = "4")]
    pub name: Option<String>,
    #[prost(message, repeated, tag = "32")]
    pub include: Vec<NetStateRule>,
    #[prost(message, repeated, tag = "33")]
    pub exclude: Vec<NetStateRule>,
    #[prost(enumeration = "V1LayerType", optional, tag = "5")]
    pub r#type: Option<i32>,
    #[prost(message, repeated, tag = "6")]
    pub blobs: Vec<BlobProto>,
    #[prost(message, optional, tag = "10")]
    pub convolution_param: Option<ConvolutionParameter>,
    #[prost(message, optional, tag = "12")]
    pub dropout_param: Option<DropoutParameter>,
    #[prost(message, optional, tag = "17")]
    pub inner_product_param: Option<InnerProductParameter>,
    #[prost(message, optional, tag = "19")]
    pub pooling_param: Option<PoolingParameter>,
    #[prost(message, optional, tag = "30")]
    pub relu_param: Option<ReLuParameter>,
}

/// A convolution: a kernel given once for both spatial axes or per axis.
#[derive(Clone, PartialEq, Message)]
pub struct ConvolutionParameter {
    #[prost(uint32, optional, tag = "1")]
    pub num_output: Option<u32>,
    #[prost(bool, optional, tag = "2")]
    pub bias_term: Option<bool>,
    #[prost(uint32, repeated, packed = "false", tag = "3")]
    pub pad: Vec<u32>,
    #[prost(uint32, repeated, packed = "false", tag = "4")]
    pub kernel_size: Vec<u32>,
    #[prost(uint32, repeated, packed = "false", tag = "6")]
    pub stride: Vec<u32>,
    #[prost(uint32, repeated, packed = "false", tag = "18")]
    pub dilation: Vec<u32>,
    #[prost(uint32, optional, tag = "9")]
    pub pad_h: Option<u32>,
    #[prost(uint32, optional, tag = "10")]
    pub pad_w: Option<u32>,
    #[prost(uint32, optional, tag = "11")]
    pub kernel_h: Option<u32>,
    #[prost(uint32, optional, tag = "12")]
    pub kernel_w: Option<u32>,
    #[prost(uint32, optional, tag = "13")]
    pub stride_h: Option<u32>,
    #[prost(uint32, optional, tag = "14")]
    pub stride_w: Option<u32>,
    #[prost(uint32, optional, tag = "5")]
    pub group: Option<u32>,
}

/// `MAX`, `AVE` or `STOCHASTIC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Enumeration)]
#[repr(i32)]
pub enum PoolMethod {
    Max = 0,
    Ave = 1,
    Stochastic = 2,
}

/// How a pooling's output size is rounded: `CEIL` (Caffe's default) or `FLOOR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Enumeration)]
#[repr(i32)]
pub enum RoundMode {
    Ceil = 0,
    Floor = 1,
}

/// A pooling: one square kernel (`kernel_size`) or `kernel_h` and `kernel_w`.
#[derive(Clone, PartialEq, Message)]
pub struct PoolingParameter {
    #[prost(enumeration = "PoolMethod", optional, tag = "1")]
    pub pool: Option<i32>,
    #[prost(uint32, optional, tag = "4")]
    pub pad: Option<u32>,
    #[prost(uint32, optional, tag = "9")]
    pub pad_h: Option<u32>,
    #[prost(uint32, optional, tag = "10")]
    pub pad_w: Option<u32>,
    #[prost(uint32, optional, tag = "2")]
    pub kernel_size: Option<u32>,
    #[prost(uint32, optional, tag = "5")]
    pub kernel_h: Option<u32>,
    #[prost(uint32, optional, tag = "6")]
    pub kernel_w: Option<u32>,
    #[prost(uint32, optional, tag = "3")]
    pub stride: Option<u32>,
    #[prost(uint32, optional, tag = "7")]
    pub stride_h: Option<u32>,
    #[prost(uint32, optional, tag = "8")]
    pub stride_w: Option<u32>,
    #[prost(bool, optional, tag = "12")]
    pub global_pooling: Option<bool>,
    #[prost(enumeration = "RoundMode", optional, tag = "13")]
    pub round_mode: Option<i32>,
}

/// A fully connected layer.
#[derive(Clone, PartialEq, Message)]
pub struct InnerProductParameter {
    #[prost(uint32, optional, tag = "1")]
    pub num_output: Option<u32>,
    #[prost(bool, optional, tag = "2")]
    pub bias_term: Option<bool>,
    #[prost(int32, optional, tag = "5")]
    pub axis: Option<i32>,
    #[prost(bool, optional, tag = "6")]
    pub transpose: Option<bool>,
}

/// A rectifier, leaky when `negative_slope` is not 0.
#[derive(Clone, PartialEq, Message)]
pub struct ReLuParameter {
    #[prost(float, optional, tag = "1")]
    pub negative_slope: Option<f32>,
}

/// A dropout.
#[derive(Clone, PartialEq, Message)]
pub struct DropoutParameter {
    #[prost(float, optional, tag = "1")]
    pub dropout_ratio: Option<f32>,
}

/// A batch normalisation (the scale and shift are a separate `Scale` layer).
#[derive(Clone, PartialEq, Message)]
pub struct BatchNormParameter {
    #[prost(bool, optional, tag = "1")]
    pub use_global_stats: Option<bool>,
    #[prost(float, optional, tag = "3")]
    pub eps: Option<f32>,
}

/// A learned per-channel scale (and shift, with `bias_term`).
#[derive(Clone, PartialEq, Message)]
pub struct ScaleParameter {
    #[prost(int32, optional, tag = "1")]
    pub axis: Option<i32>,
    #[prost(int32, optional, tag = "2")]
    pub num_axes: Option<i32>,
    #[prost(bool, optional, tag = "4")]
    pub bias_term: Option<bool>,
}

/// The shapes of an `Input` layer's tops.
#[derive(Clone, PartialEq, Message)]
pub struct InputParameter {
    #[prost(message, repeated, tag = "1")]
    pub shape: Vec<BlobShape>,
}
