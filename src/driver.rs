//! The driver: the one way from a `.net` file to a running model, shared by
//! the command line, the visualisations, the benches and the tests.
//!
//! - [`Model`]: source text -> checked IR graph -> runtime [`Plan`]
//!   (`front::load`, then `back::plan::lower`);
//! - [`place`]: a plan, a seed, a [`Device`] and a [`Precision`] -> a ready
//!   [`Executor`] (the CPU backend, the CUDA backend with the generated
//!   program, or the emulator running that program on host threads);
//! - [`load_trained`]: a model and a checkpoint -> an executor holding its
//!   weights; [`resume`]: a fresh executor continued from a checkpoint;
//! - [`calibrate`]: LSUV on evenly spaced training images.
//!
//! Nothing here prints: what a caller should say (diagnostics, a device
//! fallback, LSUV factors) comes back as data.

use crate::back;
use crate::back::cuda::Precision;
use crate::diagnostic::{render_plain, Diagnostic, Source};
use crate::front;
use crate::ir::Graph;
use runtime::backend::Executor;
use runtime::cpu::{CpuExecutor, Operands};
use runtime::data::Dataset;
use runtime::plan::Plan;
use runtime::train::checkpoint::Checkpoint;
use runtime::train::init;
use std::path::Path;

/// Why the driver could not produce a model or an executor.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Read(#[from] runtime::file::FileError),
    /// The file is not UTF-8 text; `Display` renders where, without colour.
    #[error("{}", render_plain(.file, .diagnostics))]
    NotText {
        file: Box<Source>,
        diagnostics: Vec<Diagnostic>,
    },
    /// The source has errors; `Display` renders them without colour.
    #[error("{}", render_plain(.file, .diagnostics))]
    Diagnostics {
        file: Box<Source>,
        diagnostics: Vec<Diagnostic>,
    },
    #[error("{0}")]
    Device(String),
    #[error("{0}")]
    Checkpoint(String),
    #[error("{0}")]
    Backend(String),
}

/// A checked model: its text, its IR graph and its runtime plan.
pub struct Model {
    pub source: Source,
    pub graph: Graph,
    pub plan: Plan,
}

/// The longest `.net` file read: 16 MiB. The bundled models are a few KiB
/// and a generated one with thousands of layers stays far below; anything
/// longer (a binary named by mistake, `/dev/zero`) is "too long" after a
/// read of this many bytes, rather than filling memory.
pub const MAX_NET_BYTES: u64 = 16 << 20;

impl Model {
    /// Reads, checks and lowers the `.net` file at `path` (at most
    /// [`MAX_NET_BYTES`]).
    pub fn from_file(path: &Path) -> Result<Self, DriverError> {
        let bytes = runtime::file::read_limited(path, MAX_NET_BYTES, "a .net file")?;
        match front::decode(&path.display().to_string(), bytes) {
            Ok(source) => Self::from_source(source),
            Err((source, diagnostics)) => Err(DriverError::NotText {
                file: Box::new(source),
                diagnostics,
            }),
        }
    }

    /// Checks and lowers `.net` text named `name` (in diagnostics).
    pub fn from_text(name: &str, text: &str) -> Result<Self, DriverError> {
        Self::from_source(Source::new(name, text))
    }

    /// Checks and lowers a source.
    pub fn from_source(source: Source) -> Result<Self, DriverError> {
        match front::load(&source) {
            Ok(graph) => {
                let plan = back::plan::lower(&graph, Some(&source));
                Ok(Self {
                    source,
                    graph,
                    plan,
                })
            }
            Err(diagnostics) => Err(DriverError::Diagnostics {
                file: Box::new(source),
                diagnostics,
            }),
        }
    }
}

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// The generated CUDA program through the driver API; an error without
    /// a driver.
    Cuda,
    /// CUDA when a driver is present and the backend starts, else the CPU.
    Auto,
    /// The generated CUDA program on host threads (slow; the CPU is its
    /// oracle: same initial weights and dropout masks for a seed).
    Emulator,
}

/// An executor and, when `Device::Auto` fell back to the CPU, why.
pub struct Placed {
    pub exec: Box<dyn Executor>,
    pub fallback: Option<String>,
}

