//! A bf16 matrix product for CPUs with AVX512-BF16: `C (f32) = A * B` (or
//! `+=`), the operands rounded to bf16 as they are packed, the products
//! summed in f32 by `vdpbf16ps`.
//!
//! `vdpbf16ps` multiplies 32 pairs of bf16 values and adds each pair's two
//! products into one of 16 f32 lanes: twice the multiply-adds of an f32 FMA
//! per instruction. So the reduction dimension is packed in pairs: a packed
//! value is a `u32` holding `(x[k], x[k + 1])` as two bf16 (low half first).
//!
//! Layout (BLIS-style): `B` is packed once per product into panels of
//! [`NR`] = 32 columns, `[k block][panel][pair][32]`; `A` is packed per
//! [`MC`] x [`KC`] block into panels of [`MR`] = 14 rows, either row by row
//! (`[row][pair]`, when `A`'s rows are contiguous) or pair by pair
//! (`[pair][row]`, when its columns are: the weight gradient's transposed
//! operands). The micro-kernel holds a 14 x 32 tile of `C` in 28 of the 32
//! vector registers, broadcasting one packed pair of `A` per row and pair.
//!
//! Rounding: every element of `A` and `B` is rounded to bf16 once, to
//! nearest even, by the CPU's `vcvtneps2bf16` (inputs and results below
//! bf16's normal range become zero, which [`round`] reproduces for the
//! scalar paths); sums are f32. The weights the optimizer updates, the
//! activations between layers and everything outside the products stay f32.
//!
//! Invariant: a product runs on the calling thread with a fixed blocking, so
//! its result depends on the shapes and values only (as the f32 path).

use super::matmul::{nontrivial_product, View};
use std::cell::RefCell;

/// Rows of the micro-kernel's tile.
const MR: usize = 14;
/// Columns of the micro-kernel's tile (two vectors of 16).
const NR: usize = 32;
/// Depth of a block of the reduction (even: blocks hold whole pairs).
const KC: usize = 384;
/// Pairs per block of the reduction.
const KP: usize = KC / 2;
/// Rows of a packed block of `A` (a multiple of [`MR`]).
const MC: usize = MR * 8;

/// Whether this CPU runs the bf16 products (AVX-512F and AVX512-BF16).
pub(crate) fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `x` rounded to bf16 as `vcvtneps2bf16` does: to nearest even, values
/// below the normal range (inputs and results) to zero of the same sign,
/// NaN to a quiet NaN. The bits of the bf16 value.
pub(crate) fn round(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let sign = bits & 0x8000_0000;
    if bits & 0x7f80_0000 == 0 {
        return (sign >> 16) as u16;
    }
    let rounded = (bits + 0x7fff + ((bits >> 16) & 1)) >> 16;
    rounded as u16
}

/// Two values as one packed pair, `lo` in the low half.
fn pair(lo: f32, hi: f32) -> u32 {
    round(lo) as u32 | (round(hi) as u32) << 16
}

/// `B` packed for [`gemm`]: `k x n`, rounded to bf16.
#[derive(Debug, Clone, Default)]
pub(crate) struct PackedB {
    data: Vec<u32>,
    k: usize,
    n: usize,
}

