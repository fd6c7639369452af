//! Buffer planning: the device buffers of a program, which buffer holds
//! each activation and each gradient, and where each parameter lives in the
//! flat parameter buffer.
//!
//! Invariants: buffers are listed in the order they are planned (the fixed
//! ones, then one output per layer a group does not absorb, then what the
//! emitters add), so the plan is deterministic; parameters are laid out
//! weights first, then biases, so weight decay covers one prefix.

use super::fuse::{Fusion, GroupKind};
use plan::device::{BufferSpec, DType, Extent, ParamSlot};
use plan::{Op, Plan};
use std::collections::HashSet;

/// The buffers of a program and the buffer of every activation and gradient.
pub struct Layout {
    pub buffers: Vec<BufferSpec>,
    /// `act[b]`: the buffer holding the activation at boundary `b` (the
    /// input of layer `b`; `act[layers]` the probabilities).
    pub act: Vec<String>,
    /// `grad[b]`: the gradient buffer of boundary `b`.
    pub grad: Vec<String>,
    /// Per parameter spec: its offset in the flat buffers.
    pub slots: Vec<ParamSlot>,
    pub n_params: usize,
    pub n_weights: usize,
}

impl Layout {
    /// The parameter slots, the fixed buffers and the activation and
    /// gradient buffers of every boundary of `plan` grouped as `fusion`.
    pub fn new(plan: &Plan, fusion: &Fusion) -> Self {
        let (slots, n_params, n_weights) = param_slots(plan);
        let layers = plan.layers.len();
        let mut layout = Self {
            buffers: Vec::new(),
            act: vec![String::new(); layers + 1],
            grad: vec![String::new(); layers + 1],
            slots,
            n_params,
            n_weights,
        };
        for (name, dtype, len, doc) in fixed_buffers(plan, n_params as u64) {
            layout.add(name, dtype, len, doc);
        }
        layout.plan_activations(plan, fusion);
        layout.plan_gradients(fusion);
        layout
    }

    /// Adds a buffer.
    pub fn add(&mut self, name: &str, dtype: DType, len: Extent, doc: impl Into<String>) {
        self.buffers.push(BufferSpec {
            name: name.to_string(),
            dtype,
            len,
            doc: doc.into(),
        });
    }

    /// The offset of parameter `name` in the flat buffers.
    pub fn param_offset(&self, name: &str) -> usize {
        self.slots
            .iter()
            .find(|slot| slot.name == name)
            .map_or(0, |slot| slot.offset)
    }

    /// Activation buffers of each boundary: a dropout a conv absorbed passes
    /// its input on, the head writes `logits` and `probs`, every other layer
    /// gets an output buffer of its own.
    fn plan_activations(&mut self, plan: &Plan, fusion: &Fusion) {
        self.act[0] = "input".into();
        for group in &fusion.groups {
            for &l in &group.layers {
                let layer = &plan.layers[l];
                let fused_dropout = matches!(group.kind, GroupKind::Conv { .. })
                    && matches!(layer.op, Op::Dropout { .. });
                self.act[l + 1] = if fused_dropout {
                    self.act[l].clone()
                } else {
                    match (&group.kind, &layer.op) {
                        (GroupKind::Head { .. }, Op::GlobalAvgPool) => "logits".into(),
                        (GroupKind::Head { .. }, _) => "probs".into(),
                        _ => {
                            let name = format!("{}.out", layer.name);
                            self.add(
                                &name,
                                DType::F32,
                                Extent::per_image(layer.out_shape.len() as u64),
                                format!("output of {}", layer.name),
                            );
                            name
                        }
                    }
                };
            }
        }
    }

    /// Gradient buffers: alternate, except across a dropout a conv absorbed
    /// (the identity at inference, and folded into the conv in training).
    fn plan_gradients(&mut self, fusion: &Fusion) {
        let layers = self.grad.len() - 1;
        let absorbed: HashSet<usize> = fusion
            .groups
            .iter()
            .filter(|g| matches!(g.kind, GroupKind::Conv { .. }))
            .flat_map(|g| g.layers[..g.layers.len() - 1].to_vec())
            .collect();
        self.grad[layers] = "grad.a".into();
        for l in (0..layers).rev() {
            self.grad[l] = if absorbed.contains(&l) {
                self.grad[l + 1].clone()
            } else if self.grad[l + 1] == "grad.a" {
                "grad.b".into()
            } else {
                "grad.a".into()
            };
        }
    }
}

/// Every parameter's slot, weights first (they get weight decay), then
/// biases; with the number of parameters and of weights.
fn param_slots(plan: &Plan) -> (Vec<ParamSlot>, usize, usize) {
    let specs = plan.params();
    let mut slots: Vec<ParamSlot> = specs
        .iter()
        .map(|spec| ParamSlot {
            name: spec.name.clone(),
            offset: 0,
            len: spec.len(),
        })
        .collect();
    let mut offset = 0;
    for weights_pass in [true, false] {
        for (slot, spec) in slots.iter_mut().zip(&specs) {
            if (spec.dims.len() == 4) == weights_pass {
                slot.offset = offset;
                offset += slot.len;
            }
        }
    }
    let n_weights = specs
        .iter()
        .filter(|s| s.dims.len() == 4)
        .map(|s| s.len())
        .sum();
    (slots, offset, n_weights)
}

/// The buffers every program has: the batch and its labels, the head's
/// outputs and running sums, the gradient ping-pong pair (each as large as
/// the largest activation) and the flat parameter buffers.
fn fixed_buffers(plan: &Plan, n_params: u64) -> [(&'static str, DType, Extent, &'static str); 11] {
    let input_len = plan.input.len() as u64;
    let max_len = std::iter::once(plan.input.len())
        .chain(plan.layers.iter().map(|l| l.out_shape.len()))
        .max()
        .unwrap_or(0) as u64;
    let classes = plan.classes as u64;
    [
        (
            "input",
            DType::F32,
            Extent::per_image(input_len),
            "the batch, N x H x W x C",
        ),
        (
            "labels",
            DType::I32,
            Extent::per_image(1),
            "class of each image",
        ),
        (
            "loss",
            DType::F64,
            Extent::per_image(1),
            "cross-entropy summed per batch slot since the host last read it",
        ),
        (
            "correct",
            DType::I32,
            Extent::per_image(1),
            "top-1 hits summed per batch slot since the host last read it",
        ),
        (
            "logits",
            DType::F32,
            Extent::per_image(classes),
            "the softmax's input",
        ),
        (
            "probs",
            DType::F32,
            Extent::per_image(classes),
            "class probabilities",
        ),
        (
            "grad.a",
            DType::F32,
            Extent::per_image(max_len),
            "gradient ping-pong buffer",
        ),
        (
            "grad.b",
            DType::F32,
            Extent::per_image(max_len),
            "gradient ping-pong buffer",
        ),
        (
            "params",
            DType::F32,
            Extent::fixed(n_params),
            "every parameter: all weights (HWIO), then all biases",
        ),
        (
            "grads",
            DType::F32,
            Extent::fixed(n_params),
            "gradients, laid out as params",
        ),
        (
            "momentum",
            DType::F32,
            Extent::fixed(n_params),
            "momentum, laid out as params",
        ),
    ]
}