/// The executor of `plan` on `device`, with He-normal weights for `seed`.
pub fn place(
    plan: &Plan,
    seed: u64,
    device: Device,
    precision: Precision,
) -> Result<Placed, DriverError> {
    let placed = |exec: Box<dyn Executor>| Placed {
        exec,
        fallback: None,
    };
    match device {
        Device::Cpu => cpu(plan, seed, precision).map(placed),
        Device::Cuda => {
            if !runtime::cuda::driver_present() {
                return Err(DriverError::Device(
                    "--device cuda: no CUDA driver found (libcuda.so could not be loaded); use --device cpu".into(),
                ));
            }
            cuda(plan, seed, precision).map(placed)
        }
        Device::Auto if runtime::cuda::driver_present() => match cuda(plan, seed, precision) {
            Ok(exec) => Ok(placed(exec)),
            Err(err) => auto_cpu(plan, seed, precision, &err.to_string()),
        },
        Device::Auto => auto_cpu(plan, seed, precision, "no CUDA driver found"),
        Device::Emulator => {
            if !runtime::cuda::emulator::compiler_present() {
                return Err(DriverError::Device(
                    "--device emulator: no C++20 compiler found to build the generated kernels for the host (install g++, or name one in $CXX)".into(),
                ));
            }
            let program = back::cuda::generate_with(plan, precision);
            let exec = runtime::cuda::PlanExecutor::emulated(plan.clone(), program, seed)
                .map_err(|err| DriverError::Device(format!("cannot create the emulator: {err}")))?;
            Ok(placed(Box::new(exec)))
        }
    }
}

/// `--device auto` on the CPU, saying why; a GPU-only precision (tf32)
/// becomes fp32 there, saying so, since the user asked for no device.
fn auto_cpu(
    plan: &Plan,
    seed: u64,
    precision: Precision,
    why: &str,
) -> Result<Placed, DriverError> {
    let (precision, note) = match precision {
        Precision::Tf32 => (
            Precision::Fp32,
            "; tf32 is a tensor-core format: fp32 on the CPU",
        ),
        other => (other, ""),
    };
    Ok(Placed {
        exec: cpu(plan, seed, precision)?,
        fallback: Some(format!("device: auto -> cpu ({why}){note}")),
    })
}

/// The CPU backend; `precision` picks the convolutions' operand format:
/// fp32, or bf16 where the CPU has AVX512-BF16. TF32 is a format of
/// NVIDIA's tensor cores, which no CPU has.
fn cpu(plan: &Plan, seed: u64, precision: Precision) -> Result<Box<dyn Executor>, DriverError> {
    let operands = match precision {
        Precision::Fp32 => Operands::F32,
        Precision::Bf16 => Operands::Bf16,
        Precision::Tf32 => {
            return Err(DriverError::Device(
                "--precision tf32 is a format of NVIDIA tensor cores; on the CPU use fp32, or bf16 where the CPU has AVX512-BF16".into(),
            ))
        }
    };
    let exec = CpuExecutor::with_operands(plan.clone(), seed, operands)
        .map_err(|err| DriverError::Device(format!("cannot create the CPU backend: {err}")))?;
    Ok(Box::new(exec))
}

fn cuda(plan: &Plan, seed: u64, precision: Precision) -> Result<Box<dyn Executor>, DriverError> {
    let program = back::cuda::generate_with(plan, precision);
    let exec = runtime::cuda::CudaExecutor::new(plan.clone(), program, seed)
        .map_err(|err| DriverError::Device(format!("cannot create the CUDA backend: {err}")))?;
    Ok(Box::new(exec))
}

/// `model` on `device` with the weights of the checkpoint at `weights`.
pub fn load_trained(
    model: &Model,
    weights: &Path,
    device: Device,
    precision: Precision,
) -> Result<(Placed, Checkpoint), DriverError> {
    let checkpoint = Checkpoint::load(&model.plan, weights)
        .map_err(|err| DriverError::Checkpoint(err.to_string()))?;
    let mut placed = place(&model.plan, 0, device, precision)?;
    placed
        .exec
        .write_params(&checkpoint.params)
        .map_err(|err| DriverError::Backend(err.to_string()))?;
    Ok((placed, checkpoint))
}

/// Continues `exec` from `checkpoint`: its weights and momentum.
pub fn resume(exec: &mut dyn Executor, checkpoint: &Checkpoint) -> Result<(), DriverError> {
    exec.write_params(&checkpoint.params)
        .map_err(|err| DriverError::Backend(err.to_string()))?;
    if !checkpoint.momentum.is_empty() {
        exec.write_momentum(&checkpoint.momentum)
            .map_err(|err| DriverError::Backend(err.to_string()))?;
    }
    Ok(())
}

/// LSUV (see `runtime::train::init`) on evenly spaced images of `data`;
/// returns how many images it used and each layer's factor.
pub fn calibrate(
    exec: &mut dyn Executor,
    data: &Dataset,
) -> Result<(usize, Vec<init::LayerScale>), DriverError> {
    let n = data.len().min(init::CALIBRATION_IMAGES);
    let len = data.shape.len();
    let images: Vec<f32> = (0..n)
        .flat_map(|i| {
            let index = i * data.len() / n;
            data.images[index * len..(index + 1) * len].iter().copied()
        })
        .collect();
    let report =
        init::lsuv(exec, &images, n).map_err(|err| DriverError::Backend(err.to_string()))?;
    Ok((n, report))
}
