//! The device program: what the compiler's CUDA back end hands the runtime.
//!
//! A [`Program`] is the generated CUDA C source (`NAME.cu`) and a
//! [`DevicePlan`] (`NAME.plan.json`): the buffers to allocate, the kernels
//! with their launch configurations, and the schedules (lists of launches)
//! of a training step, an inference pass and the visualisation passes. The
//! executor interprets the schedules; it knows nothing about the kernels
//! beyond what the plan says, so every launch's arguments are spelled out
//! as [`Arg`]s.
//!
//! Invariant: the plan depends on the model only, never on the batch size.
//! Sizes that scale with the batch are given per image ([`Extent`]), and the
//! executor multiplies them by the number of images it holds room for.

use serde::{Deserialize, Serialize};

/// Element type of a device buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    I32,
    F64,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F64 => 8,
        }
    }
}

/// A count that may scale with the batch: `per_image * n + fixed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Extent {
    pub per_image: u64,
    pub fixed: u64,
}

impl Extent {
    pub const fn fixed(fixed: u64) -> Self {
        Self {
            per_image: 0,
            fixed,
        }
    }

    pub const fn per_image(per_image: u64) -> Self {
        Self {
            per_image,
            fixed: 0,
        }
    }

    pub const fn at(&self, n: u64) -> u64 {
        self.per_image * n + self.fixed
    }
}

/// One device buffer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufferSpec {
    pub name: String,
    pub dtype: DType,
    /// Number of elements.
    pub len: Extent,
    /// What it holds, for people reading the plan.
    pub doc: String,
}

/// Where one parameter tensor lives in the flat parameter buffer (and, at
/// the same offset, in the flat gradient and momentum buffers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamSlot {
    /// `LAYER.weight` or `LAYER.bias`, as in [`crate::Plan::params`].
    pub name: String,
    pub offset: usize,
    pub len: usize,
}

/// The grid of a launch: `x` may scale with the batch, `y` does not, `z`
/// is fixed or, for a split-K GEMM, chosen per launch by [`SplitK`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grid {
    /// `ceil(x_items.at(n) / x_items_per_block)` blocks along x.
    pub x_items: Extent,
    pub x_items_per_block: u64,
    pub y: u32,
    /// Blocks along z; for a split-K grid, the count on the nominal device
    /// ([`NOMINAL_MULTIPROCESSORS`]) at the nominal batch (128), as the
    /// report shows it.
    pub z: u32,
    /// Split-K along z, sized per launch from the batch and the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_k: Option<SplitK>,
}

/// Streaming multiprocessors of the device the report and the emulator
/// assume (an H100 or H200: 132).
pub const NOMINAL_MULTIPROCESSORS: u32 = 132;

/// A split-K grid: the K of the GEMM grows with the batch (`k_per_image`
/// rows per image), its `x * y` output tiles are fixed, and the splits
/// along z are as many as bring the grid to two blocks per multiprocessor,
/// with at least `min_k` rows of K each and at most `max` (the slices the
/// partial-sum buffer holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitK {
    pub tiles: u64,
    pub k_per_image: u64,
    pub min_k: u64,
    pub max: u32,
}

impl SplitK {
    /// The splits of a launch over `n` images on a device with
    /// `multiprocessors` SMs: at least 1, at most `max`.
    pub fn splits(&self, n: u64, multiprocessors: u32) -> u32 {
        let target = 2 * u64::from(multiprocessors.max(1));
        let k = n.saturating_mul(self.k_per_image);
        target
            .div_ceil(self.tiles.max(1))
            .min(k.div_ceil(self.min_k.max(1)))
            .min(u64::from(self.max))
            .max(1) as u32
    }
}

impl Grid {
    /// The grid dimensions for a batch of `n` images on the nominal device.
    /// Callers keep `n` within [`Grid::max_batch`].
    pub fn dims(&self, n: u64) -> (u32, u32, u32) {
        self.dims_on(n, NOMINAL_MULTIPROCESSORS)
    }

