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
//! count. The transforms use the points 0, ±1, ±2, ∞; their rounding error
//! stays below about `1e-5` relative for unit-scale data.

use rayon::prelude::*;

use super::matmul::{matmul, matmul_strided, View};
use super::scratch::with_scratch;
use super::simd::avx512_dispatch;
use crate::plan::{Activation, Shape};

/// Output tile side.
const TILE: usize = 4;
/// Input tile side (`TILE + 3 - 1`).
const ALPHA: usize = 6;
/// Transform points per tile (`ALPHA^2`).
pub(crate) const POINTS: usize = ALPHA * ALPHA;
/// Channels processed together by the transforms (one AVX-512 register).
const LANES: usize = 16;
/// Target tiles per chunk of the forward pass (per thread).
const FORWARD_TILES: usize = 256;
/// Tiles per chunk of the weight gradient (shared by all threads).
const WEIGHT_GRAD_TILES: usize = 512;
/// Tiles per parallel task of the weight gradient's transforms.
const TRANSFORM_TASK_TILES: usize = 8;

type Lane = [f32; LANES];
const ZERO: Lane = [0.0; LANES];

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

/// `B^T x` for one column of six lanes.
#[inline(always)]
fn bt6(x: &[Lane; 6]) -> [Lane; 6] {
    let mut r = [ZERO; 6];
    for l in 0..LANES {
        let (x0, x1, x2, x3, x4, x5) = (x[0][l], x[1][l], x[2][l], x[3][l], x[4][l], x[5][l]);
        r[0][l] = 4.0 * x0 - 5.0 * x2 + x4;
        r[1][l] = (x3 + x4) - 4.0 * (x1 + x2);
        r[2][l] = (x4 - x3) + 4.0 * (x1 - x2);
        r[3][l] = (x4 - x2) + 2.0 * (x3 - x1);
        r[4][l] = (x4 - x2) - 2.0 * (x3 - x1);
        r[5][l] = 4.0 * x1 - 5.0 * x3 + x5;
    }
    r
}

/// `A^T x`: six lanes to four.
#[inline(always)]
fn at4(x: &[Lane; 6]) -> [Lane; 4] {
    let mut r = [ZERO; 4];
    for l in 0..LANES {
        let (x0, x1, x2, x3, x4, x5) = (x[0][l], x[1][l], x[2][l], x[3][l], x[4][l], x[5][l]);
        let (s12, d12, s34, d34) = (x1 + x2, x1 - x2, x3 + x4, x3 - x4);
        r[0][l] = x0 + s12 + s34;
        r[1][l] = d12 + 2.0 * d34;
        r[2][l] = s12 + 4.0 * s34;
        r[3][l] = d12 + 8.0 * d34 + x5;
    }
    r
}

/// `A x`: four lanes to six (the adjoint of [`at4`]).
#[inline(always)]
fn a6(x: &[Lane; 4]) -> [Lane; 6] {
    let mut r = [ZERO; 6];
    for l in 0..LANES {
        let (x0, x1, x2, x3) = (x[0][l], x[1][l], x[2][l], x[3][l]);
        let (s02, s13) = (x0 + x2, x1 + x3);
        let (e02, e13) = (x0 + 4.0 * x2, 2.0 * x1 + 8.0 * x3);
        r[0][l] = x0;
        r[1][l] = s02 + s13;
        r[2][l] = s02 - s13;
        r[3][l] = e02 + e13;
        r[4][l] = e02 - e13;
        r[5][l] = x3;
    }
    r
}

/// `G x`: three lanes to six.
#[inline(always)]
fn g6(x: &[Lane; 3]) -> [Lane; 6] {
    let mut r = [ZERO; 6];
    for l in 0..LANES {
        let (x0, x1, x2) = (x[0][l], x[1][l], x[2][l]);
        r[0][l] = x0 * (1.0 / 4.0);
        r[1][l] = (x0 + x1 + x2) * (-1.0 / 6.0);
        r[2][l] = (x0 - x1 + x2) * (-1.0 / 6.0);
        r[3][l] = x0 * (1.0 / 24.0) + x1 * (1.0 / 12.0) + x2 * (1.0 / 6.0);
        r[4][l] = x0 * (1.0 / 24.0) - x1 * (1.0 / 12.0) + x2 * (1.0 / 6.0);
        r[5][l] = x2;
    }
    r
}

