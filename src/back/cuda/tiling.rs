//! Launch geometry: block size, GEMM tile shapes, split-K counts and the
//! shared memory a tile needs.
//!
//! The choices are tuned for [`NOMINAL_BATCH`] images on an H100: tiles get
//! wider only while the grid still has [`TARGET_BLOCKS`] blocks, and the
//! weight gradient is split along K until it does. Launch grids scale with
//! the real batch; the tile sizes are compile-time constants of the source,
//! so they never depend on it.

use super::Precision;
use plan::device::{Extent, Grid};

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

/// Per-thread tile `(rows, columns)` of a GEMM with `rows_nominal` rows at
/// the nominal batch and `cols` columns: wide tiles when the grid stays
/// large enough to fill the GPU.
pub fn tile(rows_nominal: u64, cols: u64) -> (u64, u64) {
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

/// Split-K slices of a weight gradient with `tiles` output tiles and K =
/// `k_nominal` at the nominal batch: enough to reach [`TARGET_BLOCKS`], at
/// most [`MAX_SPLITS`], and at least four K steps per slice.
pub fn weight_splits(tiles: u64, k_nominal: u64) -> u64 {
    TARGET_BLOCKS
        .div_ceil(tiles)
        .min(MAX_SPLITS)
        .min(k_nominal.div_ceil(4 * TILE_K))
        .max(1)
}

/// Static shared memory of a GEMM kernel with `16 tm x 16 tn` tiles: the
/// fp32 templates hold `As[BK][BM + 1]` and `Bs[BK][BN + 1]`, the
/// tensor-core ones `As[BM][BK + 4]` and `Bs[BK][BN + 8]` (fp32 in both
/// TF32 and BF16: operands are rounded when fragments load). Checked
/// against ptxas's report by tests/cuda_codegen.rs.
pub fn shared_bytes(precision: Precision, tm: u64, tn: u64) -> u32 {
    let (bm, bn) = (16 * tm, 16 * tn);
    let floats = match precision {
        Precision::Fp32 => TILE_K * (bm + 1) + TILE_K * (bn + 1),
        Precision::Tf32 | Precision::Bf16 => bm * (TILE_K + 4) + TILE_K * (bn + 8),
    };
    (4 * floats) as u32
}

/// One thread per item, `items` per image.
pub fn elementwise(items_per_image: u64) -> Grid {
    Grid {
        x_items: Extent::per_image(items_per_image),
        x_items_per_block: BLOCK_THREADS as u64,
        y: 1,
        z: 1,
    }
}