    /// The grid dimensions for a batch of `n` images on a device with
    /// `multiprocessors` SMs (only a split-K grid depends on it).
    pub fn dims_on(&self, n: u64, multiprocessors: u32) -> (u32, u32, u32) {
        let x = self.x_items.at(n).div_ceil(self.x_items_per_block.max(1));
        let z = self
            .split_k
            .map_or(self.z, |split| split.splits(n, multiprocessors));
        (x.clamp(1, MAX_ITEMS) as u32, self.y, z)
    }

    /// The largest batch whose items along x fit a signed 32-bit index:
    /// the kernels index a batch's rows (`n` x pixels) with `int`, and
    /// CUDA's grid stops at 2^31 - 1 blocks along x.
    pub fn max_batch(&self) -> u64 {
        match self.x_items.per_image {
            0 => MAX_ITEMS,
            per_image => MAX_ITEMS.saturating_sub(self.x_items.fixed) / per_image,
        }
    }
}

/// Most items (and blocks) along a grid's x: 2^31 - 1.
pub const MAX_ITEMS: u64 = i32::MAX as u64;

/// What a kernel computes, for the report and for people reading the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelRole {
    Forward,
    BackwardData,
    BackwardWeights,
    Head,
    Update,
}

impl KernelRole {
    /// The role as the plan's JSON spells it (`backward_data`, ...).
    pub fn name(self) -> &'static str {
        match self {
            KernelRole::Forward => "forward",
            KernelRole::BackwardData => "backward_data",
            KernelRole::BackwardWeights => "backward_weights",
            KernelRole::Head => "head",
            KernelRole::Update => "update",
        }
    }
}

/// One kernel of the module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelSpec {
    /// The `extern "C"` name in the `.cu` file.
    pub name: String,
    pub role: KernelRole,
    /// The fused group it belongs to (empty for module-wide kernels).
    pub group: String,
    /// Names of the plan layers it implements.
    pub layers: Vec<String>,
    /// 1-based `.net` lines of those layers (0: unknown).
    pub lines: Vec<usize>,
    pub grid: Grid,
    pub block: [u32; 3],
    /// Dynamic shared memory per block (static shared memory is in the code).
    pub dynamic_shared_bytes: u32,
    /// Static shared memory per block the code declares.
    pub static_shared_bytes: u32,
    /// Floating-point operations of one launch.
    pub flops: Extent,
    /// Bytes read and written in device memory by one launch (a lower bound:
    /// each tensor counted once).
    pub bytes: Extent,
    /// The implicit GEMM of a tiled kernel, for the FLOPs it executes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gemm: Option<GemmShape>,
}

/// The implicit GEMMs a tiled kernel runs: per part (one, or one per phase
/// of a strided convolution's backward-data kernel), `rows x cols` outputs
/// over a depth of `depth`, computed in block tiles of `tile_rows x
/// tile_cols x tile_depth`; `useful_flops` is what the layer needs (2 x its
/// multiply-adds). The tiles also multiply what they pad (rows, columns and
/// depth rounded up to whole tiles) and whatever zeros the operands hold
/// (taps that fall outside the output).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GemmShape {
    pub parts: Vec<GemmPart>,
    pub cols: u64,
    pub tile_rows: u64,
    pub tile_cols: u64,
    pub tile_depth: u64,
    pub useful_flops: Extent,
}

/// Rows and depth of one GEMM of a [`GemmShape`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GemmPart {
    pub rows: Extent,
    pub depth: Extent,
}

impl GemmShape {
    /// FLOPs the tiles execute over `n` images (2 per multiply-add).
    pub fn executed_flops(&self, n: u64) -> u64 {
        let up = |v: u64, t: u64| v.div_ceil(t.max(1)).saturating_mul(t.max(1));
        let cols = up(self.cols, self.tile_cols);
        self.parts
            .iter()
            .map(|part| {
                2u64.saturating_mul(up(part.rows.at(n), self.tile_rows))
                    .saturating_mul(cols)
                    .saturating_mul(up(part.depth.at(n), self.tile_depth))
            })
            .fold(0, u64::saturating_add)
    }
}

/// The ReLU rule argument of backward kernels.
pub const RULE_BACKPROP: i32 = 0;
pub const RULE_DECONVNET: i32 = 1;
pub const RULE_GUIDED: i32 = 2;