impl PackedB {
    /// Columns of the packed matrix.
    pub fn cols(&self) -> usize {
        self.n
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    /// The packed panel `panel` of the k block starting at pair `pair0`.
    fn panel(&self, pair0: usize, pairs: usize, panel: usize) -> &[u32] {
        let start = self.panels() * NR * pair0 + panel * pairs * NR;
        &self.data[start..start + pairs * NR]
    }

    /// Packs `b` (any strides), replacing what this buffer held; reusing a
    /// `PackedB` keeps its allocation.
    pub fn pack(&mut self, b: View<'_>) {
        assert!(b.in_bounds(), "view out of bounds");
        self.k = b.rows;
        self.n = b.cols;
        let panels = self.panels();
        let pairs_total = b.rows.div_ceil(2);
        self.data.clear();
        self.data.resize(panels * NR * pairs_total, 0);
        for pair0 in (0..pairs_total).step_by(KP) {
            let pairs = KP.min(pairs_total - pair0);
            for panel in 0..panels {
                let start = panels * NR * pair0 + panel * pairs * NR;
                let dst = &mut self.data[start..start + pairs * NR];
                pack_b_panel(b, 2 * pair0, pairs, panel * NR, dst);
            }
        }
    }
}

/// One panel of `B`: rows from `k0`, `pairs` pairs, columns from `j0`.
fn pack_b_panel(b: View<'_>, k0: usize, pairs: usize, j0: usize, dst: &mut [u32]) {
    let width = NR.min(b.cols - j0);
    #[cfg(target_arch = "x86_64")]
    if b.cs == 1 && supported() {
        // SAFETY: the CPU has AVX-512F and AVX512-BF16 (checked); the view
        // is in bounds (checked by `pack`) and the kernel reads only inside
        // it and writes only inside `dst`.
        unsafe { x86::pack_rows_of_pairs(b, k0, pairs, j0, width, dst) };
        return;
    }
    for (q, out) in dst.chunks_exact_mut(NR).enumerate() {
        let (r0, r1) = (k0 + 2 * q, k0 + 2 * q + 1);
        for (j, slot) in out.iter_mut().enumerate() {
            *slot = if j < width {
                let at = |r: usize| {
                    if r < b.rows {
                        b.data[r * b.rs + (j0 + j) * b.cs]
                    } else {
                        0.0
                    }
                };
                pair(at(r0), at(r1))
            } else {
                0
            };
        }
    }
}

/// How a block of `A` is packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ALayout {
    /// `[panel][row][pair]`, [`KP`] pairs per row: `A`'s rows contiguous.
    RowMajor,
    /// `[panel][pair][row]`, [`MR`] rows per pair: `A`'s columns contiguous.
    PairMajor,
}

thread_local! {
    static PACKED_A: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    static PACKED_B: RefCell<PackedB> = RefCell::new(PackedB::default());
}

