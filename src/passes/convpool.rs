//! `convpool`: Model X to ConvPool-CNN-X (Springenberg et al., Table 2).
//!
//! Contract: inserts one dense 3x3 conv, stride 1, `same` padding, as wide as
//! its input, before every max-pool (the paper's control model: All-CNN-X's
//! parameter count with pooling kept). NOT output-preserving: it derives
//! another model; every shape after the new conv is unchanged.

use super::allconv::preceding_activation;
use super::Pass;
use crate::diagnostic::Diagnostic;
use crate::ir::{Graph, Node, Op, Pad};

pub struct ConvPool;

impl Pass for ConvPool {
    fn name(&self) -> &'static str {
        "convpool"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, Vec<Diagnostic>> {
        let mut changed = false;
        for id in graph.layers() {
            let node = graph.node(id);
            if !matches!(node.op, Op::MaxPool { .. }) {
                continue;
            }
            let Some(input) = node.in_shape else {
                continue;
            };
            let conv = Op::Conv {
                out_channels: input.c,
                kernel: (3, 3),
                stride: (1, 1),
                pad: Pad::Same,
                act: preceding_activation(graph, id),
                bias: true,
            };
            // Its name where a default one would clash (Graph::label_clashes).
            let name = format!("{}_conv", node.name);
            let mut inserted = Node::new(name, conv, node.span.clone());
            inserted.in_shape = Some(input);
            inserted.out_shape = Some(input);
            graph.insert_before(id, inserted);
            changed = true;
        }
        Ok(changed)
    }
}
