//! The generator: its state, the walk over the fused groups, and the
//! assembly of the module and the device plan.
//!
//! [`Gen::run`] visits the groups in layer order and hands each to the
//! emitter of its kind (`conv`, `pool`, `head`, `elementwise`); an emitter
//! adds the group's constants and kernels to the module, its launches to
//! the [`Schedule`] and any buffer it needs to the [`Layout`], and returns
//! the group's training backward launches.
//!
//! Invariant: kernels, items and buffers are appended in visiting order,
//! so the same plan always yields the same module.

use super::buffers::Layout;
use super::fuse::{Fusion, GroupKind};
use super::schedule::Schedule;
use super::text::Namer;
use super::tiling::BLOCK_THREADS;
use super::{Item, KernelDef, Module, Precision};
use plan::device::{DType, DevicePlan, Extent, Grid, KernelRole, KernelSpec, Launch};
use plan::{Op, Plan};

pub struct Gen<'a> {
    pub plan: &'a Plan,
    pub precision: Precision,
    pub namer: Namer,
    pub items: Vec<Item>,
    pub kernels: Vec<KernelDef>,
    pub layout: Layout,
    pub schedule: Schedule,
    /// Floats of the largest split-K partial sums (weights and bias).
    pub partials_len: u64,
    /// Output tiles of the largest weight-gradient grid (one arrival
    /// counter each).
    pub tile_counters: u64,
}

impl<'a> Gen<'a> {
    pub fn new(plan: &'a Plan, fusion: &Fusion, precision: Precision) -> Self {
        Self {
            plan,
            precision,
            namer: Namer::default(),
            items: Vec::new(),
            kernels: Vec::new(),
            layout: Layout::new(plan, fusion),
            schedule: Schedule::new(plan.layers.len()),
            partials_len: 0,
            tile_counters: 0,
        }
    }

    /// Adds a kernel to the module; returns its index.
    pub fn add_kernel(&mut self, def: KernelDef) -> usize {
        self.kernels.push(def);
        self.items.push(Item::Kernel(self.kernels.len() - 1));
        self.kernels.len() - 1
    }

    pub fn add_visual(&mut self, layer_idx: usize, kernel: usize) {
        let launch = self.launch(kernel);
        self.schedule.visual[layer_idx].push(launch);
    }

    pub fn launch(&self, kernel: usize) -> Launch {
        self.kernels[kernel].launch(kernel)
    }