/// `dst = a * b` (or `+=` when `accumulate`), `dst` row-major with rows
/// `dst_rs` apart, `b` packed by [`PackedB::pack`].
///
/// # Panics
///
/// Panics when the shapes disagree, a matrix runs past its slice, or the
/// CPU lacks AVX512-BF16 (callers check [`supported`] first).
pub(crate) fn gemm(dst: &mut [f32], dst_rs: usize, a: View<'_>, b: &PackedB, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.n);
    assert_eq!(b.k, k, "inner dimensions differ");
    assert!(a.in_bounds(), "view out of bounds");
    assert!(supported(), "bf16 products need AVX512-BF16");
    if !nontrivial_product(dst, dst_rs, (m, k, n), accumulate) {
        return;
    }
    let layout = if a.cs == 1 || a.rs != 1 {
        ALayout::RowMajor
    } else {
        ALayout::PairMajor
    };
    let pairs_total = k.div_ceil(2);
    PACKED_A.with(|cell| {
        let mut packed = cell.borrow_mut();
        packed.resize(MC * KP, 0);
        for pair0 in (0..pairs_total).step_by(KP) {
            let pairs = KP.min(pairs_total - pair0);
            let add = accumulate || pair0 > 0;
            for i0 in (0..m).step_by(MC) {
                let mc = MC.min(m - i0);
                let panels_a = mc.div_ceil(MR);
                pack_a(a, i0, mc, 2 * pair0, pairs, layout, &mut packed);
                for panel in 0..b.panels() {
                    let bp = b.panel(pair0, pairs, panel);
                    let j0 = panel * NR;
                    let cols = NR.min(n - j0);
                    for pa in 0..panels_a {
                        let rows = MR.min(mc - pa * MR);
                        let ap = &packed[pa * MR * KP..(pa + 1) * MR * KP];
                        let start = (i0 + pa * MR) * dst_rs + j0;
                        // The tile's last element: row rows-1, column cols-1.
                        let end = start + (rows - 1) * dst_rs + cols;
                        let tile = &mut dst[start..end];
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: AVX512-BF16 is supported (asserted
                        // above); `ap` holds MR x KP pairs, `bp` pairs x NR,
                        // and `tile` covers rows x cols with row stride
                        // dst_rs, which is all the kernel touches.
                        unsafe {
                            x86::kernel(layout, pairs, ap, bp, tile, dst_rs, rows, cols, add)
                        };
                    }
                }
            }
        }
    });
}

/// [`gemm`] with `b` packed on this thread for this product.
pub(crate) fn matmul(dst: &mut [f32], dst_rs: usize, a: View<'_>, b: View<'_>, accumulate: bool) {
    PACKED_B.with(|cell| {
        let mut packed = cell.borrow_mut();
        packed.pack(b);
        gemm(dst, dst_rs, a, &packed, accumulate);
    });
}

/// Packs rows `i0..i0 + mc`, pairs from column `k0`, of `a` into
/// `packed` (zeros beyond the matrix).
fn pack_a(
    a: View<'_>,
    i0: usize,
    mc: usize,
    k0: usize,
    pairs: usize,
    layout: ALayout,
    packed: &mut [u32],
) {
    for panel in 0..mc.div_ceil(MR) {
        let dst = &mut packed[panel * MR * KP..(panel + 1) * MR * KP];
        let first = i0 + panel * MR;
        let rows = MR.min(i0 + mc - first);
        #[cfg(target_arch = "x86_64")]
        if supported()
            && ((layout == ALayout::RowMajor && a.cs == 1) || layout == ALayout::PairMajor)
        {
            // SAFETY: AVX-512F and AVX512-BF16 are supported (checked); the
            // kernels read rows `first..first + rows`, columns `k0..` of the
            // in-bounds view and write inside `dst` (MR x KP pairs).
            unsafe {
                match layout {
                    ALayout::RowMajor => x86::pack_row_major(a, first, rows, k0, pairs, dst),
                    ALayout::PairMajor => x86::pack_pair_major(a, first, rows, k0, pairs, dst),
                }
            }
            continue;
        }
        let at = |i: usize, kk: usize| {
            if i < rows && kk < a.cols {
                a.data[(first + i) * a.rs + kk * a.cs]
            } else {
                0.0
            }
        };
        for i in 0..MR {
            for q in 0..pairs {
                let value = pair(at(i, k0 + 2 * q), at(i, k0 + 2 * q + 1));
                match layout {
                    ALayout::RowMajor => dst[i * KP + q] = value,
                    ALayout::PairMajor => dst[q * MR + i] = value,
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{ALayout, View, KP, MR, NR};
    use std::arch::x86_64::*;

    /// Sixteen f32 rounded to bf16, each widened into a u32 lane.
    #[inline(always)]
    unsafe fn round16(v: __m512) -> __m512i {
        _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(
            _mm512_cvtneps_pbh(v),
        ))
    }

    /// Pairs from two rows of sixteen values each: lane `j` holds
    /// `(lo[j], hi[j])`.
    #[inline(always)]
    unsafe fn pairs16(lo: __m512, hi: __m512) -> __m512i {
        _mm512_or_si512(round16(lo), _mm512_slli_epi32(round16(hi), 16))
    }

    /// Mask of the first `n <= 16` lanes.
    #[inline(always)]
    fn mask(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            (1u16 << n) - 1
        }
    }

    /// `lanes <= 16` values of `view` from `offset` (zeros in the other
    /// lanes), or zeros when `index` is past `end` (the row or column
    /// beyond the matrix that a pair's odd end reads).
    #[inline(always)]
    unsafe fn load(
        view: View<'_>,
        index: usize,
        offset: usize,
        end: usize,
        lanes: usize,
    ) -> __m512 {
        if index >= end || lanes == 0 {
            return _mm512_setzero_ps();
        }
        _mm512_maskz_loadu_ps(mask(lanes), view.data.as_ptr().add(offset))
    }

    /// `B` with contiguous rows: each pair of rows gives 32 packed values.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn pack_rows_of_pairs(
        b: View<'_>,
        k0: usize,
        pairs: usize,
        j0: usize,
        width: usize,
        dst: &mut [u32],
    ) {
        let row = |r: usize, half: usize| -> __m512 {
            let cols = width.saturating_sub(16 * half).min(16);
            load(b, r, r * b.rs + j0 + 16 * half, b.rows, cols)
        };
        for q in 0..pairs {
            let (r0, r1) = (k0 + 2 * q, k0 + 2 * q + 1);
            for half in 0..2 {
                let packed = pairs16(row(r0, half), row(r1, half));
                let out = dst.as_mut_ptr().add(q * NR + 16 * half);
                _mm512_storeu_si512(out as *mut __m512i, packed);
            }
        }
    }

    /// Rows of `A` with contiguous columns: 32 values of a row give 16
    /// consecutive pairs (`vcvtne2ps2bf16` keeps them in order).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn pack_row_major(
        a: View<'_>,
        first: usize,
        rows: usize,
        k0: usize,
        pairs: usize,
        dst: &mut [u32],
    ) {
        let cols = (a.cols - k0).min(2 * pairs);
        for i in 0..MR {
            let out = dst.as_mut_ptr().add(i * KP);
            if i >= rows {
                std::ptr::write_bytes(out, 0, pairs);
                continue;
            }
            let src = a.data.as_ptr().add((first + i) * a.rs + k0);
            for c in (0..2 * pairs).step_by(32) {
                let lo_n = cols.saturating_sub(c).min(16);
                let hi_n = cols.saturating_sub(c + 16).min(16);
                let lo = _mm512_maskz_loadu_ps(mask(lo_n), src.add(c.min(cols)));
                let hi = _mm512_maskz_loadu_ps(mask(hi_n), src.add((c + 16).min(cols)));
                let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                let count = (2 * pairs - c).min(32) / 2;
                _mm512_mask_storeu_epi32(out.add(c / 2) as *mut i32, mask(count), packed);
            }
        }
    }

    /// Rows of `A` that are columns in memory (`rs == 1`): for each pair,
    /// the two columns' values of the panel's rows.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn pack_pair_major(
        a: View<'_>,
        first: usize,
        rows: usize,
        k0: usize,
        pairs: usize,
        dst: &mut [u32],
    ) {
        let column = |kk: usize| load(a, kk, first * a.rs + kk * a.cs, a.cols, rows);
        for q in 0..pairs {
            let packed = pairs16(column(k0 + 2 * q), column(k0 + 2 * q + 1));
            _mm512_mask_storeu_epi32(dst.as_mut_ptr().add(q * MR) as *mut i32, mask(MR), packed);
        }
    }

    /// One `rows x cols` tile of `C` (at most MR x NR) from `pairs` packed
    /// pairs: `C = A B`, or `C += A B` when `add`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn kernel(
        layout: ALayout,
        pairs: usize,
        a: &[u32],
        b: &[u32],
        c: &mut [f32],
        c_rs: usize,
        rows: usize,
        cols: usize,
        add: bool,
    ) {
        let acc = match layout {
            ALayout::RowMajor => products::<KP, 1>(pairs, a.as_ptr(), b.as_ptr()),
            ALayout::PairMajor => products::<1, MR>(pairs, a.as_ptr(), b.as_ptr()),
        };
        let masks = [mask(cols), mask(cols.saturating_sub(16))];
        for (i, row) in acc.iter().enumerate().take(rows) {
            let base = c.as_mut_ptr().add(i * c_rs);
            for (h, &value) in row.iter().enumerate() {
                if masks[h] == 0 {
                    continue;
                }
                let ptr = base.add(16 * h);
                let value = if add {
                    _mm512_add_ps(_mm512_maskz_loadu_ps(masks[h], ptr), value)
                } else {
                    value
                };
                _mm512_mask_storeu_ps(ptr, masks[h], value);
            }
        }
    }

    /// The 14 x 32 products: row `i`'s pair `q` of `A` lies at
    /// `a[i * ROW + q * PAIR]`.
    #[inline(always)]
    unsafe fn products<const ROW: usize, const PAIR: usize>(
        pairs: usize,
        a: *const u32,
        b: *const u32,
    ) -> [[__m512; 2]; MR] {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        for q in 0..pairs {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(q * NR) as *const _));
            let b1: __m512bh =
                std::mem::transmute(_mm512_loadu_si512(b.add(q * NR + 16) as *const _));
            let aq = a.add(q * PAIR);
            for (i, row) in acc.iter_mut().enumerate() {
                let ai: __m512bh = std::mem::transmute(_mm512_set1_epi32(*aq.add(i * ROW) as i32));
                row[0] = _mm512_dpbf16_ps(row[0], ai, b0);
                row[1] = _mm512_dpbf16_ps(row[1], ai, b1);
            }
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f32 value of bf16 bits.
    fn widen(bits: u16) -> f32 {
        f32::from_bits((bits as u32) << 16)
    }

    /// The product of the bf16-rounded operands, summed in f64.
    fn reference(a: View<'_>, b: View<'_>) -> Vec<f64> {
        let r = |x: f32| widen(round(x)) as f64;
        let mut c = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                c[i * b.cols + j] = (0..a.cols)
                    .map(|p| r(a.data[i * a.rs + p * a.cs]) * r(b.data[p * b.rs + j * b.cs]))
                    .sum();
            }
        }
        c
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    #[test]
    fn rounding_matches_the_cpu() {
        if !supported() {
            return crate::skip::skip("no AVX512-BF16 on this CPU: bf16 rounding not compared");
        }
        let specials = [
            0.0f32,
            -0.0,
            1.0,
            1.0039062,
            1.0078125,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-40,
            -1e-42,
            f32::INFINITY,
            f32::NEG_INFINITY,
            3.3895314e38,
        ];
        let mut data: Vec<f32> = values(4096, 7).iter().map(|v| v * 1e3).collect();
        data.extend(specials);
        data.extend((0..1000u32).map(|i| f32::from_bits(i.wrapping_mul(4294967291))));
        let rows = data.len() / 64;
        let view = View::row_major(&data[..rows * 64], rows, 64);
        let mut packed = PackedB::default();
        packed.pack(view);
        for (q, chunk) in packed.data.chunks_exact(NR).enumerate().take(rows / 2) {
            for (j, &got) in chunk.iter().enumerate() {
                let want = pair(data[2 * q * 64 + j], data[(2 * q + 1) * 64 + j]);
                let (x, y) = (data[2 * q * 64 + j], data[(2 * q + 1) * 64 + j]);
                if x.is_nan() || y.is_nan() {
                    continue;
                }
                assert_eq!(got, want, "pair of {x:e}, {y:e}");
            }
        }
    }

    /// Every layout and edge: shapes around the tile and block sizes,
    /// transposed operands, odd depths, a strided destination.
    #[test]
    fn products_match_the_rounded_reference() {
        if !supported() {
            return crate::skip::skip("no AVX512-BF16 on this CPU: bf16 products not tested");
        }
        for (m, k, n) in [
            (1, 1, 1),
            (14, 2, 32),
            (15, 3, 33),
            (13, 383, 31),
            (29, 384, 64),
            (113, 385, 65),
            (127, 800, 96),
            (40, 769, 200),
        ] {
            for (a_t, b_t) in [(false, false), (true, false), (false, true), (true, true)] {
                let a_data = values(m * k, 1);
                let b_data = values(k * n, 2);
                let a = if a_t {
                    View::row_major(&a_data, k, m).t()
                } else {
                    View::row_major(&a_data, m, k)
                };
                let b = if b_t {
                    View::row_major(&b_data, n, k).t()
                } else {
                    View::row_major(&b_data, k, n)
                };
                let want = reference(a, b);
                let stride = n + 3;
                let mut dst = vec![-7.0f32; m * stride];
                matmul(&mut dst, stride, a, b, false);
                matmul(&mut dst, stride, a, b, true);
                for i in 0..m {
                    for j in 0..stride {
                        let got = dst[i * stride + j];
                        if j >= n {
                            assert_eq!(got, -7.0, "gap written");
                            continue;
                        }
                        let w = 2.0 * want[i * n + j];
                        // f32 sums of k products of magnitude <= 1.
                        let tol = 1e-6 * k as f64 + 1e-6;
                        assert!(
                            (got as f64 - w).abs() <= tol,
                            "({m},{k},{n}) a_t={a_t} b_t={b_t} [{i},{j}]: {got} vs {w}"
                        );
                    }
                }
            }
        }
    }
}
