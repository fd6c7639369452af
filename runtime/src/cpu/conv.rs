//! Convolution, forward and backward, as im2col + GEMM in channels-last layout.
//!
//! With activations `N x H x W x C` and weights `KH x KW x C_in x C_out`
//! (HWIO), a convolution is one matrix product: the rows of the "column"
//! matrix are the `N * OH * OW` output positions, its columns the
//! `KH * KW * C_in` window values in HWIO order, so
//!
//! - forward: `Y[M x C_out] = Col[M x K] * W[K x C_out]`, then bias and
//!   activation in the same pass over each chunk (the epilogue);
//! - backward data: `dCol = dY * W^T`, scattered back by col2im;
//! - backward weights: `dW = Col^T * dY`, bias: column sums of `dY`.
//!
//! `Y` in channels-last layout *is* the row-major `M x C_out` matrix, so no
//! transposes are needed. Col is never materialised for the whole batch:
//! each chunk of [`ConvGeometry::chunk_rows`] rows is built in a per-thread
//! scratch buffer that stays in cache while the GEMM consumes it. A 1x1
//! convolution with stride 1 and no padding skips im2col: the input already
//! is `Col`.
//!
//! 3x3 stride-1 layers with enough channels take the Winograd F(4x4, 3x3)
//! path instead ([`ConvGeometry::uses_winograd`], module `winograd`), which
//! does a quarter of the multiplications; [`ConvAlgorithm::Im2col`] forces
//! the plain path (the tests compare the two).
//!
//! Invariant: the result does not depend on the rayon thread count. Chunks
//! have a fixed size, every GEMM runs on one thread, and im2col weight
//! gradients are summed per fixed group of images ([`WEIGHT_GRAD_GROUPS`]),
//! then the groups' partial sums are added in group order.

use rayon::prelude::*;

use super::activation;
use super::matmul::{matmul, Operands, SharedRhs, View};
use super::scratch::with_scratch;
use super::simd::avx512_dispatch;
use super::winograd::{self, Corr3x3};
use crate::plan::{Activation, ReluRule, Shape, Window};

/// Number of image groups the weight gradient is split into; each group's
/// partial gradient is summed on one thread. A constant (not the thread
/// count) so that the summation order never changes.
pub const WEIGHT_GRAD_GROUPS: usize = 16;

/// Target size of one chunk's column matrix, in `f32` values (1 MiB), small
/// enough to stay in a core's L2 cache while the GEMM reads it.
const CHUNK_COL_VALUES: usize = 1 << 18;

/// Values per parallel task when summing the groups' partial gradients.
const REDUCE_CHUNK: usize = 1 << 14;

/// The shapes of one convolution layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvGeometry {
    pub in_shape: Shape,
    /// `out_shape.c` is the number of output channels.
    pub out_shape: Shape,
    pub window: Window,
}

impl ConvGeometry {
    /// Length of one row of the column matrix: `KH * KW * C_in`.
    pub fn k(&self) -> usize {
        self.window.kh * self.window.kw * self.in_shape.c
    }

    /// Output positions of one image: `OH * OW`.
    pub fn rows_per_image(&self) -> usize {
        self.out_shape.h * self.out_shape.w
    }

    /// Number of weight values: `KH * KW * C_in * C_out`.
    pub fn weight_len(&self) -> usize {
        self.k() * self.out_shape.c
    }

    /// A 1x1 convolution with stride 1 and no padding: `Col` is the input.
    pub fn is_pointwise(&self) -> bool {
        let w = &self.window;
        w.kh == 1
            && w.kw == 1
            && w.stride_h == 1
            && w.stride_w == 1
            && w.pad == Default::default()
            && self.in_shape.h == self.out_shape.h
            && self.in_shape.w == self.out_shape.w
    }

    /// Rows of the column matrix per chunk; a function of the geometry only.
    pub fn chunk_rows(&self) -> usize {
        (CHUNK_COL_VALUES / self.k().max(1)).clamp(64, 1024)
    }

