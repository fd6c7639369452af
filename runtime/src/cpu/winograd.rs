//! Winograd F(4x4, 3x3) for 3x3 stride-1 convolutions, channels-last.
//!
//! Lavin and Gray ("Fast algorithms for convolutional neural networks", CVPR
//! 2016) compute a 4x4 output tile of a 3x3 correlation from a 6x6 input
//! tile with 36 multiplications per channel pair instead of 144:
//!
//! `Y = A^T [(G g G^T) ⊙ (B^T d B)] A`.
//!
//! Over channels the elementwise product becomes 36 independent matrix
//! products, one per transform point `p`: `M_p[tiles x C_out] =
//! V_p[tiles x C_in] * U_p[C_in x C_out]`, so the multiply count of the
//! layer falls fourfold and the work stays GEMM-shaped. The same kernel runs
//! the backward data pass (a correlation of the output signal with the
//! flipped, transposed kernel), and the weight gradient is
//! `dW = G^T [sum over tiles of V_p^T (A dY A^T)_p] G`.
//!
//! Layout: a chunk of tiles stores its transformed tiles tile-major,
//! `[tile][point][channel]`, so each tile's transform writes one contiguous
//! block; the products read `V_p` with a row stride of `36 * C`.
//!
//! Invariant: chunk sizes depend on the shapes only and every product runs on
//! one thread; the weight gradient's chunks are processed in order, each
//! point's sum owned by one task, so results do not depend on the thread
//! count. The transforms use the points 0, ±1, ±2, ∞; against an `f64`
//! direct convolution the error stays below `2e-5` of the result's largest
//! magnitude in the tests (im2col: `1e-6`), harmless for training.
//!
//! The products are f32 whatever the model's `--precision`: the transforms
//! scale values up to about 100-fold before they meet in the products and
//! cancel after, so bf16 operands here (2^-9 relative rounding) left errors
//! of 5-10% of a layer's largest output when tried. In f32 this path needs
//! a quarter of direct convolution's multiply-adds, which beats bf16's
//! doubled rate as well.

use rayon::prelude::*;

use super::matmul::{matmul, matmul_strided, Operands, View};
use super::scratch::with_scratch;
use super::simd::{lanes_dispatch, load_lanes, store_lanes, Lanes, LANES};
use crate::plan::{Activation, Shape};

/// Output tile side.
const TILE: usize = 4;
/// Input tile side (`TILE + 3 - 1`).
const ALPHA: usize = 6;
/// Transform points per tile (`ALPHA^2`).
pub(crate) const POINTS: usize = ALPHA * ALPHA;
/// Target tiles per chunk of the forward pass (per thread). Small enough
/// that a chunk's transformed tiles and products (32 tiles x 36 points x
/// (C_in + C_out) values, 0.9 MB at 96 channels) stay in a core's L2: 32
/// trained All-CNN-C 8% faster than 64 on the 2-core EPYC (cpu_speed).
const FORWARD_TILES: usize = 32;
/// Tiles per chunk of the weight gradient (shared by all threads); 128
/// rather than 512 keeps the transformed chunk in cache for the 36
/// products (measured with FORWARD_TILES above).
const WEIGHT_GRAD_TILES: usize = 128;
/// Tiles per parallel task of the weight gradient's transforms.
const TRANSFORM_TASK_TILES: usize = 8;

/// A stride-1 3x3 correlation: `out[n, y, x, o] = sum over kh, kw, c of
/// in[n, y + kh - pad_top, x + kw - pad_left, c] * w[kh, kw, c, o]`, with
/// zeros outside the input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Corr3x3 {
    pub in_shape: Shape,
    pub out_shape: Shape,
    pub pad_top: usize,
    pub pad_left: usize,
}

/// Where one tile lies.
#[derive(Debug, Clone, Copy)]
struct TilePos {
    image: usize,
    /// First output row and column of the tile.
    y: usize,
    x: usize,
}

impl Corr3x3 {
    fn tiles_h(&self) -> usize {
        self.out_shape.h.div_ceil(TILE)
    }

