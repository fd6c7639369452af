//! A host [`Device`] that runs the generated CUDA kernels on CPU threads.
//!
//! The generated `.cu` is plain CUDA C++ over a small prelude, so with a
//! header that defines the CUDA built-ins (`threadIdx`, `__syncthreads`,
//! `__shared__`, ...; `emulator_shim.h`, put before the source) the
//! system's C++ compiler builds it into a shared library. A launch runs the
//! grid's blocks on one worker thread per core; a block's CUDA threads are
//! fibers on its worker (a user-space context switch, 8 registers, on
//! x86-64; `ucontext` elsewhere), and `__syncthreads` hands over from each
//! fiber to the next in a ring, so a barrier costs a few nanoseconds a
//! thread instead of waking 256 OS threads. `__shared__` arrays become
//! thread-local statics: a worker runs one block at a time, so the block's
//! fibers share them, as on a GPU. Launches are serialised process-wide,
//! since the shim's grid state is global.
//!
//! This is a correctness tool, not a fast path: it checks on machines
//! without a GPU that the plan's schedules, buffers and arguments and the
//! kernels' index arithmetic, masks and tiling compute what the CPU backend
//! computes, by running the same tests as the CUDA device ([`EmulatedExecutor`]
//! is a [`PlanExecutor`] like [`super::CudaExecutor`]). It cannot find what
//! only real hardware shows (warp-level races, occupancy, timing).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use super::driver::{cache_dir, sha256_hex};
use super::plan_executor::{Device, LaunchDims, PlanExecutor, Value};
use super::program::{Arg, Program};
use crate::backend::{BackendError, Result};
use crate::plan::Plan;

/// A model on the host emulator.
pub type EmulatedExecutor = PlanExecutor<HostDevice>;

/// The environment variable naming the C++ compiler (default `g++`).
pub const CXX_ENV: &str = "CXX";

/// The CUDA built-ins on top of worker threads and fibers.
const SHIM: &str = include_str!("emulator_shim.h");

/// The prelude's declaration of the head's dynamic shared memory, and what
/// the emulator puts in its place.
///
/// C++ has no `extern` array bound at launch time, and the shim's
/// `__shared__` is `static`, which `extern` contradicts; so the one dynamic
/// shared array is rewritten into a pointer to the shim's per-launch buffer.
/// The rewrite is on the source text because the generated `.cu` is the CUDA
/// back end's output, which must stay as the GPU needs it: when the prelude
/// stops declaring exactly this line, [`translation_unit`] fails rather than
/// build kernels that would read through an undefined symbol.
const DYNAMIC_SHARED: (&str, &str) = (
    "extern __shared__ float head_shared[];",
    "float* head_shared = allcnnc_emu_dynamic_shared;",
);

/// The C++ translation unit of a program: shim, source, trampolines.
pub fn translation_unit(program: &Program) -> Result<String> {
    let (declaration, replacement) = DYNAMIC_SHARED;
    if !program.source.contains(declaration) {
        return Err(BackendError::Device(format!(
            "the emulator cannot build `{}`: its source lacks `{declaration}`, the dynamic shared memory the emulator maps onto its own buffer",
            program.plan.model
        )));
    }
    let source = program.source.replace(declaration, replacement);
    let mut unit = String::with_capacity(SHIM.len() + source.len() + 4096);
    unit.push_str(SHIM);
    unit.push_str(&source);
    unit.push_str("\n// Trampolines: each kernel called with an array of argument addresses.\n");
    let plan = &program.plan;
    let launches = plan
        .forward
        .iter()
        .chain(&plan.backward)
        .chain(&plan.update)
        .chain(&plan.infer)
        .chain(
            plan.layers
                .iter()
                .flat_map(|l| l.signal_mask.iter().chain(&l.visual_backward)),
        );
    let mut args_of: HashMap<usize, &[Arg]> = HashMap::new();
    for launch in launches {
        args_of.entry(launch.kernel).or_insert(&launch.args);
    }
    for (index, kernel) in plan.kernels.iter().enumerate() {
        let Some(args) = args_of.get(&index) else {
            continue;
        };
        let values: Vec<String> = args
            .iter()
            .enumerate()
            .map(|(i, arg)| match arg {
                Arg::Buffer { .. } => format!("allcnnc_any_ptr{{*(void**)a[{i}]}}"),
                Arg::DropoutKey { .. } => format!("*(u64*)a[{i}]"),
                Arg::LearningRate | Arg::Momentum | Arg::WeightDecay => {
                    format!("*(float*)a[{i}]")
                }
                Arg::Batch | Arg::Training | Arg::Rule | Arg::Int(_) | Arg::Nesterov => {
                    format!("*(int*)a[{i}]")
                }
            })
            .collect();
        let _ = writeln!(
            unit,
            "extern \"C\" void {name}__emulated(void** a) {{ {name}({}); }}",
            values.join(", "),
            name = kernel.name
        );
    }
    Ok(unit)
}