/// `G^T x`: six lanes to three (the adjoint of [`g6`]).
#[inline(always)]
fn gt3(x: &[Lane; 6]) -> [Lane; 3] {
    let mut r = [ZERO; 3];
    for l in 0..LANES {
        let (x0, x1, x2, x3, x4, x5) = (x[0][l], x[1][l], x[2][l], x[3][l], x[4][l], x[5][l]);
        r[0][l] = x0 * (1.0 / 4.0) - (x1 + x2) * (1.0 / 6.0) + (x3 + x4) * (1.0 / 24.0);
        r[1][l] = (x2 - x1) * (1.0 / 6.0) + (x3 - x4) * (1.0 / 12.0);
        r[2][l] = (x3 + x4 - x1 - x2) * (1.0 / 6.0) + x5;
    }
    r
}

/// `L x R^T` for a `rows_in x cols_in` grid of lanes (row-major), where
/// `left` maps a column and `right` maps a row.
#[inline(always)]
fn two_sided<const RI: usize, const CI: usize, const RO: usize, const CO: usize>(
    x: &[Lane],
    left: impl Fn(&[Lane; RI]) -> [Lane; RO],
    right: impl Fn(&[Lane; CI]) -> [Lane; CO],
    out: &mut [Lane],
) {
    let mut mid = [[ZERO; CI]; RO];
    for j in 0..CI {
        let col: [Lane; RI] = std::array::from_fn(|i| x[i * CI + j]);
        let r = left(&col);
        for i in 0..RO {
            mid[i][j] = r[i];
        }
    }
    for i in 0..RO {
        let r = right(&mid[i]);
        out[i * CO..(i + 1) * CO].copy_from_slice(&r);
    }
}

avx512_dispatch! {
    /// Transforms the input tiles `first_tile..` into `v` (`tiles x 36 x C`,
    /// as many tiles as `v` holds): `V = B^T d B` per channel.
    fn input_transform(corr: &Corr3x3, input: &[f32], first_tile: usize, v: &mut [f32]) {
        let (c, h, w) = (corr.in_shape.c, corr.in_shape.h as isize, corr.in_shape.w as isize);
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
            let mut d = [ZERO; POINTS];
            let mut out = [ZERO; POINTS];
            for c0 in (0..c).step_by(LANES) {
                let width = LANES.min(c - c0);
                for (lane, &offset) in d.iter_mut().zip(&offsets) {
                    if offset == usize::MAX {
                        *lane = ZERO;
                    } else {
                        lane[..width].copy_from_slice(&input[offset + c0..offset + c0 + width]);
                    }
                }
                two_sided(&d, bt6, bt6, &mut out);
                for (p, lane) in out.iter().enumerate() {
                    v_t[p * c + c0..p * c + c0 + width].copy_from_slice(&lane[..width]);
                }
            }
        }
    }
}

avx512_dispatch! {
    /// Transforms the output signal of tiles `first_tile..` into `dm`
    /// (`tiles x 36 x C_out`): `A dY A^T` per channel, zero outside the map.
    fn output_grad_transform(corr: &Corr3x3, grad_out: &[f32], first_tile: usize, dm: &mut [f32]) {
        let (c, h, w) = (corr.out_shape.c, corr.out_shape.h, corr.out_shape.w);
        for (t, dm_t) in dm.chunks_exact_mut(POINTS * c).enumerate() {
            let pos = corr.tile(first_tile + t);
            let mut y = [ZERO; TILE * TILE];
            let mut out = [ZERO; POINTS];
            for c0 in (0..c).step_by(LANES) {
                let width = LANES.min(c - c0);
                for i in 0..TILE {
                    for j in 0..TILE {
                        let lane = &mut y[i * TILE + j];
                        let (oy, ox) = (pos.y + i, pos.x + j);
                        if oy < h && ox < w {
                            let offset = ((pos.image * h + oy) * w + ox) * c + c0;
                            lane[..width].copy_from_slice(&grad_out[offset..offset + width]);
                        } else {
                            *lane = ZERO;
                        }
                    }
                }
                two_sided(&y, a6, a6, &mut out);
                for (p, lane) in out.iter().enumerate() {
                    dm_t[p * c + c0..p * c + c0 + width].copy_from_slice(&lane[..width]);
                }
            }
        }
    }
}