    /// Whether [`ConvAlgorithm::Auto`] runs this layer with Winograd
    /// F(4x4, 3x3): a 3x3 kernel, stride 1, padding at most 2 on each side,
    /// at least 16 input and output channels (the transforms cost per
    /// channel, the savings per channel pair), and 4x4 output tiles that are
    /// at least half used.
    pub fn uses_winograd(&self) -> bool {
        let w = &self.window;
        let (i, o) = (&self.in_shape, &self.out_shape);
        let pads = [w.pad.top, w.pad.left, w.pad.bottom, w.pad.right];
        let tiles = o.h.div_ceil(4) * o.w.div_ceil(4);
        w.kh == 3
            && w.kw == 3
            && w.stride_h == 1
            && w.stride_w == 1
            && pads.iter().all(|&p| p <= 2)
            && i.h + w.pad.top + w.pad.bottom == o.h + 2
            && i.w + w.pad.left + w.pad.right == o.w + 2
            && i.c >= 16
            && o.c >= 16
            && 2 * o.h * o.w >= 16 * tiles
    }

    /// The forward pass as a stride-1 3x3 correlation.
    fn forward_corr(&self) -> Corr3x3 {
        Corr3x3 {
            in_shape: self.in_shape,
            out_shape: self.out_shape,
            pad_top: self.window.pad.top,
            pad_left: self.window.pad.left,
        }
    }

    /// The backward data pass as a stride-1 3x3 correlation of the output
    /// signal with the flipped kernel.
    fn backward_corr(&self) -> Corr3x3 {
        Corr3x3 {
            in_shape: self.out_shape,
            out_shape: self.in_shape,
            pad_top: 2 - self.window.pad.top,
            pad_left: 2 - self.window.pad.left,
        }
    }
}

/// Which algorithm a convolution uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConvAlgorithm {
    /// Winograd where [`ConvGeometry::uses_winograd`] says so, else im2col.
    #[default]
    Auto,
    /// im2col + GEMM always (the reference the Winograd path is tested
    /// against).
    Im2col,
}

impl ConvAlgorithm {
    fn winograd(self, geom: &ConvGeometry) -> bool {
        self == Self::Auto && geom.uses_winograd()
    }
}

/// Grows `workspace` to at least `len` values and returns them.
fn workspace_slice(workspace: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if workspace.len() < len {
        workspace.resize(len, 0.0);
    }
    &mut workspace[..len]
}

/// The inputs and output of one convolution's forward pass:
/// `output = act(conv(input, weight) + bias)`.
pub struct ConvForward<'a> {
    pub geom: ConvGeometry,
    pub n: usize,
    /// `n x H x W x C_in`.
    pub input: &'a [f32],
    /// HWIO.
    pub weight: &'a [f32],
    /// `C_out` values.
    pub bias: Option<&'a [f32]>,
    pub act: Activation,
    /// `n x OH x OW x C_out`, overwritten.
    pub output: &'a mut [f32],
    pub algorithm: ConvAlgorithm,
    pub operands: Operands,
}

impl ConvForward<'_> {
    /// Runs the forward pass; `workspace` (grown on first use, then reused)
    /// holds the Winograd path's transformed weights.
    pub fn run(self, workspace: &mut Vec<f32>) {
        let Self {
            geom,
            n,
            input,
            weight,
            bias,
            act,
            output,
            algorithm,
            operands,
        } = self;
        let (k, out_c) = (geom.k(), geom.out_shape.c);
        assert_eq!(input.len(), n * geom.in_shape.len(), "conv input size");
        assert_eq!(weight.len(), geom.weight_len(), "conv weight size");
        assert_eq!(output.len(), n * geom.out_shape.len(), "conv output size");
        if let Some(bias) = bias {
            assert_eq!(bias.len(), out_c, "conv bias size");
        }
        if output.is_empty() {
            return;
        }
        // Winograd layers run f32 products whatever `operands` (see
        // `winograd`: bf16 there is both less accurate and slower).
        if algorithm.winograd(&geom) {
            let in_c = geom.in_shape.c;
            let u = workspace_slice(workspace, winograd::POINTS * in_c * out_c);
            winograd::transform_weights(weight, in_c, out_c, u);
            winograd::forward(&geom.forward_corr(), n, input, u, bias, act, output);
            return;
        }
        let chunk_rows = geom.chunk_rows();
        let rhs = SharedRhs::new(View::row_major(weight, k, out_c), operands);
        output
            .par_chunks_mut(chunk_rows * out_c)
            .enumerate()
            .for_each(|(chunk_idx, out)| {
                let first_row = chunk_idx * chunk_rows;
                let rows = out.len() / out_c;
                if geom.is_pointwise() {
                    let c = geom.in_shape.c;
                    let x = &input[first_row * c..(first_row + rows) * c];
                    rhs.matmul(out, View::row_major(x, rows, c), false);
                } else {
                    with_scratch(rows * k, |col| {
                        im2col(&geom, input, first_row, rows, col);
                        rhs.matmul(out, View::row_major(col, rows, k), false);
                    });
                }
                epilogue(out, out_c, bias, act);
            });
    }
}

