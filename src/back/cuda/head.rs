//! Emitter of the head: `[gap] softmax` with the cross-entropy loss.
//!
//! Training runs one kernel per batch (`NAME_train`: average, softmax,
//! loss, top-1 and the gradient at the head's input, one block per image),
//! so the head has no backward launches of its own; inference runs
//! `NAME_infer`. Visualisation may start a signal at the gap's or the
//! softmax's output, so the head also gets a gap backward (with averaging)
//! and a softmax backward kernel that no training step launches.

use super::fuse::FusedGroup;
use super::generator::Gen;
use super::tiling::elementwise;
use super::{param, KernelDef};
use plan::device::{Arg, Extent, Grid, KernelRole};

/// What the head's train and infer kernels share.
struct HeadGroup<'a> {
    id: &'a str,
    layers: &'a [usize],
    geometry: String,
    refs: String,
    /// `"global average pool, "` with averaging, else empty.
    average: &'static str,
    input: Arg,
    in_len: u64,
    classes_len: u64,
    /// Dynamic shared memory: two floats per input channel.
    shared: u32,
}

/// One block per image.
const HEAD_GRID: Grid = Grid {
    x_items: Extent::per_image(1),
    x_items_per_block: 1,
    y: 1,
    z: 1,
    split_k: None,
};

impl Gen<'_> {
    /// The head's kernels; training's backward is inside `NAME_train`.
    pub fn head(&mut self, id: &str, group: &FusedGroup, gap: bool) {
        let first = group.layers[0];
        let i = self.plan.layers[first].in_shape;
        let geometry = self.map_constants(
            id,
            if gap {
                "global average pool + softmax"
            } else {
                "softmax"
            },
            i.h,
            i.w,
            i.c,
        );
        let (_, _, refs) = self.layer_refs(&group.layers);
        let head = HeadGroup {
            id,
            layers: &group.layers,
            geometry,
            refs,
            average: if gap { "global average pool, " } else { "" },
            input: Arg::buffer(self.layout.act[first].clone()),
            in_len: i.len() as u64,
            classes_len: self.plan.classes as u64,
            shared: (8 * i.c) as u32,
        };
        self.head_train(&head, first);
        self.head_infer(&head);
        self.head_visual(id, group, gap);
    }

    fn head_train(&mut self, head: &HeadGroup, first: usize) {
        let HeadGroup {
            id,
            ref geometry,
            ref refs,
            average,
            in_len,
            classes_len,
            ..
        } = *head;
        let train_params = vec![
            param("const float* __restrict__", "x", head.input.clone()),
            param("const int* __restrict__", "labels", Arg::buffer("labels")),
            param("float* __restrict__", "logits", Arg::buffer("logits")),
            param("float* __restrict__", "probs", Arg::buffer("probs")),
            param("double* __restrict__", "loss", Arg::buffer("loss")),
            param("int* __restrict__", "correct", Arg::buffer("correct")),
            param(
                "float* __restrict__",
                "dx",
                Arg::buffer(self.layout.grad[first].clone()),
            ),
            param("int", "n", Arg::Batch),
        ];
        let train = self.add_kernel(KernelDef {
            spec: self.spec(
                &format!("{id}_train"),
                KernelRole::Head,
                id,
                head.layers,
                HEAD_GRID,
                0,
                head.shared,
                Extent::per_image(2 * in_len + 6 * classes_len),
                Extent::per_image(4 * (2 * in_len + 2 * classes_len) + 16),
            ),
            comment: vec![
                format!("{id}_train: {refs}"),
                format!(
                    "{average}softmax, cross-entropy (per-image loss and top-1 hit, added to the batch slot's running sums) and the gradient at the head's input, one block per image"
                ),
            ],
            body: format!(
                "allcnnc::head<{geometry}, true>(x, labels, logits, probs, loss, correct, dx, n);"
            ),
            params: train_params,
            min_blocks: 0,
        });
        self.schedule.forward.push(self.launch(train));
    }

    fn head_infer(&mut self, head: &HeadGroup) {
        let HeadGroup {
            id,
            ref geometry,
            ref refs,
            average,
            in_len,
            classes_len,
            ..
        } = *head;
        let infer_params = vec![
            param("const float* __restrict__", "x", head.input.clone()),
            param("float* __restrict__", "logits", Arg::buffer("logits")),
            param("float* __restrict__", "probs", Arg::buffer("probs")),
            param("int", "n", Arg::Batch),
        ];
        let infer = self.add_kernel(KernelDef {
            spec: self.spec(
                &format!("{id}_infer"),
                KernelRole::Head,
                id,
                head.layers,
                HEAD_GRID,
                0,
                head.shared,
                Extent::per_image(in_len + 4 * classes_len),
                Extent::per_image(4 * (in_len + 2 * classes_len)),
            ),
            comment: vec![
                format!("{id}_infer: {refs}"),
                format!("{average}softmax: logits and probabilities, one block per image"),
            ],
            body: format!(
                "allcnnc::head<{geometry}, false>(x, nullptr, logits, probs, nullptr, nullptr, nullptr, n);"
            ),
            params: infer_params,
            min_blocks: 0,
        });
        let launch = self.launch(infer);
        self.schedule.infer.push(launch);
        for &l in head.layers {
            self.schedule.infer_launches[l] = self.schedule.infer.len();
        }
    }

    /// Visualisation: a signal may start at the gap's or the softmax's output.
    fn head_visual(&mut self, id: &str, group: &FusedGroup, gap: bool) {
        let plan = self.plan;
        let first = group.layers[0];
        let softmax_idx = *group.layers.last().expect("a head ends with its softmax");
        let i = plan.layers[first].in_shape;
        let classes = plan.classes;
        if gap {
            let gap_id = self.namer.name(&plan.layers[first].name);
            let gap_geometry = self.map_constants(
                &gap_id,
                "global average pool (visualisation)",
                i.h,
                i.w,
                i.c,
            );
            let backward = self.gap_backward(&gap_id, first, &gap_geometry);
            self.add_visual(first, backward);
        }
        let softmax_id = self.namer.name(&plan.layers[softmax_idx].name);
        let softmax_geometry = self.map_constants(
            &softmax_id,
            "softmax backward (visualisation)",
            1,
            1,
            classes,
        );
        let (_, _, refs) = self.layer_refs(&[softmax_idx]);
        let params = vec![
            param("const float* __restrict__", "probs", Arg::buffer("probs")),
            param(
                "const float* __restrict__",
                "dy",
                Arg::buffer(self.layout.grad[softmax_idx + 1].clone()),
            ),
            param(
                "float* __restrict__",
                "dx",
                Arg::buffer(self.layout.grad[softmax_idx].clone()),
            ),
            param("int", "n", Arg::Batch),
        ];
        let classes_len = classes as u64;
        let backward = self.add_kernel(KernelDef {
            spec: self.spec(
                &format!("{softmax_id}_backward"),
                KernelRole::BackwardData,
                id,
                &[softmax_idx],
                elementwise(1),
                0,
                0,
                Extent::per_image(4 * classes_len),
                Extent::per_image(12 * classes_len),
            ),
            comment: vec![
                format!("{softmax_id}_backward: {refs}"),
                "softmax backward for any signal (visualisation): dx = p * (dy - <dy, p>)".into(),
            ],
            body: format!("allcnnc::softmax_backward<{softmax_geometry}>(probs, dy, dx, n);"),
            params,
            min_blocks: 0,
        });
        self.add_visual(softmax_idx, backward);
    }
}
