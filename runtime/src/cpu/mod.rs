//! The CPU backend: kernels for every [`Op`](crate::plan::Op) and the
//! [`CpuExecutor`] that runs a [`Plan`](crate::plan::Plan) with them.
//!
//! Code map:
//! - [`conv`]: convolution forward/backward as im2col + GEMM, with the bias
//!   and activation fused into the forward epilogue; `winograd`: the
//!   F(4x4, 3x3) path of 3x3 stride-1 layers;
//! - [`activation`]: ReLU / leaky ReLU and the three backward rules
//!   (backprop, deconvnet, guided backprop);
//! - [`pool`]: max pooling with switches, Caffe average pooling, global
//!   average pooling;
//! - [`dropout`]: inverted dropout with seeded masks;
//! - [`softmax`]: softmax, mean cross-entropy and their gradients;
//! - [`rng`]: the runtime's SplitMix64 streams ([`crate::rng`], re-exported
//!   here because the generated CUDA's comments name `runtime::cpu::rng`);
//! - `matmul`, `bf16`, `scratch`, `simd`: the single-threaded GEMM wrapper
//!   (f32 through the `gemm` crate, or bf16 operands with AVX512-BF16),
//!   per-thread scratch buffers and AVX-512 dispatch of the pointwise loops;
//! - [`peak`]: the CPU's instruction sets and measured f32 / bf16 peaks;
//! - `executor`: buffers, parameter initialisation, SGD and the
//!   [`Executor`](crate::backend::Executor) implementation.
//!
//! All tensors are channels-last `f32` (`N x H x W x C`, weights HWIO), as
//! the [`plan`](crate::plan) module documents. Kernels run in parallel on the
//! global rayon pool.
//!
//! Invariant: results are bit-identical for any rayon thread count. Work is
//! split into pieces whose size depends on the shapes only, every matrix
//! product runs on one thread, and sums across pieces are taken in a fixed
//! order.

pub mod activation;
mod bf16;
pub mod conv;
pub mod dropout;
mod executor;
mod matmul;
pub mod peak;
pub mod pool;
pub use crate::rng;
mod scratch;
mod simd;
pub mod softmax;
mod winograd;

pub use executor::CpuExecutor;
pub use matmul::Operands;
