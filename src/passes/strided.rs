//! `strided`: Model X to Strided-CNN-X (Springenberg et al., Table 2).
//!
//! Contract: deletes every max-pool and gives the conv just before it the
//! pool's stride. NOT output-preserving: it derives another model (fewer
//! layers, same parameters). Needs shapes; fails at a max-pool that does not
//! follow a conv. Average pools are left alone.

use super::Pass;
use crate::diagnostic::Diagnostic;
use crate::ir::{Graph, Op};

pub struct Strided;

impl Pass for Strided {
    fn name(&self) -> &'static str {
        "strided"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, Vec<Diagnostic>> {
        let mut changed = false;
        for id in graph.layers() {
            let Op::MaxPool { stride, .. } = graph.node(id).op else {
                continue;
            };
            let prev = graph
                .prev(id)
                .filter(|&prev| matches!(graph.node(prev).op, Op::Conv { .. }));
            let Some(prev) = prev else {
                let node = graph.node(id);
                return Err(vec![Diagnostic::error(
                    "E0501",
                    "`strided` needs a conv right before each max-pool",
                )
                .at(node.span.clone(), "this max-pool does not follow a conv")
                .note(
                    "the Strided-CNN variant moves the pool's stride onto the preceding conv",
                )]);
            };
            if let Op::Conv {
                stride: conv_stride,
                ..
            } = &mut graph.node_mut(prev).op
            {
                *conv_stride = stride;
            }
            graph.remove(id);
            changed = true;
        }
        Ok(changed)
    }
}
