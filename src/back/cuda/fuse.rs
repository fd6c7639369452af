//! Grouping layers into the kernels the CUDA back end launches.
//!
//! Contract: reads the plan and changes nothing; it computes a [`Fusion`],
//! a list of [`FusedGroup`]s over the layer chain, which the generator turns
//! into kernels. This is a back-end decision, not a pass over the IR: it
//! works on the lowered [`Plan`], and the IR's passes never see it.
//! [`fuse`] is the graph-level entry point (it needs shapes, error E0601
//! otherwise); `allcnnc graph --after fuse` runs it as a check.
//!
//! Forward grouping rules, applied left to right:
//! - `conv` with its bias and activation is one group; the bias add and the
//!   activation are the GEMM's epilogue;
//! - a `dropout` right before a `conv` joins that conv's group: the conv
//!   applies the mask where it reads its input (the mask comes from a
//!   counter-based random stream, so nothing is stored), and the backward
//!   data kernel applies it to the gradient it writes;
//! - `gap` right before `softmax`, the softmax and the cross-entropy loss are
//!   one group (the "head"); in training the head also writes the gradient
//!   at the gap's input, so its forward and backward are one kernel; a
//!   `softmax` after anything else is a head without averaging;
//! - every other layer (pools, a dropout not followed by a conv, a gap not
//!   followed by a softmax) is a group of its own.
//!
//! Backward fusion: the activation's mask (with the ReLU rule of the pass:
//! backprop, deconvnet or guided) is applied once per value, by the conv
//! group above in its backward-data epilogue where the group above is a
//! conv group, otherwise by the gradient kernels of the conv group (backward
//! data and backward weights + bias) where they load the gradient at its
//! output (`conv::ConvLinks`); no extra kernel or buffer either way. Max-pools route the gradient through
//! their switches. The update is one launch over one flat buffer holding
//! every parameter ([`UpdateGroup`]).

use crate::back;
use crate::diagnostic::Diagnostic;
use crate::ir::Graph;
use plan::{Activation, Op, Plan};
use serde::Serialize;

/// What a group computes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupKind {
    /// `[dropout] conv [+ bias] [+ activation]`.
    Conv {
        act: Activation,
        bias: bool,
        /// Drop probability of a dropout applied where the conv reads its input.
        input_dropout: Option<f32>,
    },
    MaxPool,
    AvgPool,
    /// A global average pool that no softmax follows.
    GlobalAvgPool,
    /// A dropout whose consumer cannot apply it (not a conv).
    Dropout {
        p: f32,
    },
    /// `[gap] softmax` + cross-entropy (training) or probabilities (inference).
    Head {
        gap: bool,
    },
}

/// Layers executed together.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FusedGroup {
    /// The name of the group's main layer (`conv4`), or `GAP_SOFTMAX` for a
    /// head with averaging.
    pub name: String,
    pub kind: GroupKind,
    /// Indices of the layers (in chain order, the indices of the lowered plan).
    pub layers: Vec<usize>,
    /// Floating-point operations of one image's forward pass.
    pub flops: u64,
    /// Bytes one image's forward pass reads and writes (activations in and
    /// out, each once); parameters are in `param_bytes`.
    pub bytes: u64,
    pub param_bytes: u64,
}

/// The single SGD launch over all parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UpdateGroup {
    /// Parameter tensors updated by the launch.
    pub tensors: usize,
    pub params: u64,
    /// Values that get weight decay (weights; biases do not).
    pub decayed: u64,
}

/// The groups of a model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fusion {
    pub groups: Vec<FusedGroup>,
    pub update: UpdateGroup,
}

/// Groups the layers of `graph` (lowered to its plan, whose layer indices are
/// the chain's).
pub fn fuse(graph: &Graph) -> Result<Fusion, Vec<Diagnostic>> {
    if let Some(node) = graph
        .nodes()
        .find(|node| node.in_shape.is_none() || node.out_shape.is_none())
    {
        return Err(vec![Diagnostic::error(
            "E0601",
            "`fuse` needs the shapes of every layer",
        )
        .at(node.span.clone(), "this layer has no inferred shape")
        .note("run the `shapes` pass before `fuse`")]);
    }
    Ok(fuse_plan(&back::plan::lower(graph, None)))
}