    fn tiles_w(&self) -> usize {
        self.out_shape.w.div_ceil(TILE)
    }

    fn tiles_per_image(&self) -> usize {
        self.tiles_h() * self.tiles_w()
    }

    fn tile(&self, index: usize) -> TilePos {
        let per_image = self.tiles_per_image();
        let (image, rest) = (index / per_image, index % per_image);
        TilePos {
            image,
            y: rest / self.tiles_w() * TILE,
            x: rest % self.tiles_w() * TILE,
        }
    }

    /// First global output row (`image * OH + y`) of tile row `row`.
    fn first_out_row(&self, row: usize) -> usize {
        let (image, ty) = (row / self.tiles_h(), row % self.tiles_h());
        image * self.out_shape.h + ty * TILE
    }

    /// One past the last global output row of tile row `row`.
    fn end_out_row(&self, row: usize) -> usize {
        let (image, ty) = (row / self.tiles_h(), row % self.tiles_h());
        image * self.out_shape.h + (ty * TILE + TILE).min(self.out_shape.h)
    }
}

// The one-dimensional transforms read vectors `src[0], src[s], src[2 s], ...`
// and write `dst[0], dst[d], ...`; each vector holds 16 channels. Working in
// place through strides (instead of returning arrays) keeps the values in
// registers or on the stack.

/// `B^T x`: six vectors to six.
#[inline(always)]
fn bt6<L: Lanes>(src: &[L], s: usize, dst: &mut [L], d: usize) {
    let (x0, x1, x2) = (src[0], src[s], src[2 * s]);
    let (x3, x4, x5) = (src[3 * s], src[4 * s], src[5 * s]);
    dst[0] = x0 * 4.0 - x2 * 5.0 + x4;
    dst[d] = (x3 + x4) - (x1 + x2) * 4.0;
    dst[2 * d] = (x4 - x3) + (x1 - x2) * 4.0;
    dst[3 * d] = (x4 - x2) + (x3 - x1) * 2.0;
    dst[4 * d] = (x4 - x2) - (x3 - x1) * 2.0;
    dst[5 * d] = x1 * 4.0 - x3 * 5.0 + x5;
}

/// `A^T x`: six vectors to four.
#[inline(always)]
fn at4<L: Lanes>(src: &[L], s: usize, dst: &mut [L], d: usize) {
    let (x0, x1, x2) = (src[0], src[s], src[2 * s]);
    let (x3, x4, x5) = (src[3 * s], src[4 * s], src[5 * s]);
    let (s12, d12, s34, d34) = (x1 + x2, x1 - x2, x3 + x4, x3 - x4);
    dst[0] = x0 + s12 + s34;
    dst[d] = d12 + d34 * 2.0;
    dst[2 * d] = s12 + s34 * 4.0;
    dst[3 * d] = d12 + d34 * 8.0 + x5;
}

/// `A x`: four vectors to six (the adjoint of [`at4`]).
#[inline(always)]
fn a6<L: Lanes>(src: &[L], s: usize, dst: &mut [L], d: usize) {
    let (x0, x1, x2, x3) = (src[0], src[s], src[2 * s], src[3 * s]);
    let (s02, s13) = (x0 + x2, x1 + x3);
    let (e02, e13) = (x0 + x2 * 4.0, x1 * 2.0 + x3 * 8.0);
    dst[0] = x0;
    dst[d] = s02 + s13;
    dst[2 * d] = s02 - s13;
    dst[3 * d] = e02 + e13;
    dst[4 * d] = e02 - e13;
    dst[5 * d] = x3;
}

/// `G x`: three vectors to six.
#[inline(always)]
fn g6<L: Lanes>(src: &[L], s: usize, dst: &mut [L], d: usize) {
    let (x0, x1, x2) = (src[0], src[s], src[2 * s]);
    dst[0] = x0 * (1.0 / 4.0);
    dst[d] = (x0 + x1 + x2) * (-1.0 / 6.0);
    dst[2 * d] = (x0 - x1 + x2) * (-1.0 / 6.0);
    dst[3 * d] = x0 * (1.0 / 24.0) + x1 * (1.0 / 12.0) + x2 * (1.0 / 6.0);
    dst[4 * d] = x0 * (1.0 / 24.0) - x1 * (1.0 / 12.0) + x2 * (1.0 / 6.0);
    dst[5 * d] = x2;
}

