//! Launch geometry: block size, GEMM tile shapes, split-K counts and the
//! shared memory a tile needs.
//!
//! The choices are tuned for [`NOMINAL_BATCH`] images on an H100: tiles get
//! wider only while the grid still has [`TARGET_BLOCKS`] blocks. Launch
//! grids scale with the real batch; the tile sizes are compile-time
//! constants of the source, so they never depend on it. The weight
//! gradient's split-K count is chosen per launch from the real batch and
//! the device's SM count ([`SplitK`]), within the bound its partial-sum
//! buffer is sized for ([`weight_split_k`]).

use super::Precision;
use plan::device::{Extent, Grid, SplitK};

/// Threads of every block.
pub const BLOCK_THREADS: u32 = 256;
/// Blocks that fill an H100 twice (132 SMs): the split-K and tile-size target.
pub const TARGET_BLOCKS: u64 = 264;
/// The batch size tile choices are tuned for (the launch grids scale with
/// the real batch).
pub const NOMINAL_BATCH: u64 = 128;
/// Most split-K slices of a weight gradient.
pub const MAX_SPLITS: u64 = 64;
/// The most SMs a weight gradient's split-K grid fills two blocks each of:
/// its partial-sum buffer holds that many slices (a larger GPU gets the
/// same splits as this one).
pub const MAX_MULTIPROCESSORS: u64 = 192;
/// Depth of one K step of the GEMM tiles (the prelude's `BK`).
pub const TILE_K: u64 = 16;

/// Per-thread tile `(rows, columns)` of a GEMM with `rows_nominal` rows at
/// the nominal batch and `cols` columns: wide tiles when the grid stays
/// large enough to fill the GPU, and columns in as few padded ones as 64-
/// or 96-wide blocks allow.
pub fn tile(rows_nominal: u64, cols: u64) -> (u64, u64) {
    let tn = if cols >= 64 {
        // 64 or 96 columns a block, whichever pads the columns less (96
        // and 288 channels fit 96 exactly, where 64-wide tiles would
        // multiply a third more; 64, 128 and 192 fit 64), 64 on a tie.
        if cols.div_ceil(96) * 96 < cols.div_ceil(64) * 64 {
            6
        } else {
            4
        }
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

/// Per-thread tile of a weight-gradient GEMM with `rows` rows (the
/// weights' taps x input channels) and `cols` output channels: as [`tile`],
/// but at most 64 columns wide in fp32, where the wider tile's 6 more
/// accumulators per row (with the bias sums and the input gather's
/// indices) exceed the 128 registers two blocks per SM allow: ptxas spilled
/// 68 bytes in All-CNN-C's conv1-3 weight gradients (sm_90, NVRTC 13.0).
pub fn weights_tile(precision: Precision, rows: u64, cols: u64) -> (u64, u64) {
    let (tm, tn) = tile(rows, cols);
    match precision {
        Precision::Fp32 => (tm, tn.min(4)),
        Precision::Tf32 | Precision::Bf16 => (tm, tn),
    }
}

/// The split-K rule of a weight gradient with `tiles` output tiles and
/// `k_per_image` rows of K per image (output pixels): two blocks per SM,
/// at least four K steps per slice, at most [`MAX_SPLITS`] slices and as
/// many as [`MAX_MULTIPROCESSORS`] SMs need.
pub fn weight_split_k(tiles: u64, k_per_image: u64) -> SplitK {
    SplitK {
        tiles,
        k_per_image,
        min_k: 4 * TILE_K,
        max: (2 * MAX_MULTIPROCESSORS)
            .div_ceil(tiles.max(1))
            .clamp(1, MAX_SPLITS) as u32,
    }
}

/// Static shared memory of a GEMM kernel with `16 tm x 16 tn` tiles: the
/// fp32 templates hold `As[BK][BM + 1]` and `Bs[BK][BN + 1]` floats, the
/// tensor-core ones the prelude's `MmaTiles`: TF32 `a[BM][BK + 4]` and
/// `b[BN][BK + 4]` in 32-bit words, BF16 `a[BM][BK + 8]` and
/// `b[BN][BK + 8]` in 16-bit halves (operands converted as they are
/// stored). Checked against ptxas's report by tests/cuda_codegen.rs.
pub fn shared_bytes(precision: Precision, tm: u64, tn: u64) -> u32 {
    let (bm, bn) = (16 * tm, 16 * tn);
    let bytes = match precision {
        Precision::Fp32 => 4 * (TILE_K * (bm + 1) + TILE_K * (bn + 1)),
        Precision::Tf32 => 4 * (bm + bn) * (TILE_K + 4),
        Precision::Bf16 => 2 * (bm + bn) * (TILE_K + 8),
    };
    bytes as u32
}

/// Static shared memory of a weight-gradient kernel with `16 tm x 16 tn`
/// tiles: the GEMM's tiles, the fix-up's flag and, in the tensor-core
/// templates with a bias, an fp32 copy of the output-gradient tile for the
/// bias sums (`DyCopy::dy[BN][BK + 4]`; without a bias its one-row stand-in is
/// never used and ptxas drops it).
pub fn weight_gradient_shared_bytes(precision: Precision, tm: u64, tn: u64, bias: bool) -> u32 {
    let dy_copy = match precision {
        Precision::Tf32 | Precision::Bf16 if bias => 4 * (TILE_K + 4) * 16 * tn,
        _ => 0,
    };
    shared_bytes(precision, tm, tn) + dy_copy as u32 + FIXUP_SHARED_BYTES
}

/// Static shared memory of the weight-gradient fix-up on top of the GEMM
/// tiles: its 4-byte `last_arrival` flag, which takes 16 since ptxas
/// rounds a kernel's static shared memory up to a multiple of 16 bytes
/// (the tiles' bytes are one already).
const FIXUP_SHARED_BYTES: u32 = 16;

/// One thread per item, `items` per image.
pub fn elementwise(items_per_image: u64) -> Grid {
    Grid {
        x_items: Extent::per_image(items_per_image),
        x_items_per_block: BLOCK_THREADS as u64,
        y: 1,
        z: 1,
        split_k: None,
    }
}

#[cfg(test)]
mod tests {
    use super::tile;

    #[test]
    fn column_tiles_fit_the_channel_counts() {
        // All-CNN-C's channel counts: 96 in one 96-wide tile, 192 in three
        // 64-wide ones, 10 in one 16-wide tile.
        assert_eq!(tile(128 * 1024, 96).1, 6);
        assert_eq!(tile(128 * 64, 192).1, 4);
        assert_eq!(tile(128 * 64, 128).1, 4);
        assert_eq!(tile(128 * 64, 288).1, 6);
        assert_eq!(tile(128 * 64, 10).1, 1);
        for cols in 1..1024u64 {
            let (_, tn) = tile(1 << 20, cols);
            let padded = cols.div_ceil(16 * tn) * 16 * tn;
            if cols >= 64 {
                assert!(padded <= cols.div_ceil(64) * 64, "{cols} columns");
            }
        }
    }
}
