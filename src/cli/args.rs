//! What the runtime subcommands share: the `--device` and `--init` flags,
//! the model and checkpoint through the [`driver`](crate::driver) with its
//! messages printed, and the data sets with their fit to the model.

use super::{report, Failure};
use crate::back::cuda::Precision;
use crate::driver::{self, Model, Placed};
use clap::ValueEnum;
use runtime::backend::Executor;
use runtime::data::{self, Dataset, Split};
use runtime::plan::Plan;
use runtime::train::checkpoint::Checkpoint;
use std::path::Path;

/// `--device`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
    /// CUDA when a driver is present, else the CPU
    Auto,
    /// The generated CUDA kernels on host threads (slow; checks the GPU
    /// code path without a GPU, same weights and dropout masks as `cpu`)
    Emulator,
}

impl From<DeviceArg> for driver::Device {
    fn from(device: DeviceArg) -> Self {
        match device {
            DeviceArg::Cpu => driver::Device::Cpu,
            DeviceArg::Cuda => driver::Device::Cuda,
            DeviceArg::Auto => driver::Device::Auto,
            DeviceArg::Emulator => driver::Device::Emulator,
        }
    }
}

/// `--init`: He-normal, or He-normal then LSUV calibration on training images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InitArg {
    He,
    Lsuv,
}

/// The executor of `plan` on `device`, saying so when `auto` fell back.
pub fn executor(
    plan: &Plan,
    seed: u64,
    device: DeviceArg,
    precision: Precision,
) -> Result<Box<dyn Executor>, Failure> {
    let Placed { exec, fallback } =
        driver::place(plan, seed, device.into(), precision).map_err(report)?;
    if let Some(note) = fallback {
        eprintln!("{note}");
    }
    Ok(exec)
}

/// Loads a model and its checkpoint onto a device.
pub fn load_trained(
    file: &Path,
    weights: &Path,
    device: DeviceArg,
    precision: Precision,
) -> Result<(Model, Box<dyn Executor>, Checkpoint), Failure> {
    let model = super::model(file)?;
    let (Placed { exec, fallback }, checkpoint) =
        driver::load_trained(&model, weights, device.into(), precision).map_err(report)?;
    if let Some(note) = fallback {
        eprintln!("{note}");
    }
    Ok((model, exec, checkpoint))
}

/// Loads one split of a data set; an empty split is an error (an accuracy
/// over no images would read as "0.00%").
pub fn load_split(path: &Path, split: Split, limit: Option<usize>) -> Result<Dataset, Failure> {
    let dataset =
        data::load_limited(path, split, limit).map_err(|err| Failure::Message(err.to_string()))?;
    if dataset.is_empty() {
        return Err(format!("data set {} has no {split} images", path.display()).into());
    }
    Ok(dataset)
}

/// Checks that a data set fits the model, naming both sides when not.
pub fn check_fit(plan: &Plan, dataset: &Dataset, path: &Path) -> Result<(), Failure> {
    if dataset.shape != plan.input {
        return Err(format!(
            "data set {} has images of {} (CxHxW) but model `{}` expects {}",
            path.display(),
            dataset.shape,
            plan.name,
            plan.input
        )
        .into());
    }
    if dataset.classes > plan.classes {
        return Err(format!(
            "data set {} has {} classes but model `{}` has {}",
            path.display(),
            dataset.classes,
            plan.name,
            plan.classes
        )
        .into());
    }
    Ok(())
}

/// Refuses a `--batch` whose buffers would not fit the memory of `exec`'s
/// device ([`Executor::fits_batch`]), naming the flag; a command calls it
/// right after creating the executor, before it loads data or builds inputs.
pub fn check_batch(exec: &dyn Executor, n: usize) -> Result<(), Failure> {
    exec.fits_batch(n)
        .map_err(|err| Failure::Message(format!("--batch {n}: {err}")))
}

/// A data set made to fit the model, then checked ([`check_fit`]): a grey
/// data set given to a colour model is repeated on its three channels, as
/// `predict` does with a grey image (see `runtime::data::folder`).
pub fn fit(plan: &Plan, dataset: &mut Dataset, path: &Path) -> Result<(), Failure> {
    // Only images of the model's size: a mismatch is reported as the data
    // set has it, not after a conversion.
    if (dataset.shape.h, dataset.shape.w) == (plan.input.h, plan.input.w) {
        dataset.to_channels(plan.input.c);
    }
    check_fit(plan, dataset, path)
}