/// `G^T x`: six vectors to three (the adjoint of [`g6`]).
#[inline(always)]
fn gt3<L: Lanes>(src: &[L], s: usize, dst: &mut [L], d: usize) {
    let (x0, x1, x2) = (src[0], src[s], src[2 * s]);
    let (x3, x4, x5) = (src[3 * s], src[4 * s], src[5 * s]);
    dst[0] = x0 * (1.0 / 4.0) - (x1 + x2) * (1.0 / 6.0) + (x3 + x4) * (1.0 / 24.0);
    dst[d] = (x2 - x1) * (1.0 / 6.0) + (x3 - x4) * (1.0 / 12.0);
    dst[2 * d] = (x3 + x4 - x1 - x2) * (1.0 / 6.0) + x5;
}

/// `L X R^T` of the grid `$x` of vectors (row-major, `$cols` wide) into
/// `$out` (row-major, `$out_cols` wide), where `$left` maps each column of
/// `$x` and `$right` each row of the intermediate `$mid`. A macro rather than
/// a function taking the transforms as arguments, so that the calls stay
/// direct and inline into the AVX-512 copy.
macro_rules! two_sided {
    ($x:expr, $cols:expr, $left:ident, $right:ident, $out_cols:expr, $out:expr, $mid:expr) => {{
        let (x, out, mid) = (&$x[..], &mut $out[..], &mut $mid[..]);
        for j in 0..$cols {
            $left(&x[j..], $cols, &mut mid[j..], $cols);
        }
        for i in 0..out.len() / $out_cols {
            $right(&mid[i * $cols..], 1, &mut out[i * $out_cols..], 1);
        }
    }};
}

lanes_dispatch! {
    /// Transforms the input tiles `first_tile..` into `v` (`tiles x 36 x C`,
    /// as many tiles as `v` holds): `V = B^T d B` per channel.
    fn input_transform(corr: &Corr3x3, input: &[f32], first_tile: usize, v: &mut [f32]) {
        let (c, h, w) = (corr.in_shape.c, corr.in_shape.h as isize, corr.in_shape.w as isize);
        let mut d = [L::zero(); POINTS];
        let mut out = [L::zero(); POINTS];
        let mut mid = [L::zero(); POINTS];
        for (t, v_t) in v.chunks_exact_mut(POINTS * c).enumerate() {
            let pos = corr.tile(first_tile + t);
            let top = pos.y as isize - corr.pad_top as isize;
            let left = pos.x as isize - corr.pad_left as isize;
            let mut offsets = [usize::MAX; POINTS];
            for a in 0..ALPHA {
                let y = top + a as isize;
                if y < 0 || y >= h {
                    continue;
                }
                for b in 0..ALPHA {
                    let x = left + b as isize;
                    if x >= 0 && x < w {
                        let pixel = (pos.image * h as usize + y as usize) * w as usize + x as usize;
                        offsets[a * ALPHA + b] = pixel * c;
                    }
                }
            }
            for c0 in (0..c).step_by(LANES) {
                let width = LANES.min(c - c0);
                for (lane, &offset) in d.iter_mut().zip(&offsets) {
                    *lane = if offset == usize::MAX {
                        L::zero()
                    } else {
                        load_lanes(&input[offset + c0..], width)
                    };
                }
                two_sided!(d, ALPHA, bt6, bt6, ALPHA, out, mid);
                for (p, &lane) in out.iter().enumerate() {
                    store_lanes(lane, &mut v_t[p * c + c0..], width);
                }
            }
        }
    }
}