/// Whether the C++ compiler can be run.
pub fn compiler_present() -> bool {
    Command::new(compiler())
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

fn compiler() -> String {
    std::env::var(CXX_ENV).unwrap_or_else(|_| "g++".into())
}

/// The C++ compiler's flags for an emulation library.
fn compiler_flags() -> Vec<&'static str> {
    let mut flags = vec!["-std=c++20", "-O2", "-fPIC", "-shared", "-pthread", "-w"];
    // The GPU contracts a * b + c into fused multiply-adds only where the
    // kernels ask (fmaf); keep the host from doing more.
    flags.push("-ffp-contract=off");
    // The kernels' fmaf as one instruction where the host has FMA (a libm
    // call per multiply-add otherwise); the same exactly rounded result.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        flags.push("-mfma");
    }
    if !compiler().contains("clang") {
        // GCC binds the `__shared__` statics of template kernels (`As` in
        // `conv_forward_mma<conv2_geometry, 2>`) as STB_GNU_UNIQUE, which
        // the dynamic loader unifies across every loaded library: two
        // models with a layer of the same name would share (and overrun)
        // one array. Each library keeps its own.
        flags.push("-fno-gnu-unique");
    }
    flags
}

/// Builds (or finds in the cache) the shared library of a program.
fn build(program: &Program) -> Result<PathBuf> {
    let unit = translation_unit(program)?;
    let flags = compiler_flags();
    let key = sha256_hex(format!("{} {}\n{unit}", compiler(), flags.join(" ")).as_bytes());
    let dir = cache_dir().join("emulator");
    let library = dir.join(format!("{}-{}.so", program.plan.model, &key[..16]));
    if library.is_file() {
        return Ok(library);
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| BackendError::Device(format!("cannot create {}: {e}", dir.display())))?;
    // Two threads may build the same program at once: each writes its own
    // files and renames the library into place.
    static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let build_id = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let unique = format!("{}-{build_id}", std::process::id());
    let source = library.with_extension(format!("{unique}.cpp"));
    std::fs::write(&source, unit)
        .map_err(|e| BackendError::Device(format!("cannot write {}: {e}", source.display())))?;
    let partial = library.with_extension(format!("so.{unique}.partial"));
    let output = Command::new(compiler())
        .args(&flags)
        .arg("-o")
        .arg(&partial)
        .arg(&source)
        .output()
        .map_err(|e| BackendError::Device(format!("cannot run {}: {e}", compiler())))?;
    if !output.status.success() {
        return Err(BackendError::Device(format!(
            "the emulator build of {} failed:\n{}",
            source.display(),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    std::fs::rename(&partial, &library)
        .map_err(|e| BackendError::Device(format!("cannot write {}: {e}", library.display())))?;
    // The source stays beside the library, for reading.
    let _ = std::fs::rename(&source, library.with_extension("cpp"));
    Ok(library)
}

/// One launch at a time in the whole process: the shim's globals (grid,
/// barrier, dynamic shared memory) and the kernels' `__shared__` statics are
/// per library, and two executors of one model share a library.
static LAUNCH_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

type Trampoline = unsafe extern "C" fn(*mut *mut std::ffi::c_void);
type Runner = unsafe extern "C" fn(
    Trampoline,
    *mut *mut std::ffi::c_void,
    u32,
    u32,
    u32,
    u32,
    u32,
    u32,
    u32,
) -> i32;

/// Sixteen bytes of emulated device memory, 16-byte aligned.
#[derive(Clone, Copy, Default)]
#[repr(C, align(16))]
struct Word([u64; 2]);

/// Host memory and the emulated module.
pub struct HostDevice {
    /// Allocations by address, in 16-byte aligned words: aligned for the
    /// kernels' 16-byte vector loads as device allocations are (the shim's
    /// `load4` checks every such load's address).
    memory: HashMap<u64, Vec<Word>>,
    kernels: Vec<Option<Trampoline>>,
    runner: Runner,
    _library: libloading::Library,
}

impl HostDevice {
    /// Builds and loads `program`'s emulation library.
    pub fn open(program: &Program) -> Result<Self> {
        let path = build(program)?;
        // SAFETY: the library is the one just built from the generated
        // source; loading it runs no initialiser with side effects.
        let library = unsafe { libloading::Library::new(&path) }
            .map_err(|e| BackendError::Device(format!("cannot load {}: {e}", path.display())))?;
        // SAFETY: the symbols have the types the shim and the trampolines
        // declare.
        let runner = unsafe { library.get::<Runner>(b"allcnnc_emu_run\0") }
            .map(|symbol| *symbol)
            .map_err(|e| BackendError::Device(format!("emulator runner: {e}")))?;
        let kernels = program
            .plan
            .kernels
            .iter()
            .map(|kernel| {
                let name = format!("{}__emulated\0", kernel.name);
                // SAFETY: as above.
                unsafe { library.get::<Trampoline>(name.as_bytes()) }
                    .ok()
                    .map(|symbol| *symbol)
            })
            .collect();
        Ok(Self {
            memory: HashMap::new(),
            kernels,
            runner,
            _library: library,
        })
    }

    fn words(&self, address: u64) -> Result<&Vec<Word>> {
        self.memory
            .get(&address)
            .ok_or_else(|| BackendError::Device(format!("no allocation at {address:#x}")))
    }
}

impl Device for HostDevice {
    fn name(&self) -> String {
        "emulated cuda (host threads)".into()
    }

    /// Launches run to completion before they return.
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn alloc(&mut self, bytes: usize) -> Result<u64> {
        let words = vec![Word::default(); bytes.div_ceil(16).max(1)];
        let address = words.as_ptr() as u64;
        self.memory.insert(address, words);
        Ok(address)
    }

    fn free(&mut self, address: u64) {
        self.memory.remove(&address);
    }

    fn upload(&mut self, address: u64, data: &[u8]) -> Result<()> {
        let words = self
            .memory
            .get_mut(&address)
            .ok_or_else(|| BackendError::Device(format!("no allocation at {address:#x}")))?;
        let bytes = super::plan_executor::as_bytes_mut(words.as_mut_slice());
        if data.len() > bytes.len() {
            return Err(BackendError::Device("upload past a buffer's end".into()));
        }
        bytes[..data.len()].copy_from_slice(data);
        Ok(())
    }

    fn launch(&mut self, kernel: usize, dims: LaunchDims, args: &[Value]) -> Result<()> {
        let trampoline = self.kernels.get(kernel).copied().flatten().ok_or_else(|| {
            BackendError::Device(format!("kernel #{kernel} has no emulator trampoline"))
        })?;
        let mut slots: Vec<u64> = args
            .iter()
            .map(|value| match *value {
                Value::U64(v) => v,
                Value::I32(v) => v as u32 as u64,
                Value::F32(v) => v.to_bits() as u64,
            })
            .collect();
        let mut pointers: Vec<*mut std::ffi::c_void> = slots
            .iter_mut()
            .map(|slot| (slot as *mut u64).cast())
            .collect();
        let (gx, gy, gz) = dims.grid;
        let (bx, by, bz) = dims.block;
        let _one_at_a_time = LAUNCH_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the trampoline reads `args.len()` argument slots, each an
        // 8-byte value whose low bytes hold the 4-byte ones (little endian);
        // the buffer addresses are live host allocations of this device.
        unsafe {
            (self.runner)(
                trampoline,
                pointers.as_mut_ptr(),
                gx,
                gy,
                gz,
                bx,
                by,
                bz,
                dims.shared_bytes,
            );
        }
        Ok(())
    }

    fn download(&self, address: u64, out: &mut [u8]) -> Result<()> {
        let words = self.words(address)?;
        let bytes = super::plan_executor::as_bytes(words.as_slice());
        if out.len() > bytes.len() {
            return Err(BackendError::Device("download past a buffer's end".into()));
        }
        out.copy_from_slice(&bytes[..out.len()]);
        Ok(())
    }
}

impl PlanExecutor<HostDevice> {
    /// Builds `program` for the host and instantiates it with the parameters
    /// the CPU backend initialises for `seed`.
    pub fn emulated(plan: Plan, program: Program, seed: u64) -> Result<Self> {
        let device = HostDevice::open(&program)?;
        Self::with_device(plan, &program, device, seed)
    }
}
