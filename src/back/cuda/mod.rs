//! The CUDA back end: a plan's fused groups to CUDA C and a device plan.
//!
//! [`generate`] runs the [`fuse`] grouping over a
//! lowered [`Plan`] and produces a [`Program`]: readable CUDA C (`NAME.cu`,
//! rendered by [`writer`]) and the [`DevicePlan`] (`NAME.plan.json`) the
//! runtime's CUDA executor interprets: buffers with their sizes, every
//! kernel's launch configuration, and the forward / backward / update /
//! inference / visualisation schedules.
//!
//! Each group becomes a struct of compile-time constants (shapes, window,
//! activation, tile sizes) and a few `extern "C"` kernels that instantiate
//! the prelude's templates with it:
//! - conv groups: `NAME_forward` (implicit GEMM, shared-memory tiles, bias +
//!   activation epilogue, input dropout on load), `NAME_backward_data` (ReLU
//!   rule as an argument, dropout mask in the epilogue) and
//!   `NAME_backward_weights` (split-K partial sums, bias included), whose
//!   splits `allcnnc_reduce_splits` adds in a fixed order;
//! - pools, standalone global averages and dropouts: `NAME_forward`,
//!   `NAME_backward`;
//! - the head: `NAME_train` (average, softmax, loss, top-1 and the gradient
//!   at its input in one kernel) and `NAME_infer`;
//! - `sgd_update`: one launch over the flat parameter buffer.
//!
//! A kernel's parameter list and the arguments its launches pass are built
//! from one list ([`Param`]), so the source and the plan cannot disagree.
//!
//! Invariant: the output depends only on the plan (names from layer names,
//! groups in layer order, floats in shortest round-trip form), so it can be
//! snapshotted.

pub mod fuse;
pub mod report;
pub mod writer;

use fuse::{fuse_plan, FusedGroup, Fusion, GroupKind};
use runtime::cuda::program::{
    Arg, BufferSpec, DType, DevicePlan, Extent, Grid, KernelRole, KernelSpec, Launch, LayerIo,
    ParamSlot, Program,
};
use runtime::plan::{Activation, Layer, Op, Plan, Window};
use std::collections::HashSet;

/// Threads of every block.
pub const BLOCK_THREADS: u32 = 256;
/// Blocks that fill an H100 twice (132 SMs): the split-K and tile-size target.
pub const TARGET_BLOCKS: u64 = 264;
/// The batch size tile choices are tuned for (the launch grids scale with
/// the real batch).
pub const NOMINAL_BATCH: u64 = 128;
/// Most split-K slices of a weight gradient.
pub const MAX_SPLITS: u64 = 64;
/// Depth of one K step of the GEMM tiles (the prelude's `BK`).
pub const TILE_K: u64 = 16;

/// A kernel parameter: its C declaration and what the executor passes.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub ctype: &'static str,
    pub name: &'static str,
    pub arg: Arg,
}

fn param(ctype: &'static str, name: &'static str, arg: Arg) -> Param {
    Param { ctype, name, arg }
}

/// A struct of compile-time constants a group's kernels instantiate.
#[derive(Debug, Clone, PartialEq)]
pub struct Constants {
    pub name: String,
    pub comment: Vec<String>,
    /// `(C type, name, value)`.
    pub fields: Vec<(&'static str, &'static str, String)>,
}

/// One kernel: its plan entry and what the writer needs to emit it.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelDef {
    pub spec: KernelSpec,
    /// The opening comment (layers, `.net` lines, what it computes).
    pub comment: Vec<String>,
    pub params: Vec<Param>,
    /// The body: one call of a prelude template (empty for a prelude kernel).
    pub body: String,
    /// Blocks per SM the kernel must fit (`__launch_bounds__`'s second
    /// argument; 0: unstated). The GEMM kernels ask for 2, which caps them at
    /// 128 registers and keeps ptxas from squeezing them into 64 (and
    /// spilling).
    pub min_blocks: u32,
}

impl KernelDef {
    /// A launch passing every parameter's own argument.
    fn launch(&self, index: usize) -> Launch {
        Launch {
            kernel: index,
            args: self.params.iter().map(|p| p.arg.clone()).collect(),
        }
    }
}

/// What the module holds, in source order.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A banner comment opening a group's section.
    Section(Vec<String>),
    Constants(Constants),
    /// Index into [`Module::kernels`].
    Kernel(usize),
}

/// The generated module before rendering.
#[derive(Debug, Clone, PartialEq)]
pub struct Module {
    pub model: String,
    pub header: Vec<String>,
    pub items: Vec<Item>,
    pub kernels: Vec<KernelDef>,
}

/// Arithmetic of the convolution GEMMs (forward, gradient of the input,
/// gradient of the weights). Everything else (bias, activations, pools,
/// the head, the SGD update) is fp32 in every mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// fp32 FMA on the CUDA cores.
    #[default]
    Fp32,
    /// Tensor cores, inputs rounded to TF32 (10-bit mantissa), fp32 accumulation.
    Tf32,
    /// Tensor cores, inputs rounded to BF16 (7-bit mantissa), fp32 accumulation.
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// Generates the fp32 CUDA program of a plan.
pub fn generate(plan: &Plan) -> Program {
    generate_with(plan, Precision::Fp32)
}

