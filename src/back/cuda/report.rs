//! `compile --report` and `compile --verify`: text tables about a program.
//!
//! The report lists the fused groups and, per kernel, the FLOPs and the
//! bytes moved of one launch at a given batch size (bytes are a lower bound:
//! each tensor counted once, as if caches were perfect). The verification
//! compiles the module with NVRTC for a real architecture and lists what
//! ptxas reported per kernel: registers, static shared memory (plus the
//! dynamic shared memory the plan asks for), stack and spills.

use super::fuse::{Fusion, GroupKind};
use plan::device::DevicePlan;
#[cfg(feature = "runtime")]
use plan::device::Program;
#[cfg(feature = "runtime")]
use runtime::cuda::nvrtc::{self, Compiled, NvrtcError};
use std::collections::HashMap;
use std::fmt::Write;

fn human(value: u64, unit: &str) -> String {
    let v = value as f64;
    if v >= 1e9 {
        format!("{:.2} G{unit}", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2} M{unit}", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.2} k{unit}", v / 1e3)
    } else {
        format!("{value} {unit}")
    }
}

fn kind_text(kind: &GroupKind) -> String {
    match kind {
        GroupKind::Conv {
            act,
            bias,
            input_dropout,
        } => {
            let mut text = String::from("conv");
            if *bias {
                text.push_str(" + bias");
            }
            match act {
                plan::Activation::None => {}
                plan::Activation::Relu => text.push_str(" + relu"),
                plan::Activation::LeakyRelu { .. } => text.push_str(" + leaky relu"),
            }
            if let Some(p) = input_dropout {
                text = format!("dropout {p:?} on load, {text}");
            }
            text
        }
        GroupKind::MaxPool => "max pool".into(),
        GroupKind::AvgPool => "average pool".into(),
        GroupKind::GlobalAvgPool => "global average pool".into(),
        GroupKind::Dropout { p } => format!("dropout {p:?}"),
        GroupKind::Head { gap: true } => "global average pool + softmax + cross-entropy".into(),
        GroupKind::Head { gap: false } => "softmax + cross-entropy".into(),
    }
}

