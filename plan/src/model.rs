//! The executable plan: the contract between the compiler and the runtime.
//!
//! The compiler lowers a checked `.net` model into a [`Plan`]: the input shape,
//! the ordered layers with their input and output shapes already inferred, and
//! the parameters each layer owns. The runtime never parses `.net` text; it
//! only executes plans. Backends (CPU now, CUDA later) turn a plan into the
//! forward, backward and update steps.
//!
//! Conventions every backend follows:
//! - activations are `N x H x W x C` (channels-last), `f32`;
//! - convolution weights are `KH x KW x C_in x C_out` (HWIO), biases `C_out`;
//! - a pooling window that starts inside the (padded) input but runs past it
//!   is clipped (Caffe's "ceil" rounding makes such windows); max-pool ignores
//!   the clipped part, average pool divides by the number of window elements
//!   that lie inside the padded input (Caffe's rule);
//! - dropout is inverted (kept values are scaled by `1 / (1 - p)` in training)
//!   and is the identity at inference;
//! - the last layer is `Softmax`; training minimises the mean cross-entropy.

use serde::{Deserialize, Serialize};

/// A shape `C x H x W` of one image's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Shape {
    pub const fn new(c: usize, h: usize, w: usize) -> Self {
        Self { c, h, w }
    }

    /// Number of values of one image.
    pub const fn len(&self) -> usize {
        self.c * self.h * self.w
    }

    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.c, self.h, self.w)
    }
}

/// Explicit zero padding on each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Padding {
    pub top: usize,
    pub left: usize,
    pub bottom: usize,
    pub right: usize,
}

/// A 2-d window: kernel size, stride and padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Window {
    pub kh: usize,
    pub kw: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad: Padding,
}

/// The pointwise non-linearity after a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Activation {
    None,
    Relu,
    /// `x if x > 0 else slope * x`.
    LeakyRelu {
        slope: f32,
    },
}

/// How the backward pass treats a ReLU (Springenberg et al., Figure 1).
///
/// `Backprop` is the true gradient and the only rule training uses; the other
/// two exist for visualisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ReluRule {
    /// `R_in = [f_in > 0] * R_out`.
    #[default]
    Backprop,
    /// `R_in = [R_out > 0] * R_out` (Zeiler & Fergus; forward input ignored).
    Deconvnet,
    /// `R_in = [f_in > 0] * [R_out > 0] * R_out`.
    Guided,
}

/// One operation of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Convolution with optional bias, followed by `act`.
    Conv {
        out_channels: usize,
        window: Window,
        bias: bool,
        act: Activation,
    },
    /// Max pooling; records the argmax "switches" in training and visualisation.
    MaxPool { window: Window },
    /// Average pooling (Caffe's divisor rule, see the module doc).
    AvgPool { window: Window },
    /// Mean over H x W; output is `C x 1 x 1`.
    GlobalAvgPool,
    /// Inverted dropout with drop probability `p` (0 <= p < 1).
    Dropout { p: f32 },
    /// Softmax over channels of a `C x 1 x 1` input; with the labels it gives
    /// the cross-entropy loss.
    Softmax,
}

/// One layer: its op and the shapes the compiler inferred.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// Unique, deterministic name (`conv1`, `pool2`, ...), also the prefix of
    /// its parameter names in checkpoints.
    pub name: String,
    pub op: Op,
    pub in_shape: Shape,
    pub out_shape: Shape,
    /// 1-based line of the `.net` file the layer came from (0 when unknown).
    #[serde(default)]
    pub line: usize,
}

/// A named parameter tensor owned by a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamSpec {
    /// `LAYER.weight` or `LAYER.bias`.
    pub name: String,
    /// Index into [`Plan::layers`].
    pub layer: usize,
    /// HWIO for weights, `[C_out]` for biases.
    pub dims: Vec<usize>,
    /// Fan-in used by the initialiser (`KH * KW * C_in`).
    pub fan_in: usize,
}

impl ParamSpec {
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The executable plan of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Model name (from the `.net` file).
    pub name: String,
    pub input: Shape,
    pub classes: usize,
    pub layers: Vec<Layer>,
    /// A hash of the model's structure (layers, shapes, parameters), used to
    /// refuse a checkpoint of another model.
    pub model_hash: String,
}

impl Plan {
    /// A plan written by hand (tests, examples): `layers` as (name, op,
    /// output shape), each layer's input the previous one's output, no
    /// `.net` lines; `name` doubles as the model hash.
    pub fn chain<'a>(
        name: &str,
        input: Shape,
        classes: usize,
        layers: impl IntoIterator<Item = (&'a str, Op, Shape)>,
    ) -> Plan {
        let mut prev = input;
        let layers = layers
            .into_iter()
            .map(|(layer_name, op, out_shape)| {
                let layer = Layer {
                    name: layer_name.to_string(),
                    op,
                    in_shape: prev,
                    out_shape,
                    line: 0,
                };
                prev = out_shape;
                layer
            })
            .collect();
        Plan {
            name: name.to_string(),
            input,
            classes,
            layers,
            model_hash: name.to_string(),
        }
    }

    /// The parameters of the plan, in layer order (weight before bias).
    pub fn params(&self) -> Vec<ParamSpec> {
        let mut params = Vec::new();
        for (layer_idx, layer) in self.layers.iter().enumerate() {
            if let Op::Conv {
                out_channels,
                window,
                bias,
                ..
            } = &layer.op
            {
                let fan_in = window.kh * window.kw * layer.in_shape.c;
                params.push(ParamSpec {
                    name: format!("{}.weight", layer.name),
                    layer: layer_idx,
                    dims: vec![window.kh, window.kw, layer.in_shape.c, *out_channels],
                    fan_in,
                });
                if *bias {
                    params.push(ParamSpec {
                        name: format!("{}.bias", layer.name),
                        layer: layer_idx,
                        dims: vec![*out_channels],
                        fan_in,
                    });
                }
            }
        }
        params
    }

    /// Multiply-accumulates of one image's forward pass.
    pub fn forward_macs(&self) -> u64 {
        self.layers
            .iter()
            .map(|layer| match &layer.op {
                Op::Conv { window, .. } => {
                    (layer.out_shape.len() * window.kh * window.kw * layer.in_shape.c) as u64
                }
                _ => 0,
            })
            .sum()
    }
}