/// Generates the CUDA program of a plan with the convolution GEMMs in
/// `precision`.
pub fn generate_with(plan: &Plan, precision: Precision) -> Program {
    generate_fused(plan, &fuse_plan(plan), precision)
}

/// Generates the CUDA program of a plan from its grouping (`fusion` must be
/// [`fuse_plan`] of `plan`), for callers that also show the groups.
pub fn generate_fused(plan: &Plan, fusion: &Fusion, precision: Precision) -> Program {
    let (module, mut device_plan) = lower(plan, fusion, precision);
    let source = writer::render(&module);
    device_plan.source_sha256 = sha256_hex(source.as_bytes());
    Program {
        source,
        plan: device_plan,
    }
}

/// Generates the module and the device plan (without the source hash).
pub fn lower(plan: &Plan, fusion: &Fusion, precision: Precision) -> (Module, DevicePlan) {
    let mut gen = Gen::new(plan, precision);
    gen.run(fusion);
    gen.finish(fusion)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A C float literal in Rust's shortest round-trip form (`0.5f`, `1e-5f`).
pub fn c_float(value: f32) -> String {
    let text = format!("{value:?}");
    if text.contains(['.', 'e', 'E']) {
        format!("{text}f")
    } else {
        format!("{text}.0f")
    }
}

/// A C identifier from a layer name.
fn identifier(name: &str) -> String {
    let mut id: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !id.starts_with(|c: char| c.is_ascii_alphabetic()) {
        id.insert_str(0, "layer_");
    }
    id
}

/// Unique identifiers for the groups.
#[derive(Default)]
struct Namer {
    used: HashSet<String>,
}

impl Namer {
    fn name(&mut self, wanted: &str) -> String {
        let base = identifier(wanted);
        let mut name = base.clone();
        let mut count = 1;
        while !self.used.insert(name.clone()) {
            count += 1;
            name = format!("{base}_{count}");
        }
        name
    }
}

fn act_code(act: Activation) -> (&'static str, f32) {
    match act {
        Activation::None => ("allcnnc::ACT_NONE", 0.0),
        Activation::Relu => ("allcnnc::ACT_RELU", 0.0),
        Activation::LeakyRelu { slope } => ("allcnnc::ACT_LEAKY", slope),
    }
}

fn act_text(act: Activation) -> String {
    match act {
        Activation::None => "no activation".into(),
        Activation::Relu => "relu".into(),
        Activation::LeakyRelu { slope } => format!("leaky relu (slope {slope:?})"),
    }
}

/// Whether a conv's backward pass needs its pre-activation (a negative
/// slope flips signs; see runtime::cpu::activation).
fn keeps_pre(act: Activation) -> bool {
    matches!(act, Activation::LeakyRelu { slope } if slope < 0.0)
}

fn window_text(window: &Window) -> String {
    let pad = window.pad;
    format!(
        "{}x{} stride {}x{} pad {},{},{},{} (top, left, bottom, right)",
        window.kh,
        window.kw,
        window.stride_h,
        window.stride_w,
        pad.top,
        pad.left,
        pad.bottom,
        pad.right
    )
}

/// Per-thread tile `(rows, columns)` of a GEMM with `rows_nominal` rows at
/// the nominal batch and `cols` columns: wide tiles when the grid stays
/// large enough to fill the GPU.
fn tile(rows_nominal: u64, cols: u64) -> (u64, u64) {
    let tn = if cols >= 64 {
        4
    } else if cols >= 32 {
        2
    } else {
        1
    };
    let col_tiles = cols.div_ceil(16 * tn);
    let tm = if rows_nominal.div_ceil(128) * col_tiles >= TARGET_BLOCKS {
        8
    } else {
        4
    };
    (tm, tn)
}

/// Static shared memory of a GEMM kernel with `16 tm x 16 tn` tiles: the
/// fp32 templates hold `As[BK][BM + 1]` and `Bs[BK][BN + 1]`, the
/// tensor-core ones `As[BM][BK + 4]` and `Bs[BK][BN + 8]` (fp32 in both
/// TF32 and BF16: operands are rounded when fragments load). Checked
/// against ptxas's report by tests/cuda_codegen.rs.
fn shared_bytes(precision: Precision, tm: u64, tn: u64) -> u32 {
    let (bm, bn) = (16 * tm, 16 * tn);
    let floats = match precision {
        Precision::Fp32 => TILE_K * (bm + 1) + TILE_K * (bn + 1),
        Precision::Tf32 | Precision::Bf16 => bm * (TILE_K + 4) + TILE_K * (bn + 8),
    };
    (4 * floats) as u32
}

struct Gen<'a> {
    plan: &'a Plan,
    precision: Precision,
    namer: Namer,
    items: Vec<Item>,
    kernels: Vec<KernelDef>,
    buffers: Vec<BufferSpec>,
    /// `act[b]`: the buffer holding the activation at boundary `b` (the
    /// input of layer `b`; `act[layers]` the probabilities).
    act: Vec<String>,
    /// `grad[b]`: the gradient buffer of boundary `b`.
    grad: Vec<String>,
    /// Per parameter spec: its offset in the flat buffers.
    slots: Vec<ParamSlot>,
    n_params: usize,
    n_weights: usize,
    partials_len: u64,
    forward: Vec<Launch>,
    backward: Vec<Launch>,
    infer: Vec<Launch>,
    update_launches: Vec<Launch>,
    /// Per layer: infer launches producing its output, visual launches.
    infer_launches: Vec<usize>,
    visual: Vec<Vec<Launch>>,
    reduce_kernel: usize,
}