/// One kernel argument, resolved by the executor at launch time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arg {
    /// The device address of a buffer, plus an element offset.
    Buffer {
        name: String,
        offset: usize,
    },
    /// The number of images of the pass (`int`).
    Batch,
    /// The dropout stream key of plan layer `layer` for the step's seed
    /// (`unsigned long long`): `derive_key(seed, layer)`, as on the CPU.
    DropoutKey {
        layer: usize,
    },
    /// 1 in a training pass, 0 in inference and visualisation (`int`).
    Training,
    /// The ReLU rule of the pass (`int`, [`RULE_BACKPROP`] in training).
    Rule,
    /// An `int` constant.
    Int(i32),
    /// SGD hyper-parameters (`float`, `float`, `int`, `float`).
    LearningRate,
    Momentum,
    Nesterov,
    WeightDecay,
}

impl Arg {
    pub fn buffer(name: impl Into<String>) -> Self {
        Arg::Buffer {
            name: name.into(),
            offset: 0,
        }
    }
}

/// One launch of a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    /// Index into [`DevicePlan::kernels`].
    pub kernel: usize,
    pub args: Vec<Arg>,
}

/// Per plan layer: where its output lives and how to propagate a signal
/// back through it (the visualisation passes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerIo {
    pub name: String,
    /// The buffer holding the layer's output after an inference forward pass.
    pub output: String,
    /// How many launches of [`DevicePlan::infer`] produce that output.
    pub infer_launches: usize,
    /// The gradient buffer holding the signal at the layer's output.
    pub grad_output: String,
    /// The gradient buffer that receives the signal at the layer's input
    /// (the same buffer when the layer is the identity at inference).
    pub grad_input: String,
    /// Launches turning the signal at the output into the one at the input,
    /// with the pass's ReLU rule ([`Arg::Rule`]).
    pub visual_backward: Vec<Launch>,
    /// Launches a signal placed at the output needs before those (the
    /// activation's rule, where the kernels below take their gradient
    /// masked because in training the kernel above masks it); run only for
    /// the layer the signal starts at.
    pub signal_mask: Vec<Launch>,
}

/// How to run one model on a CUDA device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DevicePlan {
    pub model: String,
    pub model_hash: String,
    /// SHA-256 of the CUDA source, the key of the compiled-module cache.
    pub source_sha256: String,
    pub buffers: Vec<BufferSpec>,
    /// Parameter tensors in [`crate::Plan::params`] order.
    pub params: Vec<ParamSlot>,
    /// Total length of the flat parameter buffer.
    pub n_params: usize,
    pub kernels: Vec<KernelSpec>,
    /// Input upload target: a buffer of `n x H x W x C` floats.
    pub input: String,
    /// Labels (`int`, one per image) of a training batch.
    pub labels: String,
    /// Running sums, per batch slot, of the loss (`double`) and top-1 hits
    /// (`int`) of the training steps since the host last read them.
    pub loss: String,
    pub correct: String,
    /// Class probabilities (`n x classes`) after a forward pass.
    pub probs: String,
    /// The flat parameter, gradient and momentum buffers.
    pub param_buffer: String,
    pub grad_buffer: String,
    pub momentum_buffer: String,
    /// Training forward pass (dropout active), then the fused head.
    pub forward: Vec<Launch>,
    /// Training backward pass: gradients of every parameter.
    pub backward: Vec<Launch>,
    /// One SGD step over the flat parameter buffer.
    pub update: Vec<Launch>,
    /// Inference forward pass up to the probabilities.
    pub infer: Vec<Launch>,
    pub layers: Vec<LayerIo>,
}

impl DevicePlan {
    /// The largest batch every kernel can take ([`Grid::max_batch`]), and
    /// the kernel that sets it.
    pub fn max_batch(&self) -> (u64, Option<&KernelSpec>) {
        self.kernels
            .iter()
            .map(|kernel| (kernel.grid.max_batch(), Some(kernel)))
            .min_by_key(|(n, _)| *n)
            .unwrap_or((MAX_ITEMS, None))
    }
}