avx512_dispatch! {
    /// Adds the bias to every row of `out` and applies the activation.
    fn epilogue(out: &mut [f32], out_c: usize, bias: Option<&[f32]>, act: Activation) {
    let Some(bias) = bias else {
        activation::forward_serial(act, out);
        return;
    };
    for row in out.chunks_exact_mut(out_c) {
        match act {
            Activation::None => row.iter_mut().zip(bias).for_each(|(y, b)| *y += b),
            Activation::Relu => row
                .iter_mut()
                .zip(bias)
                .for_each(|(y, b)| *y = (*y + b).max(0.0)),
            Activation::LeakyRelu { slope } => row.iter_mut().zip(bias).for_each(|(y, b)| {
                let x = *y + b;
                *y = if x > 0.0 { x } else { slope * x };
            }),
        }
    }
    }
}

/// Where the output positions of one row of the column matrix read from.
#[derive(Debug, Clone, Copy)]
struct RowWindow {
    /// Offset of input row `ih = top` at column `iw = left + kw_lo` of the
    /// image, in values, when `ih` is inside the image.
    image: usize,
    /// Input row of kernel row 0 (may be negative: padding).
    top: isize,
    /// Input column of kernel column 0 (may be negative: padding).
    left: isize,
    /// Kernel columns that fall inside the input: `kw_lo..kw_hi`.
    kw_lo: usize,
    kw_hi: usize,
}

impl RowWindow {
    /// The window of output position `m` (counted from the first image of
    /// the slice the caller indexes).
    fn of(geom: &ConvGeometry, m: usize) -> Self {
        let w = &geom.window;
        let out_w = geom.out_shape.w;
        let per_image = geom.rows_per_image();
        let (image, pos) = (m / per_image, m % per_image);
        let (oh, ow) = (pos / out_w, pos % out_w);
        let top = (oh * w.stride_h) as isize - w.pad.top as isize;
        let left = (ow * w.stride_w) as isize - w.pad.left as isize;
        let in_w = geom.in_shape.w as isize;
        let kw = w.kw as isize;
        let kw_lo = (-left).clamp(0, kw) as usize;
        let kw_hi = (in_w - left).clamp(0, kw) as usize;
        Self {
            image,
            top,
            left,
            kw_lo,
            kw_hi,
        }
    }

    /// Offset in the input slice of `(ih, left + kw_lo)`, for `ih` inside.
    fn offset(&self, geom: &ConvGeometry, ih: usize) -> usize {
        let s = &geom.in_shape;
        ((self.image * s.h + ih) * s.w + (self.left + self.kw_lo as isize) as usize) * s.c
    }
}

