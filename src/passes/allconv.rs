//! `allconv`: Model X to All-CNN-X (Springenberg et al., Table 2).
//!
//! Contract: replaces every max-pool by a conv with the pool's kernel and
//! stride, as many channels as it receives, `same` padding and the
//! activation of the conv before it (ReLU in the paper's models). NOT
//! output-preserving: it derives another model with more parameters. The new
//! conv keeps the pool's span and its output size equals the pool's (checked).

use super::shapes::out_shape;
use super::Pass;
use crate::diagnostic::Diagnostic;
use crate::ir::{Activation, Graph, Node, Op, Pad};

pub struct AllConv;

impl Pass for AllConv {
    fn name(&self) -> &'static str {
        "allconv"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, Vec<Diagnostic>> {
        let mut changed = false;
        for id in graph.layers() {
            let node = graph.node(id);
            let Op::MaxPool { kernel, stride, .. } = node.op else {
                continue;
            };
            let (Some(input), Some(pooled)) = (node.in_shape, node.out_shape) else {
                continue;
            };
            let act = preceding_activation(graph, id);
            let conv = Op::Conv {
                out_channels: input.c,
                kernel,
                stride,
                pad: Pad::Same,
                act,
                bias: true,
            };
            if out_shape(&conv, input).ok() != Some(pooled) {
                return Err(vec![Diagnostic::error(
                    "E0502",
                    format!("a strided conv cannot reproduce this pool's output size {pooled}"),
                )
                .at(node.span.clone(), "this max-pool")
                .note(
                    "`allconv` keeps every shape of the model; write the replacement by hand",
                )]);
            }
            // Its name where a default one would clash (Graph::label_clashes).
            let name = format!("{}_conv", node.name);
            let mut replacement = Node::new(name, conv, node.span.clone());
            replacement.in_shape = Some(input);
            replacement.out_shape = Some(pooled);
            graph.insert_before(id, replacement);
            graph.remove(id);
            changed = true;
        }
        Ok(changed)
    }
}

/// The activation of the nearest conv before `id`, ReLU if there is none.
pub(crate) fn preceding_activation(graph: &Graph, id: crate::ir::NodeId) -> Activation {
    let mut current = graph.prev(id);
    while let Some(prev) = current {
        if let Op::Conv { act, .. } = graph.node(prev).op {
            return act;
        }
        current = graph.prev(prev);
    }
    Activation::Relu
}