lanes_dispatch! {
    /// Transforms the output signal of tiles `first_tile..` into `dm`
    /// (`tiles x 36 x C_out`): `A dY A^T` per channel, zero outside the map.
    fn output_grad_transform(corr: &Corr3x3, grad_out: &[f32], first_tile: usize, dm: &mut [f32]) {
        let (c, h, w) = (corr.out_shape.c, corr.out_shape.h, corr.out_shape.w);
        let mut y = [L::zero(); TILE * TILE];
        let mut out = [L::zero(); POINTS];
        let mut mid = [L::zero(); POINTS];
        for (t, dm_t) in dm.chunks_exact_mut(POINTS * c).enumerate() {
            let pos = corr.tile(first_tile + t);
            for c0 in (0..c).step_by(LANES) {
                let width = LANES.min(c - c0);
                for (k, lane) in y.iter_mut().enumerate() {
                    let (oy, ox) = (pos.y + k / TILE, pos.x + k % TILE);
                    *lane = if oy < h && ox < w {
                        load_lanes(&grad_out[((pos.image * h + oy) * w + ox) * c + c0..], width)
                    } else {
                        L::zero()
                    };
                }
                two_sided!(y, TILE, a6, a6, ALPHA, out, mid);
                for (p, &lane) in out.iter().enumerate() {
                    store_lanes(lane, &mut dm_t[p * c + c0..], width);
                }
            }
        }
    }
}

lanes_dispatch! {
    /// Turns the products `m` (`tiles x 36 x C_out`) of tiles `first_tile..`
    /// into output values `act(A^T m A + bias)`, written into `out`, the
    /// output rows from global row `first_row` on.
    fn output_transform(
        corr: &Corr3x3,
        m: &[f32],
        first_tile: usize,
        bias: Option<&[f32]>,
        act: Activation,
        out: &mut [f32],
        first_row: usize,
    ) {
        let (c, h, w) = (corr.out_shape.c, corr.out_shape.h, corr.out_shape.w);
        let mut y = [L::zero(); TILE * TILE];
        let mut mm = [L::zero(); POINTS];
        let mut mid = [L::zero(); POINTS];
        for (t, m_t) in m.chunks_exact(POINTS * c).enumerate() {
            let pos = corr.tile(first_tile + t);
            for c0 in (0..c).step_by(LANES) {
                let width = LANES.min(c - c0);
                for (p, lane) in mm.iter_mut().enumerate() {
                    *lane = load_lanes(&m_t[p * c + c0..], width);
                }
                two_sided!(mm, ALPHA, at4, at4, TILE, y, mid);
                let b: L = bias.map_or(L::zero(), |bias| load_lanes(&bias[c0..], width));
                for (k, &lane) in y.iter().enumerate() {
                    let (oy, ox) = (pos.y + k / TILE, pos.x + k % TILE);
                    if oy >= h || ox >= w {
                        continue;
                    }
                    let value = match act {
                        Activation::None => lane + b,
                        Activation::Relu => (lane + b).relu(),
                        Activation::LeakyRelu { slope } => (lane + b).leaky_relu(slope),
                    };
                    let row = pos.image * h + oy - first_row;
                    store_lanes(value, &mut out[(row * w + ox) * c + c0..], width);
                }
            }
        }
    }
}

lanes_dispatch! {
    /// `u[p][a][b] = (G g G^T)_p` for `g[kh][kw] = weight[kh][kw][a][b]`
    /// (`weight` is `3 x 3 x ca x cb`, `u` is `36 x ca x cb`).
    fn weight_transform(weight: &[f32], ca: usize, cb: usize, u: &mut [f32]) {
        let plane = ca * cb;
        let mut g = [L::zero(); 9];
        let mut out = [L::zero(); POINTS];
        let mut mid = [L::zero(); POINTS];
        for a in 0..ca {
            for b0 in (0..cb).step_by(LANES) {
                let width = LANES.min(cb - b0);
                let base = a * cb + b0;
                for (k, lane) in g.iter_mut().enumerate() {
                    *lane = load_lanes(&weight[k * plane + base..], width);
                }
                two_sided!(g, 3, g6, g6, ALPHA, out, mid);
                for (p, &lane) in out.iter().enumerate() {
                    store_lanes(lane, &mut u[p * plane + base..], width);
                }
            }
        }
    }
}

