//! NVRTC: compiling the generated CUDA C to PTX and cubins, with ptxas's
//! resource report, through cudarc's raw `sys` bindings.
//!
//! The raw calls are used (not cudarc's safe `compile_ptx`) because the safe
//! API drops the compile log on success, and the log is where
//! `--ptxas-options=--verbose` puts each kernel's registers, shared memory
//! and spills. NVRTC is loaded at run time; [`nvrtc_version`] turns "not
//! installed" into an error instead of cudarc's panic.
//!
//! Invariant: every PTX this module returns has a `.version` no newer than
//! [`MAX_PTX_VERSION`], the newest the target machines' driver (CUDA 13.0,
//! driver 580) can JIT; a newer NVRTC is refused with a clear error.

use cudarc::nvrtc::sys;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

/// The newest PTX ISA the CUDA 13.0 driver accepts.
pub const MAX_PTX_VERSION: (u32, u32) = (9, 0);

/// The environment variable naming the folder of the CUDA headers.
pub const INCLUDE_ENV: &str = "ALLCNNC_CUDA_INCLUDE";

/// Errors of the NVRTC wrapper.
#[derive(Debug, thiserror::Error)]
pub enum NvrtcError {
    #[error("NVRTC (libnvrtc.so) not found: run scripts/install-nvrtc.sh and put its lib folder on LD_LIBRARY_PATH, or install the CUDA toolkit")]
    Absent,
    #[error("NVRTC call {call} failed: {message}")]
    Call { call: &'static str, message: String },
    #[error("the CUDA source does not compile:\n{log}")]
    Compile { log: String },
    #[error("NVRTC {nvrtc} emitted PTX ISA {found}, newer than {}.{} (the newest the CUDA 13.0 driver JITs): use NVRTC 13.0.x", MAX_PTX_VERSION.0, MAX_PTX_VERSION.1)]
    PtxVersion { found: String, nvrtc: String },
    #[error("the PTX has no .version line")]
    NoPtxVersion,
}

/// What ptxas reported for one kernel.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct KernelResources {
    pub name: String,
    pub registers: u32,
    /// Static shared memory (`smem`) in bytes.
    pub shared_bytes: u32,
    pub stack_bytes: u32,
    pub spill_store_bytes: u32,
    pub spill_load_bytes: u32,
}

/// The result of one compilation.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub ptx: String,
    /// The cubin for the real architecture asked for.
    pub cubin: Vec<u8>,
    /// NVRTC's log (ptxas's report included).
    pub log: String,
    pub kernels: Vec<KernelResources>,
    /// The PTX ISA version of `.version`.
    pub ptx_version: (u32, u32),
    pub nvrtc_version: (i32, i32),
}