impl<'a> Gen<'a> {
    fn new(plan: &'a Plan, precision: Precision) -> Self {
        let specs = plan.params();
        let mut slots: Vec<ParamSlot> = specs
            .iter()
            .map(|spec| ParamSlot {
                name: spec.name.clone(),
                offset: 0,
                len: spec.len(),
            })
            .collect();
        // Weights first (they get weight decay), then biases.
        let mut offset = 0;
        for weights_pass in [true, false] {
            for (slot, spec) in slots.iter_mut().zip(&specs) {
                if (spec.dims.len() == 4) == weights_pass {
                    slot.offset = offset;
                    offset += slot.len;
                }
            }
        }
        let n_weights = specs
            .iter()
            .filter(|s| s.dims.len() == 4)
            .map(|s| s.len())
            .sum();
        let layers = plan.layers.len();
        Self {
            plan,
            precision,
            namer: Namer::default(),
            items: Vec::new(),
            kernels: Vec::new(),
            buffers: Vec::new(),
            act: vec![String::new(); layers + 1],
            grad: vec![String::new(); layers + 1],
            slots,
            n_params: offset,
            n_weights,
            partials_len: 0,
            forward: Vec::new(),
            backward: Vec::new(),
            infer: Vec::new(),
            update_launches: Vec::new(),
            infer_launches: vec![0; layers],
            visual: vec![Vec::new(); layers],
            reduce_kernel: 0,
        }
    }

    fn buffer(&mut self, name: &str, dtype: DType, len: Extent, doc: impl Into<String>) {
        self.buffers.push(BufferSpec {
            name: name.to_string(),
            dtype,
            len,
            doc: doc.into(),
        });
    }

    fn param_offset(&self, name: &str) -> usize {
        self.slots
            .iter()
            .find(|slot| slot.name == name)
            .map_or(0, |slot| slot.offset)
    }

    fn add_kernel(&mut self, def: KernelDef) -> usize {
        self.kernels.push(def);
        self.items.push(Item::Kernel(self.kernels.len() - 1));
        self.kernels.len() - 1
    }

    fn add_visual(&mut self, layer_idx: usize, kernel: usize) {
        let launch = self.launch(kernel);
        self.visual[layer_idx].push(launch);
    }

    fn launch(&self, kernel: usize) -> Launch {
        self.kernels[kernel].launch(kernel)
    }

    fn layer_refs(&self, layers: &[usize]) -> (Vec<String>, Vec<usize>, String) {
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
    fn spec(
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
        }
    }