lanes_dispatch! {
    /// The adjoint of [`weight_transform`]: `grad[kh][kw][a][b] = (G^T du G)`
    /// from `du` (`36 x ca x cb`).
    fn weight_grad_transform(du: &[f32], ca: usize, cb: usize, grad: &mut [f32]) {
        let plane = ca * cb;
        let mut z = [L::zero(); POINTS];
        let mut out = [L::zero(); 9];
        let mut mid = [L::zero(); POINTS];
        for a in 0..ca {
            for b0 in (0..cb).step_by(LANES) {
                let width = LANES.min(cb - b0);
                let base = a * cb + b0;
                for (p, lane) in z.iter_mut().enumerate() {
                    *lane = load_lanes(&du[p * plane + base..], width);
                }
                two_sided!(z, ALPHA, gt3, gt3, 3, out, mid);
                for (k, &lane) in out.iter().enumerate() {
                    store_lanes(lane, &mut grad[k * plane + base..], width);
                }
            }
        }
    }
}

/// Transformed weights of a forward correlation: `u` (`36 x C_in x C_out`)
/// from HWIO `weight`.
pub(crate) fn transform_weights(weight: &[f32], c_in: usize, c_out: usize, u: &mut [f32]) {
    assert_eq!(weight.len(), 9 * c_in * c_out, "winograd weight size");
    assert_eq!(
        u.len(),
        POINTS * c_in * c_out,
        "winograd transformed weight size"
    );
    weight_transform(weight, c_in, c_out, u);
}

/// Transformed weights of the backward data correlation: the kernel rotated
/// by 180 degrees with input and output channels swapped, so `u` is
/// `36 x C_out x C_in`. `flipped` (`9 x C_in x C_out` values) is scratch.
pub(crate) fn transform_weights_flipped(
    weight: &[f32],
    c_in: usize,
    c_out: usize,
    flipped: &mut [f32],
    u: &mut [f32],
) {
    assert_eq!(weight.len(), 9 * c_in * c_out, "winograd weight size");
    let plane = c_in * c_out;
    for k in 0..9 {
        let src = &weight[(8 - k) * plane..(9 - k) * plane];
        let dst = &mut flipped[k * plane..(k + 1) * plane];
        for (o, dst_row) in dst.chunks_exact_mut(c_in).enumerate() {
            for (i, d) in dst_row.iter_mut().enumerate() {
                *d = src[i * c_out + o];
            }
        }
    }
    assert_eq!(u.len(), POINTS * plane, "winograd transformed weight size");
    weight_transform(flipped, c_out, c_in, u);
}

/// The correlation of `n` images: `output = act(corr(input, u) + bias)`,
/// with `u` from [`transform_weights`] (or its flipped form).
pub(crate) fn forward(
    corr: &Corr3x3,
    n: usize,
    input: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    output: &mut [f32],
) {
    let (c_in, c_out) = (corr.in_shape.c, corr.out_shape.c);
    assert_eq!(input.len(), n * corr.in_shape.len(), "winograd input size");
    assert_eq!(
        output.len(),
        n * corr.out_shape.len(),
        "winograd output size"
    );
    assert_eq!(u.len(), POINTS * c_in * c_out, "winograd weight size");
    let tiles_w = corr.tiles_w();
    let tile_rows = n * corr.tiles_h();
    let rows_per_chunk = (FORWARD_TILES / tiles_w).max(1);
    let row_len = corr.out_shape.w * c_out;

    // Chunks of whole tile rows own contiguous runs of output rows.
    let mut chunks = Vec::with_capacity(tile_rows.div_ceil(rows_per_chunk));
    let mut rest = output;
    for first in (0..tile_rows).step_by(rows_per_chunk) {
        let last = (first + rows_per_chunk).min(tile_rows) - 1;
        let first_row = corr.first_out_row(first);
        let rows = corr.end_out_row(last) - first_row;
        let (head, tail) = rest.split_at_mut(rows * row_len);
        chunks.push((first, last + 1 - first, first_row, head));
        rest = tail;
    }

    chunks
        .into_par_iter()
        .for_each(|(first, count, first_row, out)| {
            let tiles = count * tiles_w;
            let first_tile = first * tiles_w;
            with_scratch(tiles * POINTS * (c_in + c_out), |buffer| {
                let (v, m) = buffer.split_at_mut(tiles * POINTS * c_in);
                input_transform(corr, input, first_tile, v);
                for p in 0..POINTS {
                    let lhs = View {
                        data: &v[p * c_in..],
                        rows: tiles,
                        cols: c_in,
                        rs: POINTS * c_in,
                        cs: 1,
                    };
                    let rhs =
                        View::row_major(&u[p * c_in * c_out..(p + 1) * c_in * c_out], c_in, c_out);
                    matmul_strided(
                        &mut m[p * c_out..],
                        POINTS * c_out,
                        lhs,
                        rhs,
                        false,
                        Operands::F32,
                    );
                }
                output_transform(corr, m, first_tile, bias, act, out, first_row);
            });
        });
}

