//! Emitters of the one-thread-per-value kernels: standalone global average
//! pools, standalone dropouts and the SGD update.
//!
//! These kernels need no tiling: each thread reads and writes a fixed set
//! of values, so their grids are [`elementwise`] (or, for the update, a
//! fixed number of items).

use super::fuse::FusedGroup;
use super::generator::Gen;
use super::text::c_float;
use super::tiling::{elementwise, BLOCK_THREADS};
use super::{param, Constants, Item, KernelDef};
use plan::device::{Arg, Extent, Grid, KernelRole, KernelSpec, Launch};

impl Gen<'_> {
    /// The constants of a global average over an `h x w x c` map.
    pub fn map_constants(&mut self, id: &str, what: &str, h: usize, w: usize, c: usize) -> String {
        let name = format!("{id}_geometry");
        self.items.push(Item::Constants(Constants {
            name: name.clone(),
            comment: vec![format!("{id}: {what} over {c}x{h}x{w}")],
            fields: vec![
                ("int", "H", h.to_string()),
                ("int", "W", w.to_string()),
                ("int", "C", c.to_string()),
            ],
        }));
        name
    }

    /// The backward kernel of a global average pool (training when
    /// standalone, visualisation always).
    pub fn gap_backward(&mut self, id: &str, layer_idx: usize, geometry: &str) -> usize {
        let layer = &self.plan.layers[layer_idx];
        let i = layer.in_shape;
        let (_, _, refs) = self.layer_refs(&[layer_idx]);
        let params = vec![
            param(
                "const float* __restrict__",
                "dy",
                Arg::buffer(self.layout.grad[layer_idx + 1].clone()),
            ),
            param(
                "float* __restrict__",
                "dx",
                Arg::buffer(self.layout.grad[layer_idx].clone()),
            ),
            param("int", "n", Arg::Batch),
        ];
        let in_len = i.len() as u64;
        self.add_kernel(KernelDef {
            spec: self.spec(
                &format!("{id}_backward"),
                KernelRole::BackwardData,
                id,
                &[layer_idx],
                elementwise(in_len),
                0,
                0,
                Extent::per_image(in_len),
                Extent::per_image(4 * (in_len + i.c as u64)),
            ),
            comment: vec![
                format!("{id}_backward: {refs}"),
                "global average pool backward: each value gets its channel's signal / (H * W)"
                    .into(),
            ],
            body: format!("allcnnc::global_avg_pool_backward<{geometry}>(dy, dx, n);"),
            params,
            min_blocks: 0,
        })
    }

    /// A global average pool no softmax follows; returns its backward launch.
    pub fn gap(&mut self, id: &str, group: &FusedGroup) -> Vec<Launch> {
        let layer_idx = group.layers[0];
        let layer = &self.plan.layers[layer_idx];
        let i = layer.in_shape;
        let geometry = self.map_constants(id, "global average pool", i.h, i.w, i.c);
        let (_, _, refs) = self.layer_refs(&group.layers);
        let params = vec![
            param(
                "const float* __restrict__",
                "x",
                Arg::buffer(self.layout.act[layer_idx].clone()),
            ),
            param(
                "float* __restrict__",
                "y",
                Arg::buffer(self.layout.act[layer_idx + 1].clone()),
            ),
            param("int", "n", Arg::Batch),
        ];
        let in_len = i.len() as u64;
        let forward = self.add_kernel(KernelDef {
            spec: self.spec(
                &format!("{id}_forward"),
                KernelRole::Forward,
                id,
                &group.layers,
                elementwise(i.c as u64),
                0,
                0,
                Extent::per_image(in_len),
                Extent::per_image(4 * (in_len + i.c as u64)),
            ),
            comment: vec![
                format!("{id}_forward: {refs}"),
                "global average pool, one thread per (image, channel)".into(),
            ],
            body: format!("allcnnc::global_avg_pool_forward<{geometry}>(x, y, n);"),
            params,
            min_blocks: 0,
        });
        self.schedule
            .forward_and_infer(layer_idx, self.launch(forward));
        let backward = self.gap_backward(id, layer_idx, &geometry);
        self.add_visual(layer_idx, backward);
        vec![self.launch(backward)]
    }

    /// A dropout no conv absorbed; returns its backward launch.
    pub fn dropout(&mut self, id: &str, group: &FusedGroup, p: f32) -> Vec<Launch> {
        let layer_idx = group.layers[0];
        let len = self.plan.layers[layer_idx].in_shape.len();
        let geometry = format!("{id}_geometry");
        self.items.push(Item::Constants(Constants {
            name: geometry.clone(),
            comment: vec![format!("{id}: dropout p={p:?} over {len} values per image")],
            fields: vec![
                ("int", "LEN", len.to_string()),
                ("float", "DROP_P", c_float(p)),
            ],
        }));
        let (_, _, refs) = self.layer_refs(&group.layers);
        let len = len as u64;
        let mut kernels = Vec::new();
        for (suffix, role, from, to, what) in [
            (
                "forward",
                KernelRole::Forward,
                self.layout.act[layer_idx].clone(),
                self.layout.act[layer_idx + 1].clone(),
                "inverted dropout (mask from the counter-based stream, not stored); a copy at inference",
            ),
            (
                "backward",
                KernelRole::BackwardData,
                self.layout.grad[layer_idx + 1].clone(),
                self.layout.grad[layer_idx].clone(),
                "dropout backward: the forward's mask, recomputed; a copy at inference",
            ),
        ] {
            let (a, b) = if suffix == "forward" {
                ("x", "y")
            } else {
                ("dy", "dx")
            };
            let params = vec![
                param("const float* __restrict__", a, Arg::buffer(from)),
                param("float* __restrict__", b, Arg::buffer(to)),
                param("int", "n", Arg::Batch),
                param("u64", "drop_key", Arg::DropoutKey { layer: layer_idx }),
                param("int", "training", Arg::Training),
            ];
            let kernel = self.add_kernel(KernelDef {
                spec: self.spec(
                    &format!("{id}_{suffix}"),
                    role,
                    id,
                    &group.layers,
                    elementwise(len),
                    0,
                    0,
                    Extent::per_image(len),
                    Extent::per_image(8 * len),
                ),
                comment: vec![format!("{id}_{suffix}: {refs}"), what.into()],
                body: format!(
                    "allcnnc::dropout_{suffix}<{geometry}>({a}, {b}, n, drop_key, training);"
                ),
                params,
                min_blocks: 0,
            });
            kernels.push(kernel);
        }
        self.schedule
            .forward_and_infer(layer_idx, self.launch(kernels[0]));
        self.add_visual(layer_idx, kernels[1]);
        vec![self.launch(kernels[1])]
    }

    /// `sgd_update`: every parameter in one launch (none without parameters).
    pub fn update(&mut self) {
        self.items.push(Item::Section(vec![
            "sgd_update: every parameter in one launch".into(),
        ]));
        let (n_params, n_weights) = (self.layout.n_params, self.layout.n_weights);
        let n = n_params as u64;
        let params = vec![
            param("float* __restrict__", "w", Arg::buffer("params")),
            param("const float* __restrict__", "g", Arg::buffer("grads")),
            param("float* __restrict__", "v", Arg::buffer("momentum")),
            param("float", "lr", Arg::LearningRate),
            param("float", "momentum", Arg::Momentum),
            param("int", "nesterov", Arg::Nesterov),
            param("float", "weight_decay", Arg::WeightDecay),
        ];
        let kernel = self.add_kernel(KernelDef {
            spec: KernelSpec {
                name: "sgd_update".into(),
                role: KernelRole::Update,
                group: "update".into(),
                layers: Vec::new(),
                lines: Vec::new(),
                grid: Grid {
                    x_items: Extent::fixed(n),
                    x_items_per_block: BLOCK_THREADS as u64,
                    y: 1,
                    z: 1,
                    split_k: None,
                },
                block: [BLOCK_THREADS, 1, 1],
                dynamic_shared_bytes: 0,
                static_shared_bytes: 0,
                flops: Extent::fixed(6 * n),
                bytes: Extent::fixed(4 * 5 * n),
                gemm: None,
            },
            comment: vec![
                format!(
                    "sgd_update: all {} parameters ({} tensors) in one launch",
                    n_params,
                    self.layout.slots.len()
                ),
                format!(
                    "SGD with momentum (optionally Nesterov); weight decay on the first {} values (the weights), not on the biases",
                    n_weights
                ),
            ],
            body: format!(
                "allcnnc::sgd_update<{}, {}>(w, g, v, lr, momentum, nesterov, weight_decay);",
                n_params, n_weights
            ),
            params,
            min_blocks: 0,
        });
        // A plan without parameters has nothing to update.
        if n_params > 0 {
            self.schedule.update = vec![self.launch(kernel)];
        }
    }
}
