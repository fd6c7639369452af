//! The CUDA backend: runs the programs the compiler's CUDA back end
//! generates (`allcnnc compile` writes them as `NAME.cu` + `NAME.plan.json`).
//!
//! - [`program`]: the device plan, the contract with the code generator
//!   (re-exported from the `allcnnc-plan` crate);
//! - [`plan_executor`]: [`PlanExecutor`], the interpreter of a device plan
//!   over any [`Device`], and the [`Executor`](crate::backend::Executor) it
//!   implements;
//! - `driver`: [`DriverDevice`], the [`Device`] of the CUDA driver API
//!   (cudarc), and [`CudaExecutor`], the plan executor over it;
//! - [`emulator`]: a host device that runs the same generated kernels on CPU
//!   threads (compiled with the system's C++ compiler), for tests on
//!   machines without a GPU;
//! - [`nvrtc`]: compiling CUDA C to PTX/cubins with ptxas's resource report.
//!
//! Invariant: nothing here links against CUDA. The driver and NVRTC are
//! opened at run time, so the crate builds and its CPU paths run on machines
//! without CUDA; asking for the device there is an error
//! ("no CUDA driver found"), never a panic.

mod driver;
pub mod emulator;
pub mod nvrtc;
pub mod plan_executor;
pub use ::plan::device as program;

pub use driver::{cache_dir, driver_present, CudaExecutor, DriverDevice, CACHE_ENV};
pub use plan_executor::{Device, PlanExecutor};
