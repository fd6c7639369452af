//! The CUDA back end's output: golden snapshots of the generated `.cu` for
//! two models, and NVRTC compiling every bundled model for sm_90.
//!
//! The NVRTC test needs `libnvrtc.so` (13.0.x) on the library path:
//! `eval "$(scripts/install-nvrtc.sh)"` sets it up (the README's test
//! command does); without it the test fails, saying so.

use allcnnc::back;
use runtime::cuda::nvrtc;
use runtime::plan::Plan;
use std::path::{Path, PathBuf};

/// How to get NVRTC: the README's test command installs it.
const NVRTC_HINT: &str =
    "install NVRTC 13.0 with `eval \"$(scripts/install-nvrtc.sh)\"` (scripts/test.sh does)";

fn plan_of(path: &Path) -> Plan {
    allcnnc::driver::Model::from_file(path)
        .unwrap_or_else(|err| panic!("{} does not compile:\n{err}", path.display()))
        .plan
}

fn models() -> Vec<PathBuf> {
    let mut models: Vec<PathBuf> = std::fs::read_dir("models")
        .expect("models folder")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "net"))
        .collect();
    models.sort();
    models
}

fn snapshot(model: &str) {
    let path = PathBuf::from(format!("models/{model}.net"));
    let program = back::cuda::generate(&plan_of(&path));
    insta::with_settings!({ omit_expression => true, description => path.display().to_string() }, {
        insta::assert_snapshot!(format!("cuda_{}", model.replace('-', "_")), program.source);
    });
}

#[test]
fn all_cnn_c_source() {
    snapshot("all-cnn-c");
}

#[test]
fn model_c_source() {
    snapshot("model-c");
}

#[test]
fn generation_is_deterministic() {
    let plan = plan_of(Path::new("models/all-cnn-c.net"));
    let first = back::cuda::generate(&plan);
    let second = back::cuda::generate(&plan);
    assert_eq!(first, second);
    assert_eq!(first.plan.source_sha256.len(), 64);
}

/// Every kernel the plan names is defined in the source, with a comment.
#[test]
fn every_planned_kernel_is_in_the_source() {
    for path in models() {
        let program = back::cuda::generate(&plan_of(&path));
        for kernel in &program.plan.kernels {
            let definition = format!(" {}(\n", kernel.name);
            let prelude = format!("{}(const float", kernel.name);
            assert!(
                program.source.contains(&definition) || program.source.contains(&prelude),
                "{}: kernel {} is not defined",
                path.display(),
                kernel.name
            );
        }
        let launches = program
            .plan
            .forward
            .iter()
            .chain(&program.plan.backward)
            .chain(&program.plan.update)
            .chain(&program.plan.infer);
        for launch in launches {
            assert!(launch.kernel < program.plan.kernels.len());
        }
    }
}

