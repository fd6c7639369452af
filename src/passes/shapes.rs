//! Shape inference: gives every layer its input and output shape `C x H x W`.
//!
//! Contract: changes no layer, only fills `in_shape`/`out_shape`. Fails with a
//! diagnostic at the layer when a kernel is larger than its padded input, a
//! size reaches zero, a `softmax` is not last or does not see exactly
//! `classes x 1 x 1`, or the network does not end in `softmax`.

use super::Pass;
use crate::diagnostic::Diagnostic;
use crate::ir::{Graph, Op, Pad, Rounding, Shape};

pub struct InferShapes;

impl Pass for InferShapes {
    fn name(&self) -> &'static str {
        "shapes"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, Vec<Diagnostic>> {
        let mut diags = Vec::new();
        let mut shape = graph.input;
        let layers = graph.layers();
        let last_conv = layers
            .iter()
            .rev()
            .find(|&&id| matches!(graph.node(id).op, Op::Conv { .. }))
            .copied();
        for (layer_idx, &id) in layers.iter().enumerate() {
            let node = graph.node(id);
            let out = match out_shape(&node.op, shape) {
                Ok(out) => out,
                Err(message) => {
                    diags.push(
                        Diagnostic::error("E0310", format!("layer `{}`: {message}", node.name))
                            .at(node.span.clone(), format!("input here is {shape}"))
                            .hint(
                                "use a smaller kernel or stride, more padding, or a larger input",
                            ),
                    );
                    // The rest of the chain has no meaningful shape.
                    break;
                }
            };
            if matches!(node.op, Op::Softmax) {
                if layer_idx + 1 != layers.len() {
                    diags.push(
                        Diagnostic::error("E0312", "`softmax` must be the last layer")
                            .at(node.span.clone(), "layers follow this softmax"),
                    );
                }
                if shape.h != 1 || shape.w != 1 {
                    diags.push(
                        Diagnostic::error(
                            "E0311",
                            format!("softmax sees {shape}, expected {}x1x1", graph.classes),
                        )
                        .at(node.span.clone(), format!("input here is {shape}"))
                        .hint("average the map first: add `gap` before `softmax`"),
                    );
                } else if shape.c != graph.classes {
                    let mut diag = Diagnostic::error(
                        "E0311",
                        format!(
                            "softmax over {} channels, but the network has {} classes",
                            shape.c, graph.classes
                        ),
                    )
                    .at(
                        node.span.clone(),
                        format!("{} channels arrive here", shape.c),
                    )
                    .also(graph.classes_span.clone(), "classes declared here");
                    if let Some(conv) = last_conv {
                        diag = diag
                            .also(
                                graph.node(conv).span.clone(),
                                format!("last conv has {} channels", shape.c),
                            )
                            .hint(format!("make the last conv `conv {} 1x1`", graph.classes));
                    }
                    diags.push(diag);
                }
            }
            let node = graph.node_mut(id);
            node.in_shape = Some(shape);
            node.out_shape = Some(out);
            shape = out;
        }
        if diags.is_empty() {
            if let Some(&last) = layers.last() {
                let node = graph.node(last);
                if !matches!(node.op, Op::Softmax) {
                    diags.push(
                        Diagnostic::error("E0312", "the network does not end with `softmax`")
                            .at(node.span.clone(), "last layer")
                            .hint("end the network with `gap` and `softmax`"),
                    );
                }
            }
        }
        if diags.is_empty() {
            Ok(false)
        } else {
            Err(diags)
        }
    }
}

/// The output shape of `op` for input `input`, or why there is none.
pub fn out_shape(op: &Op, input: Shape) -> Result<Shape, String> {
    match op {
        Op::Conv {
            out_channels,
            kernel,
            stride,
            pad,
            ..
        } => {
            let (h, w) = window_out(input, *kernel, *stride, pad, Rounding::Down)?;
            Ok(Shape::new(*out_channels, h, w))
        }
        Op::MaxPool { .. } | Op::AvgPool { .. } => {
            let pool = op.pool_window().expect("a pooling op has a window");
            let (h, w) = window_out(input, pool.kernel, pool.stride, &pool.pad, pool.round)?;
            Ok(Shape::new(input.c, h, w))
        }
        Op::GlobalAvgPool => Ok(Shape::new(input.c, 1, 1)),
        Op::Dropout { .. } | Op::Softmax => Ok(input),
    }
}

fn window_out(
    input: Shape,
    kernel: (usize, usize),
    stride: (usize, usize),
    pad: &Pad,
    round: Rounding,
) -> Result<(usize, usize), String> {
    let padding = pad.resolve(kernel.0, kernel.1);
    let h = axis_out(
        input.h,
        kernel.0,
        stride.0,
        padding.top,
        padding.bottom,
        round,
    );
    let w = axis_out(
        input.w,
        kernel.1,
        stride.1,
        padding.left,
        padding.right,
        round,
    );
    match (h, w) {
        (Some(h), Some(w)) if h > 0 && w > 0 => Ok((h, w)),
        (Some(_), Some(_)) => Err("the output size reaches zero".to_string()),
        _ => Err(format!(
            "kernel {}x{} is larger than its padded input {}x{}",
            kernel.0,
            kernel.1,
            input.h + padding.top + padding.bottom,
            input.w + padding.left + padding.right
        )),
    }
}

/// Output size along one axis; `None` when the kernel does not fit.
pub fn axis_out(
    size: usize,
    kernel: usize,
    stride: usize,
    before: usize,
    after: usize,
    round: Rounding,
) -> Option<usize> {
    let padded = size.checked_add(before)?.checked_add(after)?;
    if kernel > padded || stride == 0 {
        return None;
    }
    let span = padded - kernel;
    Some(match round {
        Rounding::Down => span / stride + 1,
        Rounding::Up => {
            let mut out = span.div_ceil(stride) + 1;
            // Caffe: the last window must start inside the input or its
            // leading padding, never in the trailing padding alone. (Caffe
            // checks this only with padding; a stride larger than the kernel
            // needs it too.)
            if (out - 1) * stride >= size + before {
                out -= 1;
            }
            out
        }
    })
}