/// Writes rows `first_row..first_row + rows` of the column matrix of `input`
/// into `col` (`rows x K`, row-major). Padding reads as zero.
///
/// Kernel columns `kw` of one kernel row read consecutive input columns, so
/// each kernel row is one contiguous copy plus zero fill at the borders.
pub fn im2col(geom: &ConvGeometry, input: &[f32], first_row: usize, rows: usize, col: &mut [f32]) {
    let k = geom.k();
    let c = geom.in_shape.c;
    let row_len = geom.window.kw * c;
    let in_h = geom.in_shape.h as isize;
    for (r, col_row) in col[..rows * k].chunks_exact_mut(k).enumerate() {
        let win = RowWindow::of(geom, first_row + r);
        for (kh, dst) in col_row.chunks_exact_mut(row_len).enumerate() {
            let ih = win.top + kh as isize;
            if ih < 0 || ih >= in_h || win.kw_lo >= win.kw_hi {
                dst.fill(0.0);
                continue;
            }
            let src = win.offset(geom, ih as usize);
            let (lo, hi) = (win.kw_lo * c, win.kw_hi * c);
            dst[..lo].fill(0.0);
            dst[lo..hi].copy_from_slice(&input[src..src + hi - lo]);
            dst[hi..].fill(0.0);
        }
    }
}

avx512_dispatch! {
/// The adjoint of [`im2col`]: adds rows `first_row..first_row + rows` of a
/// column matrix (`rows x K`) into `grad_input`; padding positions are
/// dropped.
pub fn col2im_add(
    geom: &ConvGeometry,
    col: &[f32],
    first_row: usize,
    rows: usize,
    grad_input: &mut [f32],
) {
    let k = geom.k();
    let c = geom.in_shape.c;
    let row_len = geom.window.kw * c;
    let in_h = geom.in_shape.h as isize;
    for (r, col_row) in col[..rows * k].chunks_exact(k).enumerate() {
        let win = RowWindow::of(geom, first_row + r);
        for (kh, src) in col_row.chunks_exact(row_len).enumerate() {
            let ih = win.top + kh as isize;
            if ih < 0 || ih >= in_h || win.kw_lo >= win.kw_hi {
                continue;
            }
            let dst = win.offset(geom, ih as usize);
            let (lo, hi) = (win.kw_lo * c, win.kw_hi * c);
            for (d, s) in grad_input[dst..dst + hi - lo].iter_mut().zip(&src[lo..hi]) {
                *d += s;
            }
        }
    }
}
}

/// The inputs and outputs of one convolution's backward pass.
pub struct ConvBackward<'a> {
    pub geom: ConvGeometry,
    pub n: usize,
    /// The forward input, `n x H x W x C_in` (read only when the weight
    /// gradient is wanted).
    pub input: &'a [f32],
    pub weight: &'a [f32],
    /// On entry the signal at the activation's output; on exit the signal at
    /// the convolution's output (gated in place by `act` and `rule`).
    pub grad_out: &'a mut [f32],
    pub act: Activation,
    pub rule: ReluRule,
    /// A tensor with the sign of the activation's input (its output unless
    /// [`activation::needs_input`]), `n x OH x OW x C_out`.
    pub act_forward: &'a [f32],
    /// Receives the signal at the input (overwritten).
    pub grad_input: Option<&'a mut [f32]>,
    /// Receive the parameter gradients (overwritten).
    pub grad_weight: Option<&'a mut [f32]>,
    pub grad_bias: Option<&'a mut [f32]>,
    pub algorithm: ConvAlgorithm,
    pub operands: Operands,
}

/// The slices one group of images works on.
struct GroupTask<'a> {
    first_image: usize,
    images: usize,
    grad_out: &'a mut [f32],
    grad_input: Option<&'a mut [f32]>,
    /// `K x C_out` weight partial followed by `C_out` bias partial.
    partial: Option<&'a mut [f32]>,
}

/// Splits `slice` into consecutive pieces of `units[i] * unit_len` values.
fn split_by_units<'a, T>(
    mut slice: &'a mut [T],
    units: &[usize],
    unit_len: usize,
) -> Vec<&'a mut [T]> {
    let mut pieces = Vec::with_capacity(units.len());
    for &count in units {
        let (head, tail) = slice.split_at_mut(count * unit_len);
        pieces.push(head);
        slice = tail;
    }
    pieces
}

