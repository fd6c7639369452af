//! `--precision fp32|tf32|bf16`: the command line's spelling of
//! [`Precision`].
//!
//! The back end knows nothing of the command line; this enum carries the
//! flag's values and their help, and converts to the back end's type.

use crate::back::cuda::Precision;
use clap::ValueEnum;

/// Arithmetic of the convolution GEMMs (forward, gradient of the input,
/// gradient of the weights). Everything else (bias, activations, pools,
/// the head, the SGD update) is fp32 in every mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum PrecisionArg {
    /// fp32 FMA on the CUDA cores.
    #[default]
    Fp32,
    /// Tensor cores, inputs rounded to TF32 (10-bit mantissa), fp32 accumulation.
    Tf32,
    /// Tensor cores, inputs rounded to BF16 (7-bit mantissa), fp32 accumulation.
    Bf16,
}

impl From<PrecisionArg> for Precision {
    fn from(arg: PrecisionArg) -> Self {
        match arg {
            PrecisionArg::Fp32 => Precision::Fp32,
            PrecisionArg::Tf32 => Precision::Tf32,
            PrecisionArg::Bf16 => Precision::Bf16,
        }
    }
}