    /// The names, `.net` lines and comment text of `layers`.
    pub fn layer_refs(&self, layers: &[usize]) -> (Vec<String>, Vec<usize>, String) {
        let names: Vec<String> = layers
            .iter()
            .map(|&l| self.plan.layers[l].name.clone())
            .collect();
        let lines: Vec<usize> = layers.iter().map(|&l| self.plan.layers[l].line).collect();
        let text = layers
            .iter()
            .map(|&l| {
                let layer = &self.plan.layers[l];
                if layer.line == 0 {
                    layer.name.clone()
                } else {
                    format!("{} (line {})", layer.name, layer.line)
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        (names, lines, text)
    }

    /// A kernel spec with the group's layers filled in.
    #[allow(clippy::too_many_arguments)]
    pub fn spec(
        &self,
        name: &str,
        role: KernelRole,
        group: &str,
        layers: &[usize],
        grid: Grid,
        static_shared: u32,
        dynamic_shared: u32,
        flops: Extent,
        bytes: Extent,
    ) -> KernelSpec {
        let (names, lines, _) = self.layer_refs(layers);
        KernelSpec {
            name: name.to_string(),
            role,
            group: group.to_string(),
            layers: names,
            lines,
            grid,
            block: [BLOCK_THREADS, 1, 1],
            dynamic_shared_bytes: dynamic_shared,
            static_shared_bytes: static_shared,
            flops,
            bytes,
            gemm: None,
        }
    }

    /// Emits every group, then the split-K buffer and the update.
    pub fn run(&mut self, fusion: &Fusion) {
        let plan = self.plan;
        let layers = plan.layers.len();
        let first_param_layer = plan
            .layers
            .iter()
            .position(|l| matches!(l.op, Op::Conv { .. }))
            .unwrap_or(layers);
        let mut backward_groups = Vec::new();
        let links = super::conv::conv_links(fusion);
        for (group, links) in fusion.groups.iter().zip(links) {
            let id = self.namer.name(&group.name);
            let (_, _, refs) = self.layer_refs(&group.layers);
            self.items
                .push(Item::Section(vec![format!("{id}: {refs}")]));
            let backward = match group.kind {
                GroupKind::Conv { .. } => self.conv(&id, group, first_param_layer, links),
                GroupKind::MaxPool | GroupKind::AvgPool => self.pool(&id, group),
                GroupKind::GlobalAvgPool => self.gap(&id, group),
                GroupKind::Dropout { p } => self.dropout(&id, group, p),
                GroupKind::Head { gap } => {
                    self.head(&id, group, gap);
                    Vec::new()
                }
            };
            let last = *group.layers.last().expect("groups are not empty");
            if last >= first_param_layer {
                backward_groups.push(backward);
            }
        }
        for launches in backward_groups.into_iter().rev() {
            self.schedule.backward.extend(launches);
        }
        self.layout.add(
            "wgrad.partials",
            DType::F32,
            Extent::fixed(self.partials_len.max(1)),
            "split-K partial sums of the weight and bias gradients",
        );
        self.layout.add(
            "wgrad.counters",
            DType::I32,
            Extent::fixed(self.tile_counters.max(1)),
            "per weight-gradient output tile: splits finished in the running launch (unsigned; zero between launches)",
        );
        self.update();
    }

    /// The module and the device plan (without the source hash).
    pub fn finish(self, fusion: &Fusion) -> (Module, DevicePlan) {
        let plan = self.plan;
        let layers = self.schedule.layer_ios(plan, &self.layout);
        let header = header(
            plan,
            fusion,
            self.kernels.len(),
            self.layout.n_params,
            self.precision,
        );
        let device_plan = DevicePlan {
            model: plan.name.clone(),
            model_hash: plan.model_hash.clone(),
            source_sha256: String::new(),
            buffers: self.layout.buffers,
            params: self.layout.slots,
            n_params: self.layout.n_params,
            kernels: self.kernels.iter().map(|k| k.spec.clone()).collect(),
            input: "input".into(),
            labels: "labels".into(),
            loss: "loss".into(),
            correct: "correct".into(),
            probs: "probs".into(),
            param_buffer: "params".into(),
            grad_buffer: "grads".into(),
            momentum_buffer: "momentum".into(),
            forward: self.schedule.forward,
            backward: self.schedule.backward,
            update: self.schedule.update,
            infer: self.schedule.infer,
            layers,
        };
        let module = Module {
            model: plan.name.clone(),
            header,
            items: self.items,
            kernels: self.kernels,
        };
        (module, device_plan)
    }
}

/// The comment opening the source: model, counts and arithmetic.
fn header(
    plan: &Plan,
    fusion: &Fusion,
    kernels: usize,
    n_params: usize,
    precision: Precision,
) -> Vec<String> {
    vec![
        format!(
            "{}: generated by allcnnc {} from the plan of model `{}`",
            plan.name,
            env!("CARGO_PKG_VERSION"),
            plan.name
        ),
        format!(
            "{} fused groups, {} kernels, {} parameters (weights first, then biases)",
            fusion.groups.len(),
            kernels,
            n_params
        ),
        match precision {
            Precision::Fp32 => "fp32 throughout".to_string(),
            p => format!(
                "convolution GEMMs on tensor cores ({} inputs, fp32 accumulation), everything else fp32",
                p.name()
            ),
        } + "; activations N x H x W x C, weights HWIO; the batch size n is the only run-time size",
    ]
}