impl ConvBackward<'_> {
    /// Runs the backward pass. `workspace` holds the groups' partial
    /// gradients; it grows on first use and is reused afterwards.
    pub fn run(self, workspace: &mut Vec<f32>) {
        let geom = self.geom;
        let n = self.n;
        let (k, out_c) = (geom.k(), geom.out_shape.c);
        let in_len = geom.in_shape.len();
        let out_len = geom.out_shape.len();
        assert_eq!(self.weight.len(), geom.weight_len(), "conv weight size");
        assert_eq!(self.grad_out.len(), n * out_len, "conv grad_out size");
        assert_eq!(self.act_forward.len(), n * out_len, "conv act_forward size");
        if let Some(gi) = &self.grad_input {
            assert_eq!(gi.len(), n * in_len, "conv grad_input size");
        }
        if let Some(gw) = &self.grad_weight {
            assert_eq!(gw.len(), k * out_c, "conv grad_weight size");
        }
        if let Some(gb) = &self.grad_bias {
            assert_eq!(gb.len(), out_c, "conv grad_bias size");
        }
        let want_params = self.grad_weight.is_some() || self.grad_bias.is_some();
        if want_params {
            assert_eq!(self.input.len(), n * in_len, "conv input size");
        }
        if n == 0 {
            for grad in [self.grad_weight, self.grad_bias].into_iter().flatten() {
                grad.fill(0.0);
            }
            return;
        }
        if self.algorithm.winograd(&geom) {
            self.run_winograd(workspace);
            return;
        }

        let groups = n.min(WEIGHT_GRAD_GROUPS);
        let images: Vec<usize> = (0..groups)
            .map(|g| (g + 1) * n / groups - g * n / groups)
            .collect();
        let partial_len = k * out_c + out_c;
        let mut grad_outs = split_by_units(self.grad_out, &images, out_len).into_iter();
        let mut grad_inputs = self
            .grad_input
            .map(|gi| split_by_units(gi, &images, in_len).into_iter());
        let mut partials = if want_params {
            if workspace.len() < groups * partial_len {
                workspace.resize(groups * partial_len, 0.0);
            }
            Some(workspace[..groups * partial_len].chunks_exact_mut(partial_len))
        } else {
            None
        };
        let mut tasks = Vec::with_capacity(groups);
        let mut first_image = 0;
        for &count in &images {
            tasks.push(GroupTask {
                first_image,
                images: count,
                grad_out: grad_outs.next().expect("one piece per group"),
                grad_input: grad_inputs.as_mut().and_then(|it| it.next()),
                partial: partials.as_mut().and_then(|it| it.next()),
            });
            first_image += count;
        }

        let weight_t = grad_inputs
            .is_some()
            .then(|| SharedRhs::new(View::row_major(self.weight, k, out_c).t(), self.operands));
        let shared = GroupShared {
            geom,
            input: self.input,
            weight_t,
            act: self.act,
            rule: self.rule,
            act_forward: self.act_forward,
            operands: self.operands,
        };
        tasks
            .into_par_iter()
            .for_each(|task| shared.run_group(task));

        if let Some(grad_weight) = self.grad_weight {
            let partials = &workspace[..groups * partial_len];
            grad_weight
                .par_chunks_mut(REDUCE_CHUNK)
                .enumerate()
                .for_each(|(chunk_idx, out)| {
                    let start = chunk_idx * REDUCE_CHUNK;
                    sum_partials(out, partials, partial_len, start);
                });
        }
        if let Some(grad_bias) = self.grad_bias {
            sum_partials(
                grad_bias,
                &workspace[..groups * partial_len],
                partial_len,
                k * out_c,
            );
        }
    }
}

