//! Per-layer figures: parameters, MACs, activation memory, receptive field.
//!
//! Contract: changes no layer, only fills `stats` (needs shapes). Fails when a
//! model is beyond a sane size (see [`MAX_PARAMS`], [`MAX_ACTIVATION_BYTES`]):
//! such a model is reported here, never left to crash with out-of-memory.
//!
//! Receptive field along one axis: `r_out = r_in + (k - 1) * j_in`,
//! `j_out = j_in * stride`, starting from `r = j = 1` at the input; a global
//! average pool sees the whole map.

use super::Pass;
use crate::diagnostic::Diagnostic;
use crate::ir::{Graph, LayerStats, Op};

/// Most parameters a model may have (4 GiB of f32 weights).
pub const MAX_PARAMS: u64 = 1 << 30;
/// Most bytes of activations one image may need across all layers.
pub const MAX_ACTIVATION_BYTES: u64 = 1 << 30;

pub struct Stats;

impl Pass for Stats {
    fn name(&self) -> &'static str {
        "stats"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, Vec<Diagnostic>> {
        let mut receptive_field: u64 = 1;
        let mut jump: u64 = 1;
        let mut total_params: u64 = 0;
        let mut total_bytes: u64 = 0;
        let mut diags = Vec::new();
        for id in graph.layers() {
            let node = graph.node(id);
            let (Some(input), Some(output)) = (node.in_shape, node.out_shape) else {
                continue;
            };
            let out_len = (output.c as u64)
                .saturating_mul(output.h as u64)
                .saturating_mul(output.w as u64);
            let (params, macs) = match &node.op {
                Op::Conv {
                    out_channels,
                    kernel,
                    bias,
                    ..
                } => {
                    let per_output = (kernel.0 as u64)
                        .saturating_mul(kernel.1 as u64)
                        .saturating_mul(input.c as u64);
                    let weights = per_output.saturating_mul(*out_channels as u64);
                    let params =
                        weights.saturating_add(if *bias { *out_channels as u64 } else { 0 });
                    (params, per_output.saturating_mul(out_len))
                }
                _ => (0, 0),
            };
            let (k, stride) = match &node.op {
                Op::Conv { kernel, stride, .. }
                | Op::MaxPool { kernel, stride, .. }
                | Op::AvgPool { kernel, stride, .. } => {
                    (kernel.0.max(kernel.1) as u64, stride.0.max(stride.1) as u64)
                }
                Op::GlobalAvgPool => (input.h.max(input.w) as u64, 1),
                Op::Dropout { .. } | Op::Softmax => (1, 1),
            };
            receptive_field = receptive_field.saturating_add((k - 1).saturating_mul(jump));
            jump = jump.saturating_mul(stride);
            let activation_bytes = out_len.saturating_mul(4);
            total_params = total_params.saturating_add(params);
            total_bytes = total_bytes.saturating_add(activation_bytes);
            let span = node.span.clone();
            let name = node.name.clone();
            graph.node_mut(id).stats = Some(LayerStats {
                params,
                macs,
                activation_bytes,
                receptive_field,
                jump,
            });
            if total_params > MAX_PARAMS && diags.is_empty() {
                diags.push(
                    Diagnostic::error(
                        "E0401",
                        format!("the model has more than {MAX_PARAMS} parameters"),
                    )
                    .at(
                        span.clone(),
                        format!("the limit is passed at layer `{name}` ({params} parameters)"),
                    )
                    .note("its weights alone would need more than 4 GiB")
                    .hint("reduce channels or kernel sizes"),
                );
            }
            if total_bytes > MAX_ACTIVATION_BYTES && !diags.iter().any(|d| d.code == "E0402") {
                diags.push(
                    Diagnostic::error("E0402", "one image's activations need more than 1 GiB")
                        .at(
                            span,
                            format!("the limit is passed at layer `{name}` ({output} per image)"),
                        )
                        .hint("reduce the input size, add stride, or use fewer channels"),
                );
            }
        }
        if diags.is_empty() {
            Ok(false)
        } else {
            Err(diags)
        }
    }
}
