//! The CUDA driver (cudarc, loaded at run time): [`DriverDevice`], the
//! [`Device`] that launches the generated kernels on a GPU, and
//! [`CudaExecutor`], the [`PlanExecutor`] over it.
//!
//! The generated source is compiled once per device architecture with NVRTC
//! and the cubin cached on disk under a hash of the source and the
//! architecture (`$ALLCNNC_CACHE_DIR`, else `~/.cache/allcnnc`), so later
//! runs need neither NVRTC nor the compile time. Everything runs on one
//! stream; cudarc's per-buffer event tracking is turned off since nothing
//! else touches the buffers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, LaunchConfig,
    PushKernelArg,
};

use super::nvrtc;
use super::plan_executor::{Device, LaunchDims, PlanExecutor, Value};
use super::program::Program;
use crate::backend::{BackendError, Result};
use crate::plan::Plan;

/// A model on a CUDA device.
pub type CudaExecutor = PlanExecutor<DriverDevice>;

/// The environment variable naming the compiled-module cache folder.
pub const CACHE_ENV: &str = "ALLCNNC_CACHE_DIR";

/// Whether the CUDA driver library (`libcuda.so`) can be loaded.
pub fn driver_present() -> bool {
    // SAFETY: only tries to open the library by its candidate names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

fn device_error(what: &str, err: impl std::fmt::Display) -> BackendError {
    BackendError::Device(format!("CUDA: {what}: {err}"))
}

/// The cache folder: `$ALLCNNC_CACHE_DIR`, else `$XDG_CACHE_HOME/allcnnc`,
/// else `~/.cache/allcnnc`, else the system's temporary folder.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_ENV) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("allcnnc");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".cache").join("allcnnc");
    }
    std::env::temp_dir().join("allcnnc")
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The cubin of `source` for `arch`, from the cache or compiled by NVRTC.
fn cubin(source: &str, name: &str, arch: &str) -> Result<Vec<u8>> {
    let key = sha256_hex(format!("{arch}\n{source}").as_bytes());
    let path = cache_dir().join(format!("{name}-{arch}-{}.cubin", &key[..16]));
    if let Ok(bytes) = std::fs::read(&path) {
        return Ok(bytes);
    }
    let compiled = nvrtc::compile(source, &format!("{name}.cu"), arch)
        .map_err(|err| BackendError::Device(err.to_string()))?;
    // A cache that cannot be written only costs a compile next time.
    if std::fs::create_dir_all(path.parent().unwrap_or(&path)).is_ok() {
        let _ = std::fs::write(&path, &compiled.cubin);
    }
    Ok(compiled.cubin)
}

/// Device 0 through the driver API: one stream, the module's kernels, and
/// the allocations by address.
pub struct DriverDevice {
    name: String,
    multiprocessors: u32,
    // Field order is drop order: buffers and kernels before the stream and
    // the context.
    allocations: HashMap<u64, CudaSlice<u8>>,
    functions: Vec<CudaFunction>,
    _module: Arc<CudaModule>,
    stream: Arc<CudaStream>,
    ctx: Arc<CudaContext>,
}

impl DriverDevice {
    /// Opens device 0 and loads `program`'s module (compiled or cached).
    pub fn open(plan_name: &str, program: &Program) -> Result<Self> {
        if !driver_present() {
            return Err(BackendError::Device(
                "no CUDA driver found (libcuda.so could not be loaded)".into(),
            ));
        }
        let ctx = CudaContext::new(0).map_err(|e| device_error("cannot open device 0", e))?;
        // SAFETY: called before any buffer or stream of this context exists.
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| device_error("compute capability", e))?;
        let name = format!(
            "cuda:0 {} (sm_{major}{minor})",
            ctx.name().unwrap_or_else(|_| "unknown device".into())
        );
        let multiprocessors = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .map_err(|e| device_error("multiprocessor count", e))?
            .max(1) as u32;
        let stream = ctx
            .new_stream()
            .map_err(|e| device_error("cannot create a stream", e))?;
        let binary = cubin(&program.source, plan_name, &format!("sm_{major}{minor}"))?;
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(binary))
            .map_err(|e| device_error("cannot load the module", e))?;
        let functions = program
            .plan
            .kernels
            .iter()
            .map(|k| {
                module
                    .load_function(&k.name)
                    .map_err(|e| device_error(&format!("kernel `{}`", k.name), e))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            name,
            multiprocessors,
            allocations: HashMap::new(),
            functions,
            _module: module,
            stream,
            ctx,
        })
    }

    fn slice(&self, address: u64) -> Result<&CudaSlice<u8>> {
        self.allocations
            .get(&address)
            .ok_or_else(|| BackendError::Device(format!("no allocation at {address:#x}")))
    }
}