impl ConvBackward<'_> {
    /// The Winograd backward pass: gate the signal, then the bias gradient
    /// (column sums), the weight gradient and the input signal.
    fn run_winograd(self, workspace: &mut Vec<f32>) {
        let geom = self.geom;
        let (in_c, out_c) = (geom.in_shape.c, geom.out_shape.c);
        activation::backward(self.act, self.rule, self.act_forward, self.grad_out);
        let grad_out = &*self.grad_out;
        if let Some(grad_bias) = self.grad_bias {
            column_sums(grad_out, out_c, grad_bias);
        }
        if let Some(grad_weight) = self.grad_weight {
            let corr = geom.forward_corr();
            let len = winograd::weight_grad_workspace(&corr);
            let ws = workspace_slice(workspace, len);
            winograd::weight_grad(&corr, self.n, self.input, grad_out, grad_weight, ws);
        }
        if let Some(grad_input) = self.grad_input {
            let plane = in_c * out_c;
            let ws = workspace_slice(workspace, (9 + winograd::POINTS) * plane);
            let (flipped, u) = ws.split_at_mut(9 * plane);
            winograd::transform_weights_flipped(self.weight, in_c, out_c, flipped, u);
            let corr = geom.backward_corr();
            winograd::forward(
                &corr,
                self.n,
                grad_out,
                u,
                None,
                Activation::None,
                grad_input,
            );
        }
    }
}

/// Columns per parallel task of [`column_sums`].
const COLUMN_TASK: usize = 32;

/// `out[j] = sum over rows i, in order, of values[i * cols + j]`; each task
/// owns a block of columns, so the order never depends on the thread count.
fn column_sums(values: &[f32], cols: usize, out: &mut [f32]) {
    assert_eq!(out.len(), cols, "column sums size");
    out.par_chunks_mut(COLUMN_TASK)
        .enumerate()
        .for_each(|(task, out)| {
            let first = task * COLUMN_TASK;
            out.fill(0.0);
            for row in values.chunks_exact(cols) {
                for (o, v) in out.iter_mut().zip(&row[first..]) {
                    *o += v;
                }
            }
        });
}

/// `out[i] = sum over groups g, in order, of partials[g * stride + start + i]`.
fn sum_partials(out: &mut [f32], partials: &[f32], stride: usize, start: usize) {
    let len = out.len();
    for (g, group) in partials.chunks_exact(stride).enumerate() {
        let src = &group[start..start + len];
        if g == 0 {
            out.copy_from_slice(src);
        } else {
            out.iter_mut().zip(src).for_each(|(o, s)| *o += s);
        }
    }
}

/// What every group task reads.
struct GroupShared<'a> {
    geom: ConvGeometry,
    input: &'a [f32],
    /// The transposed weights, when the input signal is wanted.
    weight_t: Option<SharedRhs<'a>>,
    act: Activation,
    rule: ReluRule,
    act_forward: &'a [f32],
    operands: Operands,
}

