//! Lowering to the runtime's executable plan (the compiler/runtime contract).
//!
//! Needs shapes. Padding is resolved to explicit amounts here, so the runtime
//! never needs to know the language's `same`/`valid` rules.

use crate::diagnostic::Source;
use crate::ir::{Graph, Op};
use plan::{self, Layer, Plan, Window};

pub fn lower(graph: &Graph, source: Option<&Source>) -> Plan {
    let layers = graph
        .nodes()
        .map(|node| {
            let window =
                |kernel: (usize, usize), stride: (usize, usize), pad: &crate::ir::Pad| Window {
                    kh: kernel.0,
                    kw: kernel.1,
                    stride_h: stride.0,
                    stride_w: stride.1,
                    pad: pad.resolve(kernel.0, kernel.1),
                };
            let op = match &node.op {
                Op::Conv {
                    out_channels,
                    kernel,
                    stride,
                    pad,
                    act,
                    bias,
                } => plan::Op::Conv {
                    out_channels: *out_channels,
                    window: window(*kernel, *stride, pad),
                    bias: *bias,
                    act: *act,
                },
                Op::MaxPool {
                    kernel,
                    stride,
                    pad,
                    ..
                } => plan::Op::MaxPool {
                    window: window(*kernel, *stride, pad),
                },
                Op::AvgPool {
                    kernel,
                    stride,
                    pad,
                    ..
                } => plan::Op::AvgPool {
                    window: window(*kernel, *stride, pad),
                },
                Op::GlobalAvgPool => plan::Op::GlobalAvgPool,
                Op::Dropout { p } => plan::Op::Dropout { p: *p as f32 },
                Op::Softmax => plan::Op::Softmax,
            };
            Layer {
                name: node.name.clone(),
                op,
                in_shape: node.in_shape.expect("lowering needs shapes"),
                out_shape: node.out_shape.expect("lowering needs shapes"),
                line: source.map_or(0, |s| s.line_of(node.span.start)),
            }
        })
        .collect();
    Plan {
        name: graph.name.clone(),
        input: graph.input,
        classes: graph.classes,
        layers,
        model_hash: graph.model_hash(),
    }
}