impl Device for DriverDevice {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn multiprocessors(&self) -> u32 {
        self.multiprocessors
    }

    /// The GPU's free memory: its buffers live there, not in the host's.
    fn memory_budget(&self) -> Result<crate::budget::Budget> {
        let (free, _total) = self
            .ctx
            .mem_get_info()
            .map_err(|e| device_error("cannot read the free memory", e))?;
        Ok(crate::budget::Budget {
            bytes: free as u64,
            source: crate::budget::Source::DeviceFree(self.name.clone()),
        })
    }

    fn alloc(&mut self, bytes: usize) -> Result<u64> {
        let slice = self
            .stream
            .alloc_zeros::<u8>(bytes)
            .map_err(|e| device_error(&format!("cannot allocate {bytes} bytes"), e))?;
        let address = slice.device_ptr(&self.stream).0;
        self.allocations.insert(address, slice);
        Ok(address)
    }

    fn free(&mut self, address: u64) {
        self.allocations.remove(&address);
    }

    fn upload(&mut self, address: u64, data: &[u8]) -> Result<()> {
        let stream = self.stream.clone();
        let slice = self
            .allocations
            .get_mut(&address)
            .ok_or_else(|| BackendError::Device(format!("no allocation at {address:#x}")))?;
        if data.len() > slice.len() {
            return Err(BackendError::Device(format!(
                "upload of {} bytes into a buffer of {}",
                data.len(),
                slice.len()
            )));
        }
        stream
            .memcpy_htod(data, &mut slice.slice_mut(0..data.len()))
            .map_err(|e| device_error("upload", e))
    }

    fn launch(&mut self, kernel: usize, dims: LaunchDims, args: &[Value]) -> Result<()> {
        let function = &self.functions[kernel];
        let mut builder = self.stream.launch_builder(function);
        for value in args {
            match value {
                Value::U64(v) => builder.arg(v),
                Value::I32(v) => builder.arg(v),
                Value::F32(v) => builder.arg(v),
            };
        }
        let config = LaunchConfig {
            grid_dim: dims.grid,
            block_dim: dims.block,
            shared_mem_bytes: dims.shared_bytes,
        };
        // SAFETY: the arguments follow the kernel's generated signature (the
        // code generator builds both from one list), every address points
        // into an allocation sized for the pass's batch, and the kernels
        // bounds-check every index against the batch size they are given.
        unsafe { builder.launch(config) }.map_err(|e| device_error("kernel launch", e))?;
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| device_error("synchronize", e))
    }

    fn download(&self, address: u64, out: &mut [u8]) -> Result<()> {
        let slice = self.slice(address)?;
        if out.len() > slice.len() {
            return Err(BackendError::Device(format!(
                "download of {} bytes from a buffer of {}",
                out.len(),
                slice.len()
            )));
        }
        self.stream
            .memcpy_dtoh(&slice.slice(0..out.len()), out)
            .map_err(|e| device_error("download", e))?;
        self.stream
            .synchronize()
            .map_err(|e| device_error("synchronize", e))
    }
}

impl PlanExecutor<DriverDevice> {
    /// Loads `program` (generated from `plan` by the compiler's CUDA back
    /// end) on device 0, parameters initialised as the CPU backend's for
    /// `seed`. Without a driver: "no CUDA driver found", never a panic.
    pub fn new(plan: Plan, program: Program, seed: u64) -> Result<Self> {
        let device = DriverDevice::open(&plan.name, &program)?;
        Self::with_device(plan, &program, device, seed)
    }
}
