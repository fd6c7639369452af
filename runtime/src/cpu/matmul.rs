//! A safe, single-threaded matrix product over strided `f32` slices.
//!
//! The kernels parallelise over independent chunks of rows themselves, so the
//! product here always runs on the calling thread. That keeps the summation
//! order of every output element a function of the chunk's shape alone, which
//! is what makes the backend's results independent of the thread count.

/// The number format of a product's operands (sums are f32 in both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Operands {
    /// f32 operands (the `gemm` crate).
    #[default]
    F32,
    /// Operands rounded to bf16 as they are packed (AVX512-BF16; see
    /// `bf16`).
    Bf16,
}

/// A read-only strided matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A row-major `rows x cols` matrix with row stride `cols`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of this view (no data moves).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Whether every element the view addresses lies inside `data`.
    pub(crate) fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let last = (self.rows - 1) * self.rs + (self.cols - 1) * self.cs;
        last < self.data.len()
    }
}

/// A right-hand operand shared by many products (a layer's weights across
/// its chunks of rows), prepared once in the operand format: bf16 packing
/// then happens once per layer, not once per chunk.
pub(crate) enum SharedRhs<'a> {
    F32(View<'a>),
    Bf16(super::bf16::PackedB),
}

impl<'a> SharedRhs<'a> {
    pub fn new(rhs: View<'a>, operands: Operands) -> Self {
        match operands {
            Operands::F32 => Self::F32(rhs),
            Operands::Bf16 => {
                let mut packed = super::bf16::PackedB::default();
                packed.pack(rhs);
                Self::Bf16(packed)
            }
        }
    }

    /// [`matmul_strided`] with this operand on the right.
    pub fn matmul_strided(&self, dst: &mut [f32], dst_rs: usize, lhs: View<'_>, accumulate: bool) {
        match self {
            Self::F32(rhs) => matmul_strided(dst, dst_rs, lhs, *rhs, accumulate, Operands::F32),
            Self::Bf16(packed) => super::bf16::gemm(dst, dst_rs, lhs, packed, accumulate),
        }
    }

    /// [`matmul`] with this operand on the right.
    pub fn matmul(&self, dst: &mut [f32], lhs: View<'_>, accumulate: bool) {
        let cols = match self {
            Self::F32(rhs) => rhs.cols,
            Self::Bf16(packed) => packed.cols(),
        };
        assert_eq!(dst.len(), lhs.rows * cols, "destination has the wrong size");
        self.matmul_strided(dst, cols, lhs, accumulate);
    }
}

/// Checks an `m x k` by `k x n` product's destination (rows `dst_rs`
/// apart) and finishes the trivial products: none when `m` or `n` is zero,
/// zeros (unless accumulating) for an empty sum. Whether work is left.
///
/// # Panics
///
/// Panics when the destination's rows overlap or it is too short.
pub(crate) fn nontrivial_product(
    dst: &mut [f32],
    dst_rs: usize,
    (m, k, n): (usize, usize, usize),
    accumulate: bool,
) -> bool {
    assert!(dst_rs >= n, "destination rows overlap");
    assert!(
        m == 0 || n == 0 || (m - 1) * dst_rs + n <= dst.len(),
        "destination out of bounds"
    );
    if m == 0 || n == 0 {
        return false;
    }
    if k == 0 {
        if !accumulate {
            for row in dst.chunks_mut(dst_rs).take(m) {
                row[..n].fill(0.0);
            }
        }
        return false;
    }
    true
}

/// `dst = lhs * rhs` (or `dst += lhs * rhs` when `accumulate`), where `dst`
/// is row-major `lhs.rows x rhs.cols`.
///
/// # Panics
///
/// Panics when the shapes disagree or a view runs past its slice.
pub(crate) fn matmul(
    dst: &mut [f32],
    lhs: View<'_>,
    rhs: View<'_>,
    accumulate: bool,
    operands: Operands,
) {
    assert_eq!(
        dst.len(),
        lhs.rows * rhs.cols,
        "destination has the wrong size"
    );
    matmul_strided(dst, rhs.cols, lhs, rhs, accumulate, operands);
}

/// [`matmul`] into a destination whose rows lie `dst_rs` values apart
/// (`dst_rs >= rhs.cols`); values between the rows are left alone.
///
/// # Panics
///
/// Panics when the shapes disagree or a matrix runs past its slice.
pub(crate) fn matmul_strided(
    dst: &mut [f32],
    dst_rs: usize,
    lhs: View<'_>,
    rhs: View<'_>,
    accumulate: bool,
    operands: Operands,
) {
    if operands == Operands::Bf16 {
        return super::bf16::matmul(dst, dst_rs, lhs, rhs, accumulate);
    }
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(rhs.rows, k, "inner dimensions differ");
    assert!(lhs.in_bounds() && rhs.in_bounds(), "view out of bounds");
    if !nontrivial_product(dst, dst_rs, (m, k, n), accumulate) {
        return;
    }
    // SAFETY: the asserts above guarantee that every element gemm reads
    // (`lhs`, `rhs`) or writes (`dst`, `m x n` with row stride `dst_rs`)
    // lies inside its slice; `dst` is a unique borrow, so it aliases neither
    // operand. Strides fit in `isize` because they index into live
    // allocations.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    /// Odd shapes with a strided destination and accumulation; the gaps
    /// between destination rows stay untouched.
    #[test]
    fn matmul_matches_naive_around_block_edges() {
        for (m, k, n) in [
            (1, 1, 1),
            (12, 5, 32),
            (13, 7, 33),
            (25, 3, 17),
            (5, 40, 70),
            (36, 96, 16),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.25)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.5)
                .collect();
            let expected = naive(&a, &b, m, k, n);
            // `dst` with a row stride of n + 3; the gaps must stay untouched.
            let stride = n + 3;
            let mut dst = vec![-7.0; m * stride];
            matmul_strided(
                &mut dst,
                stride,
                View::row_major(&a, m, k),
                View::row_major(&b, k, n),
                false,
                Operands::F32,
            );
            matmul_strided(
                &mut dst,
                stride,
                View::row_major(&a, m, k),
                View::row_major(&b, k, n),
                true,
                Operands::F32,
            );
            for i in 0..m {
                for j in 0..stride {
                    let got = dst[i * stride + j];
                    if j < n {
                        let want = 2.0 * expected[i * n + j];
                        assert!(
                            (got - want).abs() < 1e-4,
                            "({m},{k},{n})[{i},{j}]: {got} vs {want}"
                        );
                    } else {
                        assert_eq!(got, -7.0, "gap written");
                    }
                }
            }
        }
    }

    #[test]
    fn matmul_matches_naive_in_every_orientation() {
        let (m, k, n) = (7, 5, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.91).cos()).collect();
        let expected = naive(&a, &b, m, k, n);
        let mut c = vec![0.0; m * n];
        matmul(
            &mut c,
            View::row_major(&a, m, k),
            View::row_major(&b, k, n),
            false,
            Operands::F32,
        );
        for (x, y) in c.iter().zip(&expected) {
            assert!((x - y).abs() < 1e-5);
        }
        // Transposed operands stored the other way round.
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut c2 = vec![1.0; m * n];
        matmul(
            &mut c2,
            View::row_major(&at, k, m).t(),
            View::row_major(&bt, n, k).t(),
            true,
            Operands::F32,
        );
        for (x, y) in c2.iter().zip(&expected) {
            assert!((x - (y + 1.0)).abs() < 1e-5);
        }
    }
}
