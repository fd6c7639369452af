//! The CUDA back end: a plan's fused groups to CUDA C and a device plan.
//!
//! [`generate`] runs the [`fuse`] grouping over a lowered [`Plan`] and
//! produces a [`Program`]: readable CUDA C (`NAME.cu`, rendered by
//! [`writer`]) and the [`DevicePlan`] (`NAME.plan.json`) the runtime's CUDA
//! executor interprets: buffers with their sizes, every kernel's launch
//! configuration, and the forward / backward / update / inference /
//! visualisation schedules.
//!
//! Each group becomes a struct of compile-time constants (shapes, window,
//! activation, tile sizes) and a few `extern "C"` kernels that instantiate
//! the prelude's templates with it:
//! - conv groups: `NAME_forward` (implicit GEMM, shared-memory tiles, bias +
//!   activation epilogue, input dropout on load), `NAME_backward_data` (ReLU
//!   rule as an argument, dropout mask in the epilogue) and
//!   `NAME_backward_weights` (split-K, bias included; the last block of
//!   each output tile adds the splits' partial sums in split order);
//! - pools, standalone global averages and dropouts: `NAME_forward`,
//!   `NAME_backward`;
//! - the head: `NAME_train` (average, softmax, loss, top-1 and the gradient
//!   at its input in one kernel) and `NAME_infer`;
//! - `sgd_update`: one launch over the flat parameter buffer.
//!
//! A kernel's parameter list and the arguments its launches pass are built
//! from one list ([`Param`]), so the source and the plan cannot disagree.
//!
//! The files follow the generator's jobs: [`fuse`] groups layers,
//! `buffers` plans the buffers and parameter slots, `tiling` picks tile
//! sizes, split-K counts and shared memory, `generator` walks the groups,
//! `conv`, `pool`, `head` and `elementwise` emit each kind of group's
//! kernels, `schedule` keeps the launch lists, `text` names things and
//! writes comment phrases, [`writer`] renders the module and [`report`]
//! describes a program.
//!
//! Invariant: the output depends only on the plan (names from layer names,
//! groups in layer order, floats in shortest round-trip form), so it can be
//! snapshotted.

pub mod fuse;
pub mod report;
pub mod writer;

mod buffers;
mod conv;
mod elementwise;
mod generator;
mod head;
mod pool;
mod schedule;
mod text;
mod tiling;

pub use text::c_float;
pub use tiling::{BLOCK_THREADS, MAX_SPLITS, NOMINAL_BATCH, TARGET_BLOCKS, TILE_K};

use fuse::{fuse_plan, Fusion};
use generator::Gen;
use plan::device::{Arg, DevicePlan, KernelSpec, Launch, Program};
use plan::Plan;

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
    let mut gen = Gen::new(plan, fusion, precision);
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