impl GroupShared<'_> {
    /// The backward pass of one group of images, chunk by chunk.
    fn run_group(&self, task: GroupTask<'_>) {
        let geom = &self.geom;
        let (k, out_c, in_c) = (geom.k(), geom.out_shape.c, geom.in_shape.c);
        let per_image = geom.rows_per_image();
        let rows_total = task.images * per_image;
        let out_start = task.first_image * geom.out_shape.len();
        let act_forward = &self.act_forward[out_start..out_start + task.grad_out.len()];
        let in_len = geom.in_shape.len();
        let input = if task.partial.is_some() {
            &self.input[task.first_image * in_len..(task.first_image + task.images) * in_len]
        } else {
            &[][..]
        };
        let pointwise = geom.is_pointwise();
        let mut grad_input = task.grad_input;
        if let Some(gi) = grad_input.as_deref_mut() {
            if !pointwise {
                gi.fill(0.0);
            }
        }
        let mut partial = task.partial;
        if let Some(p) = partial.as_deref_mut() {
            // A group without rows still owes a (zero) partial sum.
            p.fill(0.0);
        }
        let chunk_rows = geom.chunk_rows();
        let mut first_row = 0;
        while first_row < rows_total {
            let rows = chunk_rows.min(rows_total - first_row);
            let span = first_row * out_c..(first_row + rows) * out_c;
            let grad_out = &mut task.grad_out[span.clone()];
            activation::backward_serial(self.act, self.rule, &act_forward[span], grad_out);
            let grad_out = &*grad_out;
            let dy = View::row_major(grad_out, rows, out_c);

            if let Some(p) = partial.as_deref_mut() {
                let (pw, pb) = p.split_at_mut(k * out_c);
                for row in grad_out.chunks_exact(out_c) {
                    pb.iter_mut().zip(row).for_each(|(b, g)| *b += g);
                }
                if pointwise {
                    let x = &input[first_row * in_c..(first_row + rows) * in_c];
                    matmul(
                        pw,
                        View::row_major(x, rows, in_c).t(),
                        dy,
                        true,
                        self.operands,
                    );
                } else {
                    with_scratch(rows * k, |col| {
                        im2col(geom, input, first_row, rows, col);
                        matmul(
                            pw,
                            View::row_major(col, rows, k).t(),
                            dy,
                            true,
                            self.operands,
                        );
                    });
                }
            }
            if let (Some(gi), Some(weight_t)) = (grad_input.as_deref_mut(), &self.weight_t) {
                if pointwise {
                    let dx = &mut gi[first_row * in_c..(first_row + rows) * in_c];
                    weight_t.matmul(dx, dy, false);
                } else {
                    with_scratch(rows * k, |dcol| {
                        weight_t.matmul(dcol, dy, false);
                        col2im_add(geom, dcol, first_row, rows, gi);
                    });
                }
            }
            first_row += rows;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Padding;
    use crate::rng::SplitMix64;
    use std::sync::atomic::Ordering;

    fn random(seed: u64, len: usize) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..len).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
    }

    /// Forward and backward outputs of one layer, all concatenated.
    fn run_layer(geom: ConvGeometry, n: usize, algorithm: ConvAlgorithm) -> Vec<f32> {
        let x = random(1, n * geom.in_shape.len());
        let w = random(2, geom.weight_len());
        let b = random(3, geom.out_shape.c);
        let mut y = vec![0.0; n * geom.out_shape.len()];
        let mut workspace = Vec::new();
        let act = Activation::LeakyRelu { slope: 0.1 };
        ConvForward {
            geom,
            n,
            input: &x,
            weight: &w,
            bias: Some(&b),
            act,
            output: &mut y,
            algorithm,
            operands: Operands::F32,
        }
        .run(&mut workspace);
        let mut dy = random(4, y.len());
        let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; b.len()]);
        ConvBackward {
            geom,
            n,
            input: &x,
            weight: &w,
            grad_out: &mut dy,
            act,
            rule: ReluRule::Guided,
            act_forward: &y,
            grad_input: Some(&mut dx),
            grad_weight: Some(&mut dw),
            grad_bias: Some(&mut db),
            algorithm,
            operands: Operands::F32,
        }
        .run(&mut workspace);
        [y, dy, dx, dw, db].concat()
    }

    /// The AVX-512 and portable copies of the dispatched loops (Winograd
    /// transforms, epilogue, col2im, activation gates) give equal results,
    /// including channel counts that are not multiples of 16.
    #[test]
    fn portable_path_matches_avx512_path() {
        let pad = Padding {
            top: 1,
            left: 1,
            bottom: 1,
            right: 1,
        };
        let window = Window {
            kh: 3,
            kw: 3,
            stride_h: 1,
            stride_w: 1,
            pad,
        };
        let winograd = ConvGeometry {
            in_shape: Shape::new(24, 9, 7),
            out_shape: Shape::new(20, 9, 7),
            window,
        };
        assert!(winograd.uses_winograd());
        let strided = ConvGeometry {
            in_shape: Shape::new(5, 9, 7),
            out_shape: Shape::new(6, 5, 4),
            window: Window {
                stride_h: 2,
                stride_w: 2,
                ..window
            },
        };
        for (geom, algorithm) in [
            (winograd, ConvAlgorithm::Auto),
            (winograd, ConvAlgorithm::Im2col),
            (strided, ConvAlgorithm::Auto),
        ] {
            let wide = run_layer(geom, 3, algorithm);
            super::super::simd::FORCE_PORTABLE.store(true, Ordering::Relaxed);
            let portable = run_layer(geom, 3, algorithm);
            super::super::simd::FORCE_PORTABLE.store(false, Ordering::Relaxed);
            assert_eq!(wide, portable, "{algorithm:?}");
        }
    }
}