/// The fused groups, the launches of a training step and an inference
/// pass, and per kernel its FLOPs and bytes at batch `batch`, the FLOPs its
/// GEMM tiles execute over the useful ones, its share of a training step,
/// its shared memory (static and dynamic, as the plan declares them) and,
/// where `registers` has it (from ptxas, `compile --verify`), its registers.
pub fn render(
    fusion: &Fusion,
    plan: &DevicePlan,
    batch: u64,
    registers: &HashMap<String, u32>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nfused groups of {}:", plan.model);
    for group in &fusion.groups {
        let _ = writeln!(
            out,
            "  {:<20} {}  (layers {})",
            group.name,
            kind_text(&group.kind),
            group
                .layers
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(
        out,
        "  {:<20} SGD update of {} parameters ({} tensors) in one launch",
        "update", fusion.update.params, fusion.update.tensors
    );
    let step: Vec<usize> = plan
        .forward
        .iter()
        .chain(&plan.backward)
        .chain(&plan.update)
        .map(|launch| launch.kernel)
        .collect();
    let executed = |k: usize| {
        let kernel = &plan.kernels[k];
        kernel
            .gemm
            .as_ref()
            .map_or(kernel.flops.at(batch), |gemm| gemm.executed_flops(batch))
    };
    let step_executed: u64 = step.iter().map(|&k| executed(k)).sum();
    let _ = writeln!(
        out,
        "\nlaunches: {} per training step ({} forward, {} backward, {} update), {} per inference pass",
        step.len(),
        plan.forward.len(),
        plan.backward.len(),
        plan.update.len(),
        plan.infer.len()
    );
    let _ = writeln!(
        out,
        "\nkernels at batch {batch} (FLOPs and bytes of one launch; bytes count each tensor once; executed: the FLOPs the GEMM tiles run, padding and zero taps included, over the layer's useful FLOPs; step: share of a training step's executed FLOPs; smem: shared memory per block; regs: registers per thread, from ptxas with --verify):"
    );
    let _ = writeln!(
        out,
        "  {:<32} {:<16} {:>12} {:>12} {:>9} {:>8} {:>6} {:>8} {:>4}  grid x block",
        "kernel", "role", "FLOPs", "bytes", "FLOP/B", "executed", "step", "smem", "regs"
    );
    let (mut total_flops, mut total_bytes) = (0u64, 0u64);
    let (mut step_useful, mut step_gemm_executed) = (0u64, 0u64);
    for (k, kernel) in plan.kernels.iter().enumerate() {
        let flops = kernel.flops.at(batch);
        let bytes = kernel.bytes.at(batch);
        total_flops += flops;
        total_bytes += bytes;
        let (gx, gy, gz) = kernel.grid.dims(batch);
        let intensity = if bytes == 0 {
            "-".to_string()
        } else {
            format!("{:.1}", flops as f64 / bytes as f64)
        };
        let ratio = match &kernel.gemm {
            Some(gemm) => {
                let useful = gemm.useful_flops.at(batch);
                let launches = step.iter().filter(|&&s| s == k).count() as u64;
                step_useful += launches * useful;
                step_gemm_executed += launches * gemm.executed_flops(batch);
                format!(
                    "{:.2}x",
                    gemm.executed_flops(batch) as f64 / useful.max(1) as f64
                )
            }
            None => "-".to_string(),
        };
        let share = if step.contains(&k) && step_executed > 0 {
            format!("{:.1}%", 100.0 * executed(k) as f64 / step_executed as f64)
        } else {
            "-".to_string()
        };
        let role = kernel.role.name();
        let smem = kernel.static_shared_bytes + kernel.dynamic_shared_bytes;
        let regs = registers
            .get(&kernel.name)
            .map_or("-".to_string(), u32::to_string);
        let _ = writeln!(
            out,
            "  {:<32} {:<16} {:>12} {:>12} {:>9} {:>8} {:>6} {:>8} {:>4}  {gx}x{gy}x{gz} x {}",
            kernel.name,
            role,
            human(flops, "FLOP"),
            human(bytes, "B"),
            intensity,
            ratio,
            share,
            human(u64::from(smem), "B"),
            regs,
            kernel.block[0]
        );
    }
    let _ = writeln!(
        out,
        "  {:<32} {:<16} {:>12} {:>12}",
        "all kernels (each launched once)",
        "",
        human(total_flops, "FLOP"),
        human(total_bytes, "B")
    );
    if !step.is_empty() {
        let step_flops: u64 = step.iter().map(|&k| plan.kernels[k].flops.at(batch)).sum();
        let step_bytes: u64 = step.iter().map(|&k| plan.kernels[k].bytes.at(batch)).sum();
        let _ = writeln!(
            out,
            "  {:<32} {:<16} {:>12} {:>12}",
            format!("a training step ({} launches)", step.len()),
            "",
            human(step_flops, "FLOP"),
            human(step_bytes, "B")
        );
    }
    if step_useful > 0 {
        let _ = writeln!(
            out,
            "  GEMMs of a training step: {} executed for {} useful ({:.2}x)",
            human(step_gemm_executed, "FLOP"),
            human(step_useful, "FLOP"),
            step_gemm_executed as f64 / step_useful as f64
        );
    }
    out
}

#[cfg(feature = "runtime")]
/// Compiles the program with NVRTC for `arch`: the compile result, or why not.
pub fn compile(program: &Program, arch: &str) -> Result<Compiled, NvrtcError> {
    nvrtc::compile(&program.source, &format!("{}.cu", program.plan.model), arch)
}

#[cfg(feature = "runtime")]
/// Registers per thread of each kernel ptxas reported, by kernel name, for
/// [`render`].
pub fn registers(compiled: &Compiled) -> HashMap<String, u32> {
    compiled
        .kernels
        .iter()
        .map(|k| (k.name.clone(), k.registers))
        .collect()
}

#[cfg(feature = "runtime")]
/// The table of [`verify`].
pub fn render_verification(program: &Program, arch: &str, compiled: &Compiled) -> String {
    let mut out = String::new();
    let (major, minor) = compiled.nvrtc_version;
    let (ptx_major, ptx_minor) = compiled.ptx_version;
    let _ = writeln!(
        out,
        "\nNVRTC {major}.{minor}, {arch}, PTX ISA {ptx_major}.{ptx_minor} (at most {}.{}): {} kernels",
        nvrtc::MAX_PTX_VERSION.0,
        nvrtc::MAX_PTX_VERSION.1,
        compiled.kernels.len()
    );
    let _ = writeln!(
        out,
        "  {:<32} {:>9} {:>12} {:>13} {:>7} {:>12} {:>11}",
        "kernel", "registers", "static smem", "dynamic smem", "stack", "spill store", "spill load"
    );
    let mut spilled = 0;
    for spec in &program.plan.kernels {
        let Some(k) = compiled.kernels.iter().find(|k| k.name == spec.name) else {
            let _ = writeln!(out, "  {:<32} (not in ptxas's report)", spec.name);
            continue;
        };
        if k.spill_store_bytes > 0 || k.spill_load_bytes > 0 {
            spilled += 1;
        }
        let _ = writeln!(
            out,
            "  {:<32} {:>9} {:>10} B {:>11} B {:>5} B {:>10} B {:>9} B",
            k.name,
            k.registers,
            k.shared_bytes,
            spec.dynamic_shared_bytes,
            k.stack_bytes,
            k.spill_store_bytes,
            k.spill_load_bytes
        );
    }
    let _ = writeln!(
        out,
        "  {} kernel{} spill registers",
        spilled,
        if spilled == 1 { "" } else { "s" }
    );
    out
}