/// Groups the layers of a lowered plan (the rules of the module doc).
pub fn fuse_plan(plan: &Plan) -> Fusion {
    let layers = &plan.layers;
    let mut groups = Vec::new();
    let mut layer_idx = 0;
    while layer_idx < layers.len() {
        let layer = &layers[layer_idx];
        let next = layers.get(layer_idx + 1);
        let (in_len, out_len) = (layer.in_shape.len() as u64, layer.out_shape.len() as u64);
        let group = match &layer.op {
            Op::Dropout { p } => {
                if let Some(next) = next.filter(|next| matches!(next.op, Op::Conv { .. })) {
                    let mut group = conv_group(plan, layer_idx + 1, Some(*p));
                    group.layers.insert(0, layer_idx);
                    group.name = next.name.clone();
                    layer_idx += 2;
                    groups.push(group);
                    continue;
                }
                FusedGroup {
                    name: layer.name.clone(),
                    kind: GroupKind::Dropout { p: *p },
                    layers: vec![layer_idx],
                    flops: out_len,
                    bytes: 4 * (in_len + out_len),
                    param_bytes: 0,
                }
            }
            Op::Conv { .. } => conv_group(plan, layer_idx, None),
            Op::MaxPool { window } | Op::AvgPool { window } => FusedGroup {
                name: layer.name.clone(),
                kind: if matches!(layer.op, Op::MaxPool { .. }) {
                    GroupKind::MaxPool
                } else {
                    GroupKind::AvgPool
                },
                layers: vec![layer_idx],
                flops: out_len * (window.kh * window.kw) as u64,
                bytes: 4 * (in_len + out_len),
                param_bytes: 0,
            },
            Op::GlobalAvgPool => {
                if let Some(softmax) = next.filter(|next| matches!(next.op, Op::Softmax)) {
                    let classes = softmax.out_shape.len() as u64;
                    groups.push(FusedGroup {
                        name: format!("{}_{}", layer.name, softmax.name),
                        kind: GroupKind::Head { gap: true },
                        layers: vec![layer_idx, layer_idx + 1],
                        flops: in_len + 4 * classes,
                        bytes: 4 * (in_len + 2 * classes),
                        param_bytes: 0,
                    });
                    layer_idx += 2;
                    continue;
                }
                FusedGroup {
                    name: layer.name.clone(),
                    kind: GroupKind::GlobalAvgPool,
                    layers: vec![layer_idx],
                    flops: in_len,
                    bytes: 4 * (in_len + out_len),
                    param_bytes: 0,
                }
            }
            Op::Softmax => FusedGroup {
                name: layer.name.clone(),
                kind: GroupKind::Head { gap: false },
                layers: vec![layer_idx],
                flops: 4 * out_len,
                bytes: 4 * (in_len + out_len),
                param_bytes: 0,
            },
        };
        groups.push(group);
        layer_idx += 1;
    }
    let params = plan.params();
    let update = UpdateGroup {
        tensors: params.len(),
        params: params.iter().map(|p| p.len() as u64).sum(),
        decayed: params
            .iter()
            .filter(|p| p.dims.len() == 4)
            .map(|p| p.len() as u64)
            .sum(),
    };
    Fusion { groups, update }
}

/// The group of the conv at `layer_idx`.
fn conv_group(plan: &Plan, layer_idx: usize, input_dropout: Option<f32>) -> FusedGroup {
    let layer = &plan.layers[layer_idx];
    let Op::Conv {
        out_channels,
        window,
        bias,
        act,
    } = layer.op
    else {
        unreachable!("conv_group of a conv");
    };
    let out_len = layer.out_shape.len() as u64;
    let in_len = layer.in_shape.len() as u64;
    let taps = (window.kh * window.kw * layer.in_shape.c) as u64;
    let epilogue = u64::from(bias) + u64::from(!matches!(act, Activation::None));
    let dropout = if input_dropout.is_some() { in_len } else { 0 };
    let weights = taps * out_channels as u64;
    FusedGroup {
        name: layer.name.clone(),
        kind: GroupKind::Conv {
            act,
            bias,
            input_dropout,
        },
        layers: vec![layer_idx],
        flops: 2 * out_len * taps + epilogue * out_len + dropout,
        bytes: 4 * (in_len + out_len),
        param_bytes: 4 * (weights + if bias { out_channels as u64 } else { 0 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plan::{Layer, Shape, Window};

    fn layer(name: &str, op: Op, in_shape: Shape, out_shape: Shape) -> Layer {
        Layer {
            name: name.into(),
            op,
            in_shape,
            out_shape,
            line: 0,
        }
    }

    #[test]
    fn groups_dropout_conv_and_head() {
        let window = Window {
            kh: 3,
            kw: 3,
            stride_h: 1,
            stride_w: 1,
            pad: Default::default(),
        };
        let (a, b, c) = (
            Shape::new(3, 8, 8),
            Shape::new(4, 6, 6),
            Shape::new(4, 1, 1),
        );
        let plan = Plan {
            name: "t".into(),
            input: a,
            classes: 4,
            model_hash: String::new(),
            layers: vec![
                layer("drop1", Op::Dropout { p: 0.2 }, a, a),
                layer(
                    "conv1",
                    Op::Conv {
                        out_channels: 4,
                        window,
                        bias: true,
                        act: Activation::Relu,
                    },
                    a,
                    b,
                ),
                layer("drop2", Op::Dropout { p: 0.5 }, b, b),
                layer("gap1", Op::GlobalAvgPool, b, c),
                layer("softmax", Op::Softmax, c, c),
            ],
        };
        let fusion = fuse_plan(&plan);
        let names: Vec<_> = fusion.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["conv1", "drop2", "gap1_softmax"]);
        assert_eq!(fusion.groups[0].layers, [0, 1]);
        assert_eq!(fusion.groups[2].kind, GroupKind::Head { gap: true });
        assert_eq!(fusion.update.tensors, 2);
        assert_eq!(fusion.update.decayed, 3 * 3 * 3 * 4);
    }
}