/// The generated source and its plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    pub source: String,
    pub plan: DevicePlan,
}

#[cfg(test)]
mod tests {
    use super::{Extent, GemmPart, GemmShape, Grid, KernelRole, SplitK, MAX_ITEMS};

    #[test]
    fn max_batch_keeps_rows_within_32_bits() {
        let grid = Grid {
            x_items: Extent {
                per_image: 15_625,
                fixed: 7,
            },
            x_items_per_block: 128,
            y: 1,
            z: 1,
            split_k: None,
        };
        let max = grid.max_batch();
        assert!(grid.x_items.at(max) <= MAX_ITEMS);
        assert!(grid.x_items.at(max + 1) > MAX_ITEMS);
        // Past it, CUDA's limit rather than a wrapped count.
        assert_eq!(grid.dims(u64::MAX / 20_000).0 as u64, MAX_ITEMS);
        let fixed = Grid {
            x_items: Extent::fixed(1000),
            ..grid
        };
        assert_eq!(fixed.max_batch(), MAX_ITEMS);
    }

    #[test]
    fn split_k_fills_the_device_within_its_bounds() {
        // All-CNN-C's conv2 weight gradient: 14 x 2 tiles, 32 x 32 output
        // pixels per image, slices of at least 64 rows, at most 24.
        let split = SplitK {
            tiles: 28,
            k_per_image: 1024,
            min_k: 64,
            max: 24,
        };
        // 264 blocks wanted on 132 SMs: ceil(264 / 28) = 10 splits.
        assert_eq!(split.splits(128, 132), 10);
        // More SMs, more splits, up to the buffer's bound.
        assert_eq!(split.splits(128, 170), 13);
        assert_eq!(split.splits(128, 1000), 24);
        // A batch of one image has 1024 rows: 16 slices of 64 at most.
        assert_eq!(split.splits(1, 1000), 16);
        assert_eq!(split.splits(0, 132), 1);
        let grid = Grid {
            x_items: Extent::fixed(864),
            x_items_per_block: 64,
            y: 2,
            z: 10,
            split_k: Some(split),
        };
        assert_eq!(grid.dims(128), (14, 2, 10));
        assert_eq!(grid.dims_on(2, 132), (14, 2, 10));
        assert_eq!(grid.dims_on(1, 16), (14, 2, 2));
    }

    #[test]
    fn executed_flops_count_whole_tiles() {
        // All-CNN-C's conv1 forward: 1024 pixels per image x 96 channels,
        // depth 27, in 128 x 64 x 16 tiles: columns pad to 128, depth to 32.
        let gemm = GemmShape {
            parts: vec![GemmPart {
                rows: Extent::per_image(1024),
                depth: Extent::fixed(27),
            }],
            cols: 96,
            tile_rows: 128,
            tile_cols: 64,
            tile_depth: 16,
            useful_flops: Extent::per_image(2 * 1024 * 96 * 27),
        };
        assert_eq!(gemm.executed_flops(1), 2 * 1024 * 128 * 32);
        assert_eq!(gemm.executed_flops(3), 2 * 3072 * 128 * 32);
        // Phases add up: conv3's backward data at stride 2 (16 x 16 input
        // pixels each, taps 4, 2, 2, 1 of 96 channels).
        let phases = GemmShape {
            parts: [4, 2, 2, 1]
                .map(|taps| GemmPart {
                    rows: Extent::per_image(256),
                    depth: Extent::fixed(taps * 96),
                })
                .to_vec(),
            cols: 96,
            tile_rows: 128,
            tile_cols: 96,
            tile_depth: 16,
            useful_flops: Extent::per_image(2 * 256 * 96 * 9 * 96),
        };
        assert_eq!(phases.executed_flops(128), phases.useful_flops.at(128));
    }

    #[test]
    fn role_names_are_the_plan_json_spelling() {
        for role in [
            KernelRole::Forward,
            KernelRole::BackwardData,
            KernelRole::BackwardWeights,
            KernelRole::Head,
            KernelRole::Update,
        ] {
            assert_eq!(serde_json::to_value(role).unwrap(), role.name());
        }
    }
}