    fn run(&mut self, fusion: &Fusion) {
        let plan = self.plan;
        let layers = plan.layers.len();
        let input_len = plan.input.len() as u64;
        let max_len = std::iter::once(plan.input.len())
            .chain(plan.layers.iter().map(|l| l.out_shape.len()))
            .max()
            .unwrap_or(0) as u64;
        let classes = plan.classes as u64;
        let n_params = self.n_params as u64;
        let fixed_buffers = [
            (
                "input",
                DType::F32,
                Extent::per_image(input_len),
                "the batch, N x H x W x C",
            ),
            (
                "labels",
                DType::I32,
                Extent::per_image(1),
                "class of each image",
            ),
            (
                "loss",
                DType::F64,
                Extent::per_image(1),
                "cross-entropy summed per batch slot since the host last read it",
            ),
            (
                "correct",
                DType::I32,
                Extent::per_image(1),
                "top-1 hits summed per batch slot since the host last read it",
            ),
            (
                "logits",
                DType::F32,
                Extent::per_image(classes),
                "the softmax's input",
            ),
            (
                "probs",
                DType::F32,
                Extent::per_image(classes),
                "class probabilities",
            ),
            (
                "grad.a",
                DType::F32,
                Extent::per_image(max_len),
                "gradient ping-pong buffer",
            ),
            (
                "grad.b",
                DType::F32,
                Extent::per_image(max_len),
                "gradient ping-pong buffer",
            ),
            (
                "params",
                DType::F32,
                Extent::fixed(n_params),
                "every parameter: all weights (HWIO), then all biases",
            ),
            (
                "grads",
                DType::F32,
                Extent::fixed(n_params),
                "gradients, laid out as params",
            ),
            (
                "momentum",
                DType::F32,
                Extent::fixed(n_params),
                "momentum, laid out as params",
            ),
        ];
        for (name, dtype, len, doc) in fixed_buffers {
            self.buffer(name, dtype, len, doc);
        }

        // Activation buffers of each boundary.
        self.act[0] = "input".into();
        for group in &fusion.groups {
            for &l in &group.layers {
                let layer = &plan.layers[l];
                let fused_dropout = matches!(group.kind, GroupKind::Conv { .. })
                    && matches!(layer.op, Op::Dropout { .. });
                self.act[l + 1] = if fused_dropout {
                    self.act[l].clone()
                } else {
                    match (&group.kind, &layer.op) {
                        (GroupKind::Head { .. }, Op::GlobalAvgPool) => "logits".into(),
                        (GroupKind::Head { .. }, _) => "probs".into(),
                        _ => {
                            let name = format!("{}.out", layer.name);
                            self.buffer(
                                &name,
                                DType::F32,
                                Extent::per_image(layer.out_shape.len() as u64),
                                format!("output of {}", layer.name),
                            );
                            name
                        }
                    }
                };
            }
        }
        // Gradient buffers: alternate, except across a dropout a conv absorbed
        // (the identity at inference, and folded into the conv in training).
        let absorbed: HashSet<usize> = fusion
            .groups
            .iter()
            .filter(|g| matches!(g.kind, GroupKind::Conv { .. }))
            .flat_map(|g| g.layers[..g.layers.len() - 1].to_vec())
            .collect();
        self.grad[layers] = "grad.a".into();
        for l in (0..layers).rev() {
            self.grad[l] = if absorbed.contains(&l) {
                self.grad[l + 1].clone()
            } else if self.grad[l + 1] == "grad.a" {
                "grad.b".into()
            } else {
                "grad.a".into()
            };
        }

        self.reduce_kernel = self.kernels.len();
        self.kernels.push(KernelDef {
            spec: KernelSpec {
                name: "allcnnc_reduce_splits".into(),
                role: KernelRole::Reduce,
                group: String::new(),
                layers: Vec::new(),
                lines: Vec::new(),
                grid: Grid {
                    x_items: Extent::fixed(TARGET_BLOCKS * BLOCK_THREADS as u64),
                    x_items_per_block: BLOCK_THREADS as u64,
                    y: 1,
                    z: 1,
                },
                block: [BLOCK_THREADS, 1, 1],
                dynamic_shared_bytes: 0,
                static_shared_bytes: 0,
                flops: Extent::default(),
                bytes: Extent::default(),
            },
            comment: Vec::new(),
            params: vec![
                param(
                    "const float* __restrict__",
                    "partials",
                    Arg::buffer("wgrad.partials"),
                ),
                param("float* __restrict__", "out", Arg::buffer("grads")),
                param("int", "len", Arg::Int(0)),
                param("int", "splits", Arg::Int(1)),
            ],
            body: String::new(),
            min_blocks: 0,
        });

        let first_param_layer = plan
            .layers
            .iter()
            .position(|l| matches!(l.op, Op::Conv { .. }))
            .unwrap_or(layers);
        let mut backward_groups = Vec::new();
        for group in &fusion.groups {
            let id = self.namer.name(&group.name);
            let (_, _, refs) = self.layer_refs(&group.layers);
            self.items
                .push(Item::Section(vec![format!("{id}: {refs}")]));
            let backward = match group.kind {
                GroupKind::Conv {
                    act,
                    bias,
                    input_dropout,
                } => self.conv(&id, group, act, bias, input_dropout, first_param_layer),
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
            self.backward.extend(launches);
        }
        self.buffer(
            "wgrad.partials",
            DType::F32,
            Extent::fixed(self.partials_len.max(1)),
            "split-K partial sums of the weight and bias gradients",
        );
        self.update();
    }

    /// The comment line describing a GEMM kernel of `16 tm x 16 tn` tiles.
    fn gemm_text(&self, tm: u64, tn: u64) -> String {
        match self.precision {
            Precision::Fp32 => format!(
                "implicit GEMM, fp32, {}x{}x{TILE_K} shared-memory tiles, {tm}x{tn} outputs per thread",
                16 * tm,
                16 * tn
            ),
            p => format!(
                "implicit GEMM on tensor cores (mma.sync {}, fp32 accumulation), {}x{}x{TILE_K} shared-memory tiles, 8 warps of {}x{}",
                if p == Precision::Tf32 { "m16n8k8 tf32" } else { "m16n8k16 bf16" },
                16 * tm,
                16 * tn,
                4 * tm,
                8 * tn
            ),
        }
    }

    /// The call of prelude GEMM template `name` (fp32) or `name_mma`.
    fn gemm_call(&self, name: &str, geometry: &str, args: &str) -> String {
        match self.precision {
            Precision::Fp32 => format!("allcnnc::{name}<{geometry}>({args});"),
            p => format!(
                "allcnnc::{name}_mma<{geometry}, allcnnc::PREC_{}>({args});",
                p.name().to_uppercase()
            ),
        }
    }

    /// The forward, backward and visualisation kernels of a conv group;
    /// returns its training backward launches.
    fn conv(
        &mut self,
        id: &str,
        group: &FusedGroup,
        act: Activation,
        bias: bool,
        input_dropout: Option<f32>,
        first_param_layer: usize,
    ) -> Vec<Launch> {
        let plan = self.plan;
        let conv_idx = *group
            .layers
            .last()
            .expect("a conv group ends with its conv");
        let dropout_idx = input_dropout.map(|_| group.layers[0]);
        let layer: &Layer = &plan.layers[conv_idx];
        let Op::Conv { window, .. } = layer.op else {
            unreachable!("the last layer of a conv group is a conv");
        };
        let (i, o) = (layer.in_shape, layer.out_shape);
        let taps = (window.kh * window.kw) as u64;
        let rows_w = taps * i.c as u64;
        let (tm, tn) = tile(NOMINAL_BATCH * (o.h * o.w) as u64, o.c as u64);
        let (btm, btn) = tile(NOMINAL_BATCH * (i.h * i.w) as u64, i.c as u64);
        let (wtm, wtn) = tile(rows_w, o.c as u64);
        let w_tiles = rows_w.div_ceil(16 * wtm) * (o.c as u64).div_ceil(16 * wtn);
        let k_nominal = NOMINAL_BATCH * (o.h * o.w) as u64;
        let splits = TARGET_BLOCKS
            .div_ceil(w_tiles)
            .min(MAX_SPLITS)
            .min(k_nominal.div_ceil(4 * TILE_K))
            .max(1);
        let weight_len = rows_w * o.c as u64;
        self.partials_len = self.partials_len.max(splits * (weight_len + o.c as u64));
        let (act_name, slope) = act_code(act);
        let keep_pre = keeps_pre(act);
        let geometry = format!("{id}_geometry");
        let int = |v: usize| v.to_string();
        self.items.push(Item::Constants(Constants {
            name: geometry.clone(),
            comment: vec![format!(
                "{id}: conv {} -> {}, window {}, {}{}",
                i,
                o,
                window_text(&window),
                if bias { "bias, " } else { "" },
                act_text(act),
            )],
            fields: vec![
                ("int", "IH", int(i.h)),
                ("int", "IW", int(i.w)),
                ("int", "IC", int(i.c)),
                ("int", "OH", int(o.h)),
                ("int", "OW", int(o.w)),
                ("int", "OC", int(o.c)),
                ("int", "KH", int(window.kh)),
                ("int", "KW", int(window.kw)),
                ("int", "SH", int(window.stride_h)),
                ("int", "SW", int(window.stride_w)),
                ("int", "PT", int(window.pad.top)),
                ("int", "PL", int(window.pad.left)),
                ("int", "ACT", act_name.to_string()),
                ("float", "SLOPE", c_float(slope)),
                ("bool", "BIAS", bias.to_string()),
                ("bool", "DROPOUT", input_dropout.is_some().to_string()),
                ("float", "DROP_P", c_float(input_dropout.unwrap_or(0.0))),
                ("bool", "KEEP_PRE", keep_pre.to_string()),
                ("int", "TM", tm.to_string()),
                ("int", "TN", tn.to_string()),
                ("int", "BTM", btm.to_string()),
                ("int", "BTN", btn.to_string()),
                ("int", "WTM", wtm.to_string()),
                ("int", "WTN", wtn.to_string()),
            ],
        }));

        let x = Arg::buffer(self.act[dropout_idx.unwrap_or(conv_idx)].clone());
        let y_name = self.act[conv_idx + 1].clone();
        let pre_name = format!("{}.pre", layer.name);
        if keep_pre {
            self.buffer(
                &pre_name,
                DType::F32,
                Extent::per_image(o.len() as u64),
                format!("pre-activation of {}", layer.name),
            );
        }
        let f_name = if keep_pre {
            pre_name.clone()
        } else {
            y_name.clone()
        };
        let weight = Arg::Buffer {
            name: "params".into(),
            offset: self.param_offset(&format!("{}.weight", layer.name)),
        };
        let bias_arg = Arg::Buffer {
            name: "params".into(),
            offset: self.param_offset(&format!("{}.bias", layer.name)),
        };
        let dropout_params = |params: &mut Vec<Param>| {
            if let Some(d) = dropout_idx {
                params.push(param("u64", "drop_key", Arg::DropoutKey { layer: d }));
                params.push(param("int", "training", Arg::Training));
            }
        };
        let dropout_call = if dropout_idx.is_some() {
            "drop_key, training"
        } else {
            "0ULL, 0"
        };
        let (in_len, out_len) = (i.len() as u64, o.len() as u64);
        let macs = out_len * rows_w;
        let weight_bytes = 4 * (weight_len + if bias { o.c as u64 } else { 0 });
        let dropout_text = input_dropout
            .map(|p| format!("; input dropout p={p:?} applied on load"))
            .unwrap_or_default();

        // Forward.
        let mut params = vec![
            param("const float* __restrict__", "x", x.clone()),
            param("const float* __restrict__", "w", weight.clone()),
        ];
        if bias {
            params.push(param("const float* __restrict__", "b", bias_arg));
        }
        params.push(param(
            "float* __restrict__",
            "y",
            Arg::buffer(y_name.clone()),
        ));
        if keep_pre {
            params.push(param(
                "float* __restrict__",
                "pre",
                Arg::buffer(pre_name.clone()),
            ));
        }
        params.push(param("int", "n", Arg::Batch));
        dropout_params(&mut params);
        let epilogue = u64::from(bias) + u64::from(!matches!(act, Activation::None));
        let (_, _, refs) = self.layer_refs(&group.layers);
        let forward = self.add_kernel(KernelDef {
            spec: self.spec(
                &format!("{id}_forward"),
                KernelRole::Forward,
                id,
                &group.layers,
                Grid {
                    x_items: Extent::per_image((o.h * o.w) as u64),
                    x_items_per_block: 16 * tm,
                    y: (o.c as u64).div_ceil(16 * tn) as u32,
                    z: 1,
                },
                shared_bytes(self.precision, tm, tn),
                0,
                Extent::per_image(2 * macs + epilogue * out_len),
                Extent {
                    per_image: 4 * (in_len + out_len * (1 + u64::from(keep_pre))),
                    fixed: weight_bytes,
                },
            ),
            comment: vec![
                format!("{id}_forward: {refs}"),
                format!(
                    "conv {} -> {}, window {}, + {}{}{dropout_text}",
                    i,
                    o,
                    window_text(&window),
                    if bias { "bias + " } else { "" },
                    act_text(act)
                ),
                self.gemm_text(tm, tn),
            ],
            body: self.gemm_call(
                "conv_forward",
                &geometry,
                &format!(
                    "x, w, {}, y, {}, n, {dropout_call}",
                    if bias { "b" } else { "nullptr" },
                    if keep_pre { "pre" } else { "nullptr" }
                ),
            ),
            params,
            min_blocks: 2,
        });
        self.forward.push(self.launch(forward));
        self.infer.push(self.launch(forward));
        let infer_count = self.infer.len();
        self.infer_launches[conv_idx] = infer_count;
        if let Some(d) = dropout_idx {
            // At inference the dropout is the identity: its output is its input.
            self.infer_launches[d] = infer_count - 1;
        }

        // Backward data (training and visualisation).
        let grad_out = self.grad[conv_idx + 1].clone();
        let grad_in = self.grad[dropout_idx.unwrap_or(conv_idx)].clone();
        let mut params = vec![
            param(
                "const float* __restrict__",
                "dy",
                Arg::buffer(grad_out.clone()),
            ),
            param(
                "const float* __restrict__",
                "f",
                Arg::buffer(f_name.clone()),
            ),
            param("const float* __restrict__", "w", weight),
            param("float* __restrict__", "dx", Arg::buffer(grad_in)),
            param("int", "n", Arg::Batch),
        ];
        dropout_params(&mut params);
        params.push(param("int", "rule", Arg::Rule));
        let backward_data = self.add_kernel(KernelDef {
            spec: self.spec(
                &format!("{id}_backward_data"),
                KernelRole::BackwardData,
                id,
                &group.layers,
                Grid {
                    x_items: Extent::per_image((i.h * i.w) as u64),
                    x_items_per_block: 16 * btm,
                    y: (i.c as u64).div_ceil(16 * btn) as u32,
                    z: 1,
                },
                shared_bytes(self.precision, btm, btn),
                0,
                Extent::per_image(2 * macs),
                Extent {
                    per_image: 4 * (2 * out_len + in_len),
                    fixed: 4 * weight_len,
                },
            ),
            comment: vec![
                format!("{id}_backward_data: {refs}"),
                format!(
                    "gradient at the input; {} mask applied on load with the ReLU rule `rule`{}",
                    act_text(act),
                    if dropout_idx.is_some() {
                        "; the input dropout's mask applied in the epilogue (training)"
                    } else {
                        ""
                    }
                ),
                self.gemm_text(btm, btn),
            ],
            body: self.gemm_call(
                "conv_backward_data",
                &geometry,
                &format!("dy, f, w, dx, n, {dropout_call}, rule"),
            ),
            params,
            min_blocks: 2,
        });
        self.add_visual(conv_idx, backward_data);

        // Backward weights and bias.
        let mut params = vec![
            param("const float* __restrict__", "x", x),
            param("const float* __restrict__", "dy", Arg::buffer(grad_out)),
            param("const float* __restrict__", "f", Arg::buffer(f_name)),
            param(
                "float* __restrict__",
                "partials",
                Arg::buffer("wgrad.partials"),
            ),
            param("int", "n", Arg::Batch),
        ];
        dropout_params(&mut params);
        let backward_weights = self.add_kernel(KernelDef {
            spec: self.spec(
                &format!("{id}_backward_weights"),
                KernelRole::BackwardWeights,
                id,
                &group.layers,
                Grid {
                    x_items: Extent::fixed(rows_w),
                    x_items_per_block: 16 * wtm,
                    y: (o.c as u64).div_ceil(16 * wtn) as u32,
                    z: splits as u32,
                },
                shared_bytes(self.precision, wtm, wtn),
                0,
                Extent::per_image(2 * macs + if bias { out_len } else { 0 }),
                Extent {
                    per_image: 4 * (in_len + 2 * out_len),
                    fixed: 4 * splits * (weight_len + o.c as u64),
                },
            ),
            comment: vec![
                format!("{id}_backward_weights: {refs}"),
                format!(
                    "gradient of the weights{}; {} mask applied on load; split-K over the batch's output pixels ({splits} splits, gridDim.z)",
                    if bias { " and the bias" } else { "" },
                    act_text(act)
                ),
                self.gemm_text(wtm, wtn),
            ],
            body: self.gemm_call(
                "conv_backward_weights",
                &geometry,
                &format!("x, dy, f, partials, n, {dropout_call}"),
            ),
            params,
            min_blocks: 2,
        });
        let mut backward = vec![self.launch(backward_weights)];
        let reduce = |source_offset: u64, target: usize, len: u64| Launch {
            kernel: self.reduce_kernel,
            args: vec![
                Arg::Buffer {
                    name: "wgrad.partials".into(),
                    offset: source_offset as usize,
                },
                Arg::Buffer {
                    name: "grads".into(),
                    offset: target,
                },
                Arg::Int(len as i32),
                Arg::Int(splits as i32),
            ],
        };
        backward.push(reduce(
            0,
            self.param_offset(&format!("{}.weight", layer.name)),
            weight_len,
        ));
        if bias {
            backward.push(reduce(
                splits * weight_len,
                self.param_offset(&format!("{}.bias", layer.name)),
                o.c as u64,
            ));
        }
        if conv_idx > first_param_layer {
            backward.push(self.launch(backward_data));
        }
        backward
    }

    fn pool(&mut self, id: &str, group: &FusedGroup) -> Vec<Launch> {
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
        let x = self.act[layer_idx].clone();
        let y = self.act[layer_idx + 1].clone();
        let switches = format!("{}.switches", layer.name);
        if is_max {
            self.buffer(
                &switches,
                DType::I32,
                Extent::per_image(out_len),
                format!("argmax switches of {}", layer.name),
            );
        }
        let (_, _, refs) = self.layer_refs(&group.layers);
        let mut params = vec![
            param("const float* __restrict__", "x", Arg::buffer(x)),
            param("float* __restrict__", "y", Arg::buffer(y)),
        ];
        if is_max {
            params.push(param(
                "int* __restrict__",
                "switches",
                Arg::buffer(switches.clone()),
            ));
        }
        params.push(param("int", "n", Arg::Batch));
        let kind = if is_max { "max" } else { "avg" };
        let forward = self.add_kernel(KernelDef {
            spec: self.spec(
                &format!("{id}_forward"),
                KernelRole::Forward,
                id,
                &group.layers,
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
        self.forward.push(self.launch(forward));
        self.infer.push(self.launch(forward));
        self.infer_launches[layer_idx] = self.infer.len();

        let mut params = vec![param(
            "const float* __restrict__",
            "dy",
            Arg::buffer(self.grad[layer_idx + 1].clone()),
        )];
        if is_max {
            params.push(param(
                "const int* __restrict__",
                "switches",
                Arg::buffer(switches),
            ));
        }
        params.push(param(
            "float* __restrict__",
            "dx",
            Arg::buffer(self.grad[layer_idx].clone()),
        ));
        params.push(param("int", "n", Arg::Batch));
        let backward = self.add_kernel(KernelDef {
            spec: self.spec(
                &format!("{id}_backward"),
                KernelRole::BackwardData,
                id,
                &group.layers,
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
        });
        self.add_visual(layer_idx, backward);
        vec![self.launch(backward)]
    }

    /// The constants of a global average over an `h x w x c` map.
    fn map_constants(&mut self, id: &str, what: &str, h: usize, w: usize, c: usize) -> String {
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
    fn gap_backward(&mut self, id: &str, layer_idx: usize, geometry: &str) -> usize {
        let layer = &self.plan.layers[layer_idx];
        let i = layer.in_shape;
        let (_, _, refs) = self.layer_refs(&[layer_idx]);
        let params = vec![
            param(
                "const float* __restrict__",
                "dy",
                Arg::buffer(self.grad[layer_idx + 1].clone()),
            ),
            param(
                "float* __restrict__",
                "dx",
                Arg::buffer(self.grad[layer_idx].clone()),
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

    fn gap(&mut self, id: &str, group: &FusedGroup) -> Vec<Launch> {
        let layer_idx = group.layers[0];
        let layer = &self.plan.layers[layer_idx];
        let i = layer.in_shape;
        let geometry = self.map_constants(id, "global average pool", i.h, i.w, i.c);
        let (_, _, refs) = self.layer_refs(&group.layers);
        let params = vec![
            param(
                "const float* __restrict__",
                "x",
                Arg::buffer(self.act[layer_idx].clone()),
            ),
            param(
                "float* __restrict__",
                "y",
                Arg::buffer(self.act[layer_idx + 1].clone()),
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
        self.forward.push(self.launch(forward));
        self.infer.push(self.launch(forward));
        self.infer_launches[layer_idx] = self.infer.len();
        let backward = self.gap_backward(id, layer_idx, &geometry);
        self.add_visual(layer_idx, backward);
        vec![self.launch(backward)]
    }

    fn dropout(&mut self, id: &str, group: &FusedGroup, p: f32) -> Vec<Launch> {
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
                self.act[layer_idx].clone(),
                self.act[layer_idx + 1].clone(),
                "inverted dropout (mask from the counter-based stream, not stored); a copy at inference",
            ),
            (
                "backward",
                KernelRole::BackwardData,
                self.grad[layer_idx + 1].clone(),
                self.grad[layer_idx].clone(),
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
        self.forward.push(self.launch(kernels[0]));
        self.infer.push(self.launch(kernels[0]));
        self.infer_launches[layer_idx] = self.infer.len();
        self.add_visual(layer_idx, kernels[1]);
        vec![self.launch(kernels[1])]
    }

    fn head(&mut self, id: &str, group: &FusedGroup, gap: bool) {
        let plan = self.plan;
        let first = group.layers[0];
        let softmax_idx = *group.layers.last().expect("a head ends with its softmax");
        let i = plan.layers[first].in_shape;
        let classes = plan.classes;
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
        let in_len = i.len() as u64;
        let classes_len = classes as u64;
        let shared = (8 * i.c) as u32;
        let input = Arg::buffer(self.act[first].clone());
        let head_grid = Grid {
            x_items: Extent::per_image(1),
            x_items_per_block: 1,
            y: 1,
            z: 1,
        };
        let train_params = vec![
            param("const float* __restrict__", "x", input.clone()),
            param("const int* __restrict__", "labels", Arg::buffer("labels")),
            param("float* __restrict__", "logits", Arg::buffer("logits")),
            param("float* __restrict__", "probs", Arg::buffer("probs")),
            param("double* __restrict__", "loss", Arg::buffer("loss")),
            param("int* __restrict__", "correct", Arg::buffer("correct")),
            param(
                "float* __restrict__",
                "dx",
                Arg::buffer(self.grad[first].clone()),
            ),
            param("int", "n", Arg::Batch),
        ];
        let average = if gap { "global average pool, " } else { "" };
        let train = self.add_kernel(KernelDef {
            spec: self.spec(
                &format!("{id}_train"),
                KernelRole::Head,
                id,
                &group.layers,
                head_grid,
                0,
                shared,
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
        self.forward.push(self.launch(train));
        let infer_params = vec![
            param("const float* __restrict__", "x", input),
            param("float* __restrict__", "logits", Arg::buffer("logits")),
            param("float* __restrict__", "probs", Arg::buffer("probs")),
            param("int", "n", Arg::Batch),
        ];
        let infer = self.add_kernel(KernelDef {
            spec: self.spec(
                &format!("{id}_infer"),
                KernelRole::Head,
                id,
                &group.layers,
                head_grid,
                0,
                shared,
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
        self.infer.push(self.launch(infer));
        for &l in &group.layers {
            self.infer_launches[l] = self.infer.len();
        }

        // Visualisation: a signal may start at the gap's or the softmax's output.
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
                Arg::buffer(self.grad[softmax_idx + 1].clone()),
            ),
            param(
                "float* __restrict__",
                "dx",
                Arg::buffer(self.grad[softmax_idx].clone()),
            ),
            param("int", "n", Arg::Batch),
        ];
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

    fn update(&mut self) {
        self.items.push(Item::Section(vec![
            "sgd_update: every parameter in one launch".into(),
        ]));
        let n = self.n_params as u64;
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
                },
                block: [BLOCK_THREADS, 1, 1],
                dynamic_shared_bytes: 0,
                static_shared_bytes: 0,
                flops: Extent::fixed(6 * n),
                bytes: Extent::fixed(4 * 5 * n),
            },
            comment: vec![
                format!(
                    "sgd_update: all {} parameters ({} tensors) in one launch",
                    self.n_params,
                    self.slots.len()
                ),
                format!(
                    "SGD with momentum (optionally Nesterov); weight decay on the first {} values (the weights), not on the biases",
                    self.n_weights
                ),
            ],
            body: format!(
                "allcnnc::sgd_update<{}, {}>(w, g, v, lr, momentum, nesterov, weight_decay);",
                self.n_params, self.n_weights
            ),
            params,
            min_blocks: 0,
        });
        // A plan without parameters has nothing to update.
        if self.n_params > 0 {
            self.update_launches = vec![self.launch(kernel)];
        }
    }

    fn finish(self, fusion: &Fusion) -> (Module, DevicePlan) {
        let plan = self.plan;
        let layers = plan
            .layers
            .iter()
            .enumerate()
            .map(|(l, layer)| LayerIo {
                name: layer.name.clone(),
                output: self.act[l + 1].clone(),
                infer_launches: self.infer_launches[l],
                grad_output: self.grad[l + 1].clone(),
                grad_input: self.grad[l].clone(),
                visual_backward: self.visual[l].clone(),
            })
            .collect();
        let header = vec![
            format!(
                "{}: generated by allcnnc {} from the plan of model `{}`",
                plan.name,
                env!("CARGO_PKG_VERSION"),
                plan.name
            ),
            format!(
                "{} fused groups, {} kernels, {} parameters (weights first, then biases)",
                fusion.groups.len(),
                self.kernels.len(),
                self.n_params
            ),
            match self.precision {
                Precision::Fp32 => "fp32 throughout".to_string(),
                p => format!(
                    "convolution GEMMs on tensor cores ({} inputs, fp32 accumulation), everything else fp32",
                    p.name()
                ),
            } + "; activations N x H x W x C, weights HWIO; the batch size n is the only run-time size",
        ];
        let device_plan = DevicePlan {
            model: plan.name.clone(),
            model_hash: plan.model_hash.clone(),
            source_sha256: String::new(),
            buffers: self.buffers,
            params: self.slots,
            n_params: self.n_params,
            kernels: self.kernels.iter().map(|k| k.spec.clone()).collect(),
            input: "input".into(),
            labels: "labels".into(),
            loss: "loss".into(),
            correct: "correct".into(),
            probs: "probs".into(),
            param_buffer: "params".into(),
            grad_buffer: "grads".into(),
            momentum_buffer: "momentum".into(),
            forward: self.forward,
            backward: self.backward,
            update: self.update_launches,
            infer: self.infer,
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

/// One thread per item, `items` per image.
fn elementwise(items_per_image: u64) -> Grid {
    Grid {
        x_items: Extent::per_image(items_per_image),
        x_items_per_block: BLOCK_THREADS as u64,
        y: 1,
        z: 1,
    }
}