avx512_dispatch! {
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
        let mut y = [ZERO; TILE * TILE];
        let mut mm = [ZERO; POINTS];
        for (t, m_t) in m.chunks_exact(POINTS * c).enumerate() {
            let pos = corr.tile(first_tile + t);
            for c0 in (0..c).step_by(LANES) {
                let width = LANES.min(c - c0);
                for (p, lane) in mm.iter_mut().enumerate() {
                    lane[..width].copy_from_slice(&m_t[p * c + c0..p * c + c0 + width]);
                }
                two_sided(&mm, at4, at4, &mut y);
                let mut b = ZERO;
                if let Some(bias) = bias {
                    b[..width].copy_from_slice(&bias[c0..c0 + width]);
                }
                for (k, lane) in y.iter_mut().enumerate() {
                    let (oy, ox) = (pos.y + k / TILE, pos.x + k % TILE);
                    if oy >= h || ox >= w {
                        continue;
                    }
                    for (v, b) in lane.iter_mut().zip(&b) {
                        *v += b;
                    }
                    match act {
                        Activation::None => {}
                        Activation::Relu => lane.iter_mut().for_each(|v| *v = v.max(0.0)),
                        Activation::LeakyRelu { slope } => lane.iter_mut().for_each(|v| {
                            if *v <= 0.0 {
                                *v *= slope
                            }
                        }),
                    }
                    let row = pos.image * h + oy - first_row;
                    let offset = (row * w + ox) * c + c0;
                    out[offset..offset + width].copy_from_slice(&lane[..width]);
                }
            }
        }
    }
}

avx512_dispatch! {
    /// `u[p][a][b] = (G g G^T)_p` for `g[kh][kw] = weight[kh][kw][a][b]`
    /// (`weight` is `3 x 3 x ca x cb`, `u` is `36 x ca x cb`).
    fn weight_transform(weight: &[f32], ca: usize, cb: usize, u: &mut [f32]) {
        let plane = ca * cb;
        let mut g = [ZERO; 9];
        let mut out = [ZERO; POINTS];
        for a in 0..ca {
            for b0 in (0..cb).step_by(LANES) {
                let width = LANES.min(cb - b0);
                let base = a * cb + b0;
                for (k, lane) in g.iter_mut().enumerate() {
                    lane[..width].copy_from_slice(&weight[k * plane + base..k * plane + base + width]);
                }
                two_sided(&g, g6, g6, &mut out);
                for (p, lane) in out.iter().enumerate() {
                    u[p * plane + base..p * plane + base + width].copy_from_slice(&lane[..width]);
                }
            }
        }
    }
}

avx512_dispatch! {
    /// The adjoint of [`weight_transform`]: `grad[kh][kw][a][b] = (G^T du G)`
    /// from `du` (`36 x ca x cb`).
    fn weight_grad_transform(du: &[f32], ca: usize, cb: usize, grad: &mut [f32]) {
        let plane = ca * cb;
        let mut z = [ZERO; POINTS];
        let mut out = [ZERO; 9];
        for a in 0..ca {
            for b0 in (0..cb).step_by(LANES) {
                let width = LANES.min(cb - b0);
                let base = a * cb + b0;
                for (p, lane) in z.iter_mut().enumerate() {
                    lane[..width].copy_from_slice(&du[p * plane + base..p * plane + base + width]);
                }
                two_sided(&z, gt3, gt3, &mut out);
                for (k, lane) in out.iter().enumerate() {
                    grad[k * plane + base..k * plane + base + width].copy_from_slice(&lane[..width]);
                }
            }
        }
    }
}

/// Transformed weights of a forward correlation: `u` (`36 x C_in x C_out`)
/// from HWIO `weight`.
pub(crate) fn transform_weights(weight: &[f32], c_in: usize, c_out: usize, u: &mut [f32]) {
    assert_eq!(weight.len(), 9 * c_in * c_out, "winograd weight size");
    assert_eq!(u.len(), POINTS * c_in * c_out, "winograd transformed weight size");
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
    assert_eq!(output.len(), n * corr.out_shape.len(), "winograd output size");
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
                    let rhs = View::row_major(&u[p * c_in * c_out..(p + 1) * c_in * c_out], c_in, c_out);
                    matmul_strided(&mut m[p * c_out..], POINTS * c_out, lhs, rhs, false);
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
    assert_eq!(grad_out.len(), n * corr.out_shape.len(), "winograd grad_out size");
    assert_eq!(grad_weight.len(), 9 * c_in * c_out, "winograd grad_weight size");
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
            matmul(du_p, lhs, rhs, true);
        });
    }
    weight_grad_transform(du, c_in, c_out, grad_weight);
}
