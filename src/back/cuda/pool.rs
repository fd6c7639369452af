//! Emitter of max and average pools: a forward kernel (one thread per
//! output value; a max-pool records its argmax switches) and a backward
//! kernel written as a gather (one thread per input value), so no two
//! threads ever add into the same value.

use super::fuse::FusedGroup;
use super::generator::Gen;
use super::text::window_text;
use super::tiling::elementwise;
use super::{param, Constants, Item, KernelDef};
use plan::device::{Arg, DType, Extent, KernelRole, Launch};
use plan::{Op, Window};

/// What a pool's two kernels share.
struct PoolGroup<'a> {
    id: &'a str,
    layers: &'a [usize],
    layer_idx: usize,
    window: Window,
    is_max: bool,
    geometry: String,
    /// The switches buffer (max-pools only).
    switches: String,
    refs: String,
    in_len: u64,
    out_len: u64,
}

impl Gen<'_> {
    /// A pool group; returns its backward launch.
    pub fn pool(&mut self, id: &str, group: &FusedGroup) -> Vec<Launch> {
        let layer_idx = group.layers[0];
        let layer = &self.plan.layers[layer_idx];
        let (Op::MaxPool { window } | Op::AvgPool { window }) = layer.op else {
            unreachable!("a pool group holds a pool");
        };
        let is_max = matches!(layer.op, Op::MaxPool { .. });
        let (i, o) = (layer.in_shape, layer.out_shape);
        let geometry = format!("{id}_geometry");
        let int = |v: usize| v.to_string();
        self.items.push(Item::Constants(Constants {
            name: geometry.clone(),
            comment: vec![format!(
                "{id}: {} pool {} -> {}, {}",
                if is_max { "max" } else { "average" },
                i,
                o,
                window_text(&window)
            )],
            fields: vec![
                ("int", "IH", int(i.h)),
                ("int", "IW", int(i.w)),
                ("int", "C", int(i.c)),
                ("int", "OH", int(o.h)),
                ("int", "OW", int(o.w)),
                ("int", "KH", int(window.kh)),
                ("int", "KW", int(window.kw)),
                ("int", "SH", int(window.stride_h)),
                ("int", "SW", int(window.stride_w)),
                ("int", "PT", int(window.pad.top)),
                ("int", "PL", int(window.pad.left)),
                ("int", "PB", int(window.pad.bottom)),
                ("int", "PR", int(window.pad.right)),
            ],
        }));
        let (in_len, out_len) = (i.len() as u64, o.len() as u64);
        let switches = format!("{}.switches", layer.name);
        if is_max {
            self.layout.add(
                &switches,
                DType::I32,
                Extent::per_image(out_len),
                format!("argmax switches of {}", layer.name),
            );
        }
        let (_, _, refs) = self.layer_refs(&group.layers);
        let pool = PoolGroup {
            id,
            layers: &group.layers,
            layer_idx,
            window,
            is_max,
            geometry,
            switches,
            refs,
            in_len,
            out_len,
        };
        self.pool_forward(&pool);
        let backward = self.pool_backward(&pool);
        self.add_visual(layer_idx, backward);
        vec![self.launch(backward)]
    }

    fn pool_forward(&mut self, pool: &PoolGroup) {
        let PoolGroup {
            id,
            is_max,
            ref geometry,
            ref refs,
            window,
            in_len,
            out_len,
            ..
        } = *pool;
        let x = self.layout.act[pool.layer_idx].clone();
        let y = self.layout.act[pool.layer_idx + 1].clone();
        let mut params = vec![
            param("const float* __restrict__", "x", Arg::buffer(x)),
            param("float* __restrict__", "y", Arg::buffer(y)),
        ];
        if is_max {
            params.push(param(
                "int* __restrict__",
                "switches",
                Arg::buffer(pool.switches.clone()),
            ));
        }
        params.push(param("int", "n", Arg::Batch));
        let forward = self.add_kernel(KernelDef {
            spec: self.spec(
                &format!("{id}_forward"),
                KernelRole::Forward,
                id,
                pool.layers,
                elementwise(out_len),
                0,
                0,
                Extent::per_image(out_len * (window.kh * window.kw) as u64),
                Extent::per_image(4 * (in_len + out_len * (1 + u64::from(is_max)))),
            ),
            comment: vec![
                format!("{id}_forward: {refs}"),
                format!(
                    "{} pooling {}, one thread per output value{}",
                    if is_max {
                        "max"
                    } else {
                        "average (Caffe's divisor)"
                    },
                    window_text(&window),
                    if is_max { "; records the switches" } else { "" }
                ),
            ],
            body: if is_max {
                format!("allcnnc::max_pool_forward<{geometry}>(x, y, switches, n);")
            } else {
                format!("allcnnc::avg_pool_forward<{geometry}>(x, y, n);")
            },
            params,
            min_blocks: 0,
        });
        self.schedule
            .forward_and_infer(pool.layer_idx, self.launch(forward));
    }

    fn pool_backward(&mut self, pool: &PoolGroup) -> usize {
        let PoolGroup {
            id,
            is_max,
            ref geometry,
            ref refs,
            in_len,
            out_len,
            ..
        } = *pool;
        let kind = if is_max { "max" } else { "avg" };
        let mut params = vec![param(
            "const float* __restrict__",
            "dy",
            Arg::buffer(self.layout.grad[pool.layer_idx + 1].clone()),
        )];
        if is_max {
            params.push(param(
                "const int* __restrict__",
                "switches",
                Arg::buffer(pool.switches.clone()),
            ));
        }
        params.push(param(
            "float* __restrict__",
            "dx",
            Arg::buffer(self.layout.grad[pool.layer_idx].clone()),
        ));
        params.push(param("int", "n", Arg::Batch));
        self.add_kernel(KernelDef {
            spec: self.spec(
                &format!("{id}_backward"),
                KernelRole::BackwardData,
                id,
                pool.layers,
                elementwise(in_len),
                0,
                0,
                Extent::per_image(in_len * 2),
                Extent::per_image(4 * (in_len + out_len * (1 + u64::from(is_max)))),
            ),
            comment: vec![
                format!("{id}_backward: {refs}"),
                format!(
                    "{kind} pooling backward as a gather: one thread per input value sums the outputs{}",
                    if is_max { " whose switch points at it" } else { " whose window holds it" }
                ),
            ],
            body: if is_max {
                format!("allcnnc::max_pool_backward<{geometry}>(dy, switches, dx, n);")
            } else {
                format!("allcnnc::avg_pool_backward<{geometry}>(dy, dx, n);")
            },
            params,
            min_blocks: 0,
        })
    }
}
