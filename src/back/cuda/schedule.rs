//! The launch lists of a program: forward, backward and update of a
//! training step, inference, and each layer's visualisation backward.
//!
//! Invariants: the forward and inference lists follow the groups in layer
//! order; the backward list holds the groups' backward launches in reverse
//! group order, and stops at the first layer with parameters (nothing
//! before it needs a gradient); `infer_launches[l]` is how many inference
//! launches produce layer `l`'s output.

use super::buffers::Layout;
use plan::device::{Launch, LayerIo};
use plan::Plan;

/// What the executor launches, list by list.
pub struct Schedule {
    pub forward: Vec<Launch>,
    pub backward: Vec<Launch>,
    pub infer: Vec<Launch>,
    pub update: Vec<Launch>,
    /// Per layer: infer launches producing its output.
    pub infer_launches: Vec<usize>,
    /// Per layer: the launches taking a signal from its output to its input.
    pub visual: Vec<Vec<Launch>>,
    /// Per layer: the launches a signal placed at its output needs first.
    pub signal_masks: Vec<Vec<Launch>>,
}

impl Schedule {
    /// Empty lists for a plan of `layers` layers.
    pub fn new(layers: usize) -> Self {
        Self {
            forward: Vec::new(),
            backward: Vec::new(),
            infer: Vec::new(),
            update: Vec::new(),
            infer_launches: vec![0; layers],
            visual: vec![Vec::new(); layers],
            signal_masks: vec![Vec::new(); layers],
        }
    }

    /// A layer's forward launch, which both training and inference run;
    /// inference has produced `layer_idx`'s output once it ran.
    pub fn forward_and_infer(&mut self, layer_idx: usize, launch: Launch) {
        self.forward.push(launch.clone());
        self.infer.push(launch);
        self.infer_launches[layer_idx] = self.infer.len();
    }

    /// Every layer's buffers and launches, for the device plan.
    pub fn layer_ios(&self, plan: &Plan, layout: &Layout) -> Vec<LayerIo> {
        plan.layers
            .iter()
            .enumerate()
            .map(|(l, layer)| LayerIo {
                name: layer.name.clone(),
                output: layout.act[l + 1].clone(),
                infer_launches: self.infer_launches[l],
                grad_output: layout.grad[l + 1].clone(),
                grad_input: layout.grad[l].clone(),
                visual_backward: self.visual[l].clone(),
                signal_mask: self.signal_masks[l].clone(),
            })
            .collect()
    }
}