/// The loaded NVRTC's version, or [`NvrtcError::Absent`].
pub fn nvrtc_version() -> Result<(i32, i32), NvrtcError> {
    // SAFETY: only tries to open the library by its candidate names.
    if !unsafe { sys::is_culib_present() } {
        return Err(NvrtcError::Absent);
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present; the out-pointers are valid.
    let result = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
    check("nvrtcVersion", result)?;
    Ok((major, minor))
}

/// The folder of the CUDA headers: `$ALLCNNC_CUDA_INCLUDE`, else an
/// `include` folder next to a `lib` folder on `LD_LIBRARY_PATH` that holds
/// NVRTC (the PyPI wheel's layout and the toolkit's), else
/// `$CUDA_HOME/include` or `/usr/local/cuda/include`. The fp32 kernels need
/// no header; the folder is passed to NVRTC when found.
pub fn include_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(INCLUDE_ENV) {
        return Some(PathBuf::from(dir));
    }
    let has_headers = |dir: &Path| dir.join("cuda_fp16.h").is_file();
    if let Some(paths) = std::env::var_os("LD_LIBRARY_PATH") {
        for lib in std::env::split_paths(&paths) {
            let has_nvrtc = std::fs::read_dir(&lib)
                .map(|entries| {
                    entries.flatten().any(|e| {
                        e.file_name()
                            .to_str()
                            .is_some_and(|n| n.starts_with("libnvrtc.so"))
                    })
                })
                .unwrap_or(false);
            if let Some(parent) = lib.parent().filter(|_| has_nvrtc) {
                let include = parent.join("include");
                if has_headers(&include) {
                    return Some(include);
                }
            }
        }
    }
    ["CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(std::env::var_os)
        .map(|home| PathBuf::from(home).join("include"))
        .chain(std::iter::once(PathBuf::from("/usr/local/cuda/include")))
        .find(|dir| has_headers(dir))
}

fn check(call: &'static str, result: sys::nvrtcResult) -> Result<(), NvrtcError> {
    if result == sys::nvrtcResult::NVRTC_SUCCESS {
        return Ok(());
    }
    // SAFETY: nvrtcGetErrorString returns a static C string for any result.
    let message = unsafe { CStr::from_ptr(sys::nvrtcGetErrorString(result)) }
        .to_string_lossy()
        .into_owned();
    Err(NvrtcError::Call { call, message })
}

/// Destroys the program on every path out of [`compile`].
struct ProgramGuard(sys::nvrtcProgram);

impl Drop for ProgramGuard {
    fn drop(&mut self) {
        // SAFETY: the program was created by nvrtcCreateProgram and is
        // destroyed once.
        unsafe {
            sys::nvrtcDestroyProgram(&mut self.0);
        }
    }
}

/// Compiles `source` for the real architecture `arch` (`"sm_90"`) with
/// ptxas's verbose report; gates the PTX version.
pub fn compile(source: &str, file_name: &str, arch: &str) -> Result<Compiled, NvrtcError> {
    let nvrtc_version = nvrtc_version()?;
    let to_c = |text: &str| {
        CString::new(text).map_err(|_| NvrtcError::Call {
            call: "nvrtcCreateProgram",
            message: "a NUL byte in the source or an option".into(),
        })
    };
    let src = to_c(source)?;
    let name = to_c(file_name)?;
    let mut program: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: valid C strings, no headers.
    let result = unsafe {
        sys::nvrtcCreateProgram(
            &mut program,
            src.as_ptr(),
            name.as_ptr(),
            0,
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    check("nvrtcCreateProgram", result)?;
    let guard = ProgramGuard(program);

    let mut options = vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
        "--ptxas-options=--verbose".to_string(),
    ];
    if let Some(include) = include_dir() {
        options.push(format!("--include-path={}", include.display()));
    }
    let options: Vec<CString> = options.iter().map(|o| to_c(o)).collect::<Result<_, _>>()?;
    let pointers: Vec<*const std::ffi::c_char> = options.iter().map(|o| o.as_ptr()).collect();
    // SAFETY: `pointers` holds valid C strings that outlive the call.
    let compiled =
        unsafe { sys::nvrtcCompileProgram(guard.0, pointers.len() as i32, pointers.as_ptr()) };
    let log = program_log(guard.0)?;
    if compiled != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(NvrtcError::Compile { log });
    }

    let mut size = 0usize;
    // SAFETY: the program compiled; the buffers have the reported sizes.
    check("nvrtcGetPTXSize", unsafe {
        sys::nvrtcGetPTXSize(guard.0, &mut size)
    })?;
    let mut ptx = vec![0u8; size];
    check("nvrtcGetPTX", unsafe {
        sys::nvrtcGetPTX(guard.0, ptx.as_mut_ptr().cast())
    })?;
    let ptx = String::from_utf8_lossy(ptx.split(|&b| b == 0).next().unwrap_or(&[])).into_owned();
    check("nvrtcGetCUBINSize", unsafe {
        sys::nvrtcGetCUBINSize(guard.0, &mut size)
    })?;
    let mut cubin = vec![0u8; size];
    check("nvrtcGetCUBIN", unsafe {
        sys::nvrtcGetCUBIN(guard.0, cubin.as_mut_ptr().cast())
    })?;
    drop(guard);

    let ptx_version = ptx_version(&ptx).ok_or(NvrtcError::NoPtxVersion)?;
    if ptx_version > MAX_PTX_VERSION {
        return Err(NvrtcError::PtxVersion {
            found: format!("{}.{}", ptx_version.0, ptx_version.1),
            nvrtc: format!("{}.{}", nvrtc_version.0, nvrtc_version.1),
        });
    }
    let kernels = parse_ptxas_log(&log);
    Ok(Compiled {
        ptx,
        cubin,
        log,
        kernels,
        ptx_version,
        nvrtc_version,
    })
}

fn program_log(program: sys::nvrtcProgram) -> Result<String, NvrtcError> {
    let mut size = 0usize;
    // SAFETY: a live program; the buffer has the reported size.
    check("nvrtcGetProgramLogSize", unsafe {
        sys::nvrtcGetProgramLogSize(program, &mut size)
    })?;
    let mut log = vec![0u8; size.max(1)];
    check("nvrtcGetProgramLog", unsafe {
        sys::nvrtcGetProgramLog(program, log.as_mut_ptr().cast())
    })?;
    Ok(String::from_utf8_lossy(log.split(|&b| b == 0).next().unwrap_or(&[])).into_owned())
}

/// The `.version MAJOR.MINOR` of a PTX text.
pub fn ptx_version(ptx: &str) -> Option<(u32, u32)> {
    let line = ptx
        .lines()
        .find_map(|line| line.trim().strip_prefix(".version"))?;
    let (major, minor) = line.trim().split_once('.')?;
    Some((major.trim().parse().ok()?, minor.trim().parse().ok()?))
}

/// The first number of `text` after `prefix`... up to `suffix`.
fn number_before(text: &str, suffix: &str) -> Option<u32> {
    let end = text.find(suffix)?;
    text[..end].split_whitespace().last()?.parse().ok()
}

/// Reads ptxas's `--verbose` report: per kernel, the `Function properties`
/// line (stack, spills) and the `Used N registers, ... smem` line.
pub fn parse_ptxas_log(log: &str) -> Vec<KernelResources> {
    let mut kernels: Vec<KernelResources> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default().to_string();
            kernels.push(KernelResources {
                name,
                ..Default::default()
            });
            continue;
        }
        let Some(kernel) = kernels.last_mut() else {
            continue;
        };
        if line.contains("bytes stack frame") {
            kernel.stack_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
            if let Some(pos) = line.find("stack frame,") {
                let rest = &line[pos..];
                kernel.spill_store_bytes = number_before(rest, "bytes spill stores").unwrap_or(0);
                kernel.spill_load_bytes = number_before(rest, "bytes spill loads").unwrap_or(0);
            }
        } else if line.contains("Used") && line.contains("registers") {
            let used = &line[line.find("Used").unwrap_or(0)..];
            kernel.registers = number_before(used, "registers").unwrap_or(0);
            kernel.shared_bytes = used
                .find("bytes smem")
                .and_then(|_| number_before(used, "bytes smem"))
                .unwrap_or(0);
        }
    }
    kernels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ptxas_report() {
        let log = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'conv1_forward' for 'sm_90'\n\
ptxas info    : Function properties for conv1_forward\n\
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
ptxas info    : Used 72 registers, used 1 barriers, 8448 bytes smem, 400 bytes cmem[0]\n";
        let kernels = parse_ptxas_log(log);
        assert_eq!(
            kernels,
            vec![KernelResources {
                name: "conv1_forward".into(),
                registers: 72,
                shared_bytes: 8448,
                stack_bytes: 8,
                spill_store_bytes: 4,
                spill_load_bytes: 12,
            }]
        );
    }

    #[test]
    fn reads_ptx_version() {
        assert_eq!(
            ptx_version("//\n.version 9.0\n.target sm_90\n"),
            Some((9, 0))
        );
        assert_eq!(ptx_version(".target sm_90"), None);
    }
}