/// Values of workspace [`weight_grad`] needs.
pub(crate) fn weight_grad_workspace(corr: &Corr3x3) -> usize {
    let (c_in, c_out) = (corr.in_shape.c, corr.out_shape.c);
    POINTS * c_in * c_out + WEIGHT_GRAD_TILES * POINTS * (c_in + c_out)
}

/// The weight gradient of the correlation: `grad_weight` (HWIO, overwritten)
/// from the forward `input` and the signal at the output `grad_out`.
/// `workspace` holds [`weight_grad_workspace`] values.
pub(crate) fn weight_grad(
    corr: &Corr3x3,
    n: usize,
    input: &[f32],
    grad_out: &[f32],
    grad_weight: &mut [f32],
    workspace: &mut [f32],
) {
    let (c_in, c_out) = (corr.in_shape.c, corr.out_shape.c);
    assert_eq!(input.len(), n * corr.in_shape.len(), "winograd input size");
    assert_eq!(
        grad_out.len(),
        n * corr.out_shape.len(),
        "winograd grad_out size"
    );
    assert_eq!(
        grad_weight.len(),
        9 * c_in * c_out,
        "winograd grad_weight size"
    );
    let plane = c_in * c_out;
    let (du, rest) = workspace.split_at_mut(POINTS * plane);
    let (v, rest) = rest.split_at_mut(WEIGHT_GRAD_TILES * POINTS * c_in);
    let dm = &mut rest[..WEIGHT_GRAD_TILES * POINTS * c_out];
    du.fill(0.0);

    let total = n * corr.tiles_per_image();
    for first_tile in (0..total).step_by(WEIGHT_GRAD_TILES) {
        let tiles = WEIGHT_GRAD_TILES.min(total - first_tile);
        let v = &mut v[..tiles * POINTS * c_in];
        let dm = &mut dm[..tiles * POINTS * c_out];
        v.par_chunks_mut(TRANSFORM_TASK_TILES * POINTS * c_in)
            .zip(dm.par_chunks_mut(TRANSFORM_TASK_TILES * POINTS * c_out))
            .enumerate()
            .for_each(|(task, (v, dm))| {
                let first = first_tile + task * TRANSFORM_TASK_TILES;
                input_transform(corr, input, first, v);
                output_grad_transform(corr, grad_out, first, dm);
            });
        let (v, dm) = (&*v, &*dm);
        du.par_chunks_mut(plane).enumerate().for_each(|(p, du_p)| {
            let lhs = View {
                data: &v[p * c_in..],
                rows: c_in,
                cols: tiles,
                rs: 1,
                cs: POINTS * c_in,
            };
            let rhs = View {
                data: &dm[p * c_out..],
                rows: tiles,
                cols: c_out,
                rs: POINTS * c_out,
                cs: 1,
            };
            matmul(du_p, lhs, rhs, true, Operands::F32);
        });
    }
    weight_grad_transform(du, c_in, c_out, grad_weight);
}