/// NVRTC 13.0 compiles every bundled model for sm_90, the PTX is ISA 9.0 or
/// older, ptxas reports every kernel, and nothing spills.
#[test]
fn every_model_compiles_with_nvrtc() {
    let version = nvrtc::nvrtc_version().unwrap_or_else(|err| panic!("{err}; {NVRTC_HINT}"));
    println!("NVRTC {}.{}", version.0, version.1);
    let models = models();
    let results: Vec<(PathBuf, Result<String, String>)> = std::thread::scope(|scope| {
        let chunks: Vec<&[PathBuf]> = models.chunks(models.len().div_ceil(2)).collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|path| {
                            let program = back::cuda::generate(&plan_of(path));
                            let result = back::cuda::report::compile(&program, "sm_90")
                                .map_err(|err| err.to_string())
                                .and_then(|compiled| {
                                    for kernel in &program.plan.kernels {
                                        let Some(k) =
                                            compiled.kernels.iter().find(|k| k.name == kernel.name)
                                        else {
                                            return Err(format!(
                                                "{} not in ptxas's report",
                                                kernel.name
                                            ));
                                        };
                                        if k.spill_store_bytes > 0 || k.spill_load_bytes > 0 {
                                            return Err(format!("{} spills registers", k.name));
                                        }
                                        if k.shared_bytes != kernel.static_shared_bytes {
                                            return Err(format!(
                                                "{}: ptxas says {} bytes of shared memory, the plan {}",
                                                k.name, k.shared_bytes, kernel.static_shared_bytes
                                            ));
                                        }
                                    }
                                    Ok(back::cuda::report::render_verification(
                                        &program, "sm_90", &compiled,
                                    ))
                                });
                            (path.clone(), result)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("compile thread"))
            .collect()
    });
    let mut failures = Vec::new();
    for (path, result) in results {
        match result {
            Ok(table) => println!("{}:{table}", path.display()),
            Err(err) => failures.push(format!("{}: {err}", path.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `--precision tf32` and `bf16`: every convolution GEMM of All-CNN-C and
/// Model C (forward, gradient of the input, gradient of the weights) runs
/// its `_mma` template, NVRTC compiles the module for sm_90 without spills
/// or stack frames,
/// and the PTX holds the warp-wide mma instructions (one shape per
/// precision); the fp32 module has none.
#[test]
fn tensor_core_programs_compile_with_nvrtc() {
    use back::cuda::Precision;
    if let Err(err) = nvrtc::nvrtc_version() {
        panic!("{err}; {NVRTC_HINT}");
    }
    // The paper's models, and convolutions without a bias (whose
    // weight-gradient kernels declare less shared memory).
    for file in [
        "models/all-cnn-c.net",
        "models/model-c.net",
        "tests/codegen/no-bias.net",
    ] {
        let path = PathBuf::from(file);
        let model = path.file_stem().expect("a file name").to_string_lossy();
        let plan = plan_of(&path);
        let fp32 = back::cuda::generate(&plan).source;
        let gemms: usize = [
            "allcnnc::conv_forward<",
            "allcnnc::conv_backward_data<",
            "allcnnc::conv_backward_weights<",
        ]
        .iter()
        .map(|call| fp32.matches(call).count())
        .sum();
        let convs = plan
            .layers
            .iter()
            .filter(|l| matches!(l.op, runtime::plan::Op::Conv { .. }))
            .count();
        // Forward, gradient of the weights and (but for the first) of the input.
        assert!(
            gemms >= 3 * convs - 1,
            "{model}: {gemms} GEMM kernels for {convs} convs"
        );
        for (precision, instruction) in [
            (Precision::Fp32, None),
            (
                Precision::Tf32,
                Some("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32"),
            ),
            (
                Precision::Bf16,
                Some("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"),
            ),
        ] {
            let program = back::cuda::generate_with(&plan, precision);
            let calls = program.source.matches("_mma<").count();
            let want = if instruction.is_some() { gemms } else { 0 };
            assert_eq!(
                calls,
                want,
                "{model} {}: tensor-core kernels",
                precision.name()
            );
            let compiled = back::cuda::report::compile(&program, "sm_90")
                .unwrap_or_else(|err| panic!("{model} {}: {err}", precision.name()));
            for kernel in &compiled.kernels {
                assert_eq!(
                    kernel.spill_store_bytes + kernel.spill_load_bytes,
                    0,
                    "{model} {}: {} spills",
                    precision.name(),
                    kernel.name
                );
                // No local memory at all: a register array indexed by a
                // loop that did not unroll (the staged operands) would land
                // in the stack frame without counting as a spill.
                assert_eq!(
                    kernel.stack_bytes,
                    0,
                    "{model} {}: {} has a {}-byte stack frame",
                    precision.name(),
                    kernel.name,
                    kernel.stack_bytes
                );
                // The launch-limits test reads the plan's figure.
                let spec = program
                    .plan
                    .kernels
                    .iter()
                    .find(|k| k.name == kernel.name)
                    .expect("a compiled kernel is in the plan");
                assert_eq!(
                    kernel.shared_bytes,
                    spec.static_shared_bytes,
                    "{model} {}: {} shared memory, ptxas vs plan",
                    precision.name(),
                    kernel.name
                );
            }
            match instruction {
                Some(mma) => assert!(
                    compiled.ptx.contains(mma),
                    "{model} {}: no {mma} in the PTX",
                    precision.name()
                ),
                None => assert!(!compiled.ptx.contains("mma.sync")),
            }
            println!(
                "{}",
                back::cuda::report::render_verification(&program, "sm_90", &compiled)
            );
        }
    }
}

/// Every launch of every bundled model, in every precision, at batch sizes
/// from 1 to 1024, fits the launch limits of sm_90: at most 1024 threads a
/// block (x, y <= 1024, z <= 64), grid x below 2^31 and y, z at most
/// 65,535, and at most 48 KiB of shared memory a block (the executor sets
/// no opt-in attribute for more). The emulator checks none of these, and a
/// GPU refuses such a launch at run time.
#[test]
fn launches_fit_the_limits_of_sm90() {
    use back::cuda::Precision;
    let mut failures = Vec::new();
    for path in models() {
        let plan = plan_of(&path);
        for precision in [Precision::Fp32, Precision::Tf32, Precision::Bf16] {
            let program = back::cuda::generate_with(&plan, precision);
            // The kernels index a batch's rows with 32-bit ints.
            if let (max, Some(kernel)) = program.plan.max_batch() {
                if max < 1024 {
                    failures.push(format!(
                        "{} {precision:?}: {} takes at most {max} images",
                        path.display(),
                        kernel.name
                    ));
                }
            }
            for kernel in &program.plan.kernels {
                let [bx, by, bz] = kernel.block;
                let shared = kernel.static_shared_bytes + kernel.dynamic_shared_bytes;
                let mut problems = Vec::new();
                if bx * by * bz > 1024 || bx > 1024 || by > 1024 || bz > 64 || bx * by * bz == 0 {
                    problems.push(format!("block {:?}", kernel.block));
                }
                if shared > 48 * 1024 {
                    problems.push(format!("{shared} bytes of shared memory"));
                }
                for n in [1u64, 128, 256, 1024] {
                    let x = kernel
                        .grid
                        .x_items
                        .at(n)
                        .div_ceil(kernel.grid.x_items_per_block.max(1));
                    let (_, y, z) = kernel.grid.dims(n);
                    if x >= 1 << 31 || y == 0 || y > 65_535 || z == 0 || z > 65_535 {
                        problems.push(format!("grid ({x}, {y}, {z}) at batch {n}"));
                    }
                }
                if !problems.is_empty() {
                    failures.push(format!(
                        "{} {precision:?} {}: {}",
                        path.display(),
                        kernel.name,
                        problems.join(", ")
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `compile --report` for All-CNN-C: the launches of a training step (one
/// per weight gradient, no reduction launches), the FLOPs the GEMM tiles
/// execute over the useful ones (96-wide tiles, stride-2 input gradients
/// as phase GEMMs), shared memory from the plan and registers where ptxas's
/// figures are given.
#[test]
fn report_counts_launches_and_executed_flops() {
    use allcnnc::back::cuda::{fuse::fuse_plan, generate_fused, report, Precision};
    let plan = plan_of(Path::new("models/all-cnn-c.net"));
    let fusion = fuse_plan(&plan);
    for (precision, ratio) in [
        (Precision::Fp32, "(1.07x)"),
        (Precision::Tf32, "(1.02x)"),
        (Precision::Bf16, "(1.02x)"),
    ] {
        let program = generate_fused(&plan, &fusion, precision);
        let registers = [("conv3_backward_data".to_string(), 77u32)].into();
        let text = report::render(&fusion, &program.plan, 128, &registers);
        assert!(
            text.contains(
                "launches: 28 per training step (10 forward, 17 backward, 1 update), 10 per inference pass"
            ),
            "{text}"
        );
        let gemms = text
            .lines()
            .find(|line| line.contains("GEMMs of a training step"))
            .unwrap_or_else(|| panic!("no GEMM total:\n{text}"));
        assert!(gemms.ends_with(ratio), "{precision:?}: {gemms}");
        for strided in ["conv3_backward_data", "conv6_backward_data"] {
            let line = text
                .lines()
                .find(|line| line.trim_start().starts_with(strided))
                .unwrap();
            assert!(line.contains(" 1.00x "), "{line}");
            // The four phases along z.
            assert!(line.contains("x4 x 256"), "{line}");
        }
        let line = text
            .lines()
            .find(|line| line.trim_start().starts_with("conv3_backward_data"))
            .unwrap();
        assert!(line.contains(" 77 "), "registers given: {line}");
        let line = text
            .lines()
            .find(|line| line.trim_start().starts_with("conv5_forward"))
            .unwrap();
        let smem = program
            .plan
            .kernels
            .iter()
            .find(|k| k.name == "conv5_forward")
            .unwrap()
            .static_shared_bytes;
        assert!(
            line.contains(&format!("{:.2} kB", f64::from(smem) / 1e3)),
            "{smem} B: {line}"
        );
        assert!(!text.contains("reduce"), "{text}");
    }
}

/// `allcnnc compile --report --verify` on the command line: the report
/// carries ptxas's registers (the program is compiled before the report
/// is printed), and the verification table follows.
#[test]
fn compile_cli_reports_registers_with_verify() {
    nvrtc::nvrtc_version().unwrap_or_else(|err| panic!("{err}; {NVRTC_HINT}"));
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_allcnnc"))
        .args([
            "compile",
            "models/all-cnn-c.net",
            "--report",
            "--verify",
            "-o",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("launches: 28 per training step"),
        "{stdout}"
    );
    let report_line = stdout
        .lines()
        .find(|line| line.trim_start().starts_with("conv5_forward") && line.contains("FLOP"))
        .unwrap_or_else(|| panic!("no report line for conv5_forward:\n{stdout}"));
    let regs: u32 = report_line
        .split_whitespace()
        .rev()
        .nth(3)
        .and_then(|field| field.parse().ok())
        .unwrap_or_else(|| panic!("no registers in {report_line:?}"));
    assert!((16..=255).contains(&regs), "{report_line}");
    assert!(stdout.contains("spill registers"), "{stdout}");
    let cubin =
        std::fs::read(dir.path().join("all_cnn_c.cubin")).expect("the cubin --verify writes");
    assert!(
        cubin.starts_with(b"\x7fELF"),
        "the cubin is not an ELF file"
    );
}
