//! The arithmetic limit of the CPU this runs on: what it supports, and the
//! measured throughput of f32 fused multiply-adds and bf16 dot products on
//! all cores, against which `allcnnc bench` reports its kernels.
//!
//! Each thread runs independent chains of one instruction on registers (12
//! chains: enough to cover the latency of every current core), so the
//! figure is the execution units' limit, not memory's. AMX is detected and
//! reported; allcnnc has no AMX kernels, so its throughput is not measured.

use super::conv::ConvGeometry;
use crate::plan::{Op, Plan};
use serde::Serialize;
use std::time::{Duration, Instant};

/// Instruction sets that matter to the CPU backend's products.
#[derive(Debug, Clone, Serialize)]
pub struct Features {
    pub avx2_fma: bool,
    pub avx512f: bool,
    pub avx512_bf16: bool,
    /// AMX tiles with bf16 (Intel Sapphire Rapids and later).
    pub amx_bf16: bool,
}

impl Features {
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            // CPUID leaf 7, EDX bits 22 (AMX-BF16) and 24 (AMX-TILE).
            let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
            Self {
                avx2_fma: has!("avx2") && has!("fma"),
                avx512f: has!("avx512f"),
                avx512_bf16: has!("avx512f") && has!("avx512bf16"),
                amx_bf16: leaf7.edx & (1 << 22) != 0 && leaf7.edx & (1 << 24) != 0,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Self {
            avx2_fma: false,
            avx512f: false,
            avx512_bf16: false,
            amx_bf16: false,
        }
    }
}

/// Measured peaks, GFLOP/s on all threads (a multiply-add counts 2).
#[derive(Debug, Clone, Serialize)]
pub struct Peak {
    pub cpu: String,
    pub threads: usize,
    pub features: Features,
    /// f32 FMA at the widest vector the CPU has.
    pub f32_gflops: f64,
    /// `vdpbf16ps` (each bf16 product-pair into f32), where supported.
    pub bf16_gflops: Option<f64>,
}

/// The CPU's model name from `/proc/cpuinfo` (Linux), else "unknown CPU".
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Measures the peaks on `threads` threads, each kernel for about `time`.
pub fn measure(threads: usize, time: Duration) -> Peak {
    let features = Features::detect();
    let f32_gflops = on_threads(threads, time, f32_fma);
    let bf16_gflops = features
        .avx512_bf16
        .then(|| on_threads(threads, time, bf16_dot));
    Peak {
        cpu: cpu_name(),
        threads,
        features,
        f32_gflops,
        bf16_gflops,
    }
}

/// The fraction of `plan`'s forward multiply-adds in layers the CPU runs
/// with Winograd F(4x4, 3x3) (a quarter of the multiplications).
pub fn winograd_share(plan: &Plan) -> f64 {
    let mut winograd = 0u64;
    for layer in &plan.layers {
        if let Op::Conv { window, .. } = &layer.op {
            let geom = ConvGeometry {
                in_shape: layer.in_shape,
                out_shape: layer.out_shape,
                window: *window,
            };
            if geom.uses_winograd() {
                winograd += (layer.out_shape.len() * geom.k()) as u64;
            }
        }
    }
    winograd as f64 / plan.forward_macs().max(1) as f64
}

/// The most effective GFLOP/s (direct-convolution FLOPs per second) a
/// model can reach when `share` of its multiply-adds run as Winograd
/// F(4x4, 3x3) (a quarter of the multiplications, always f32: `f32_peak`)
/// and the rest as direct products at `direct_peak` (f32, or bf16 dot
/// products): the products alone, before transforms and memory traffic.
pub fn effective_limit(f32_peak: f64, direct_peak: f64, share: f64) -> f64 {
    1.0 / (share / (4.0 * f32_peak) + (1.0 - share) / direct_peak)
}

/// One kernel: runs `rounds` rounds and returns the FLOPs it did.
type Kernel = fn(rounds: u64) -> f64;

/// GFLOP/s of `kernel` on `threads` threads at once: the rounds are sized
/// on one thread to last about `time`, then all threads run them together.
fn on_threads(threads: usize, time: Duration, kernel: Kernel) -> f64 {
    let mut rounds = 1u64 << 10;
    loop {
        let started = Instant::now();
        std::hint::black_box(kernel(rounds));
        if started.elapsed() >= time / 8 || rounds >= 1 << 40 {
            let per_round = started.elapsed().as_secs_f64() / rounds as f64;
            rounds = ((time.as_secs_f64() / per_round.max(1e-12)) as u64).max(1);
            break;
        }
        rounds *= 2;
    }
    let started = Instant::now();
    let flops: f64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| scope.spawn(move || kernel(std::hint::black_box(rounds))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("peak kernel thread"))
            .sum()
    });
    flops / started.elapsed().as_secs_f64() / 1e9
}

/// Independent chains per kernel.
const CHAINS: usize = 12;

fn f32_fma(rounds: u64) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F is supported (checked).
        return unsafe { x86::fma512(rounds) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: AVX2 and FMA are supported (checked).
        return unsafe { x86::fma256(rounds) };
    }
    let mut acc = [1.0f32; CHAINS];
    for _ in 0..rounds {
        for a in &mut acc {
            *a = a.mul_add(0.999_999, 1e-7);
        }
    }
    std::hint::black_box(acc);
    (rounds * CHAINS as u64 * 2) as f64
}

fn bf16_dot(rounds: u64) -> f64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: only called when AVX512-BF16 is supported (`measure`).
    return unsafe { x86::dpbf16(rounds) };
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = rounds;
        0.0
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::CHAINS;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fma512(rounds: u64) -> f64 {
        let mut acc = [_mm512_set1_ps(1.0); CHAINS];
        let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        for _ in 0..rounds {
            for x in &mut acc {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        std::hint::black_box(acc);
        (rounds * CHAINS as u64 * 16 * 2) as f64
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn fma256(rounds: u64) -> f64 {
        let mut acc = [_mm256_set1_ps(1.0); CHAINS];
        let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        for _ in 0..rounds {
            for x in &mut acc {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        std::hint::black_box(acc);
        (rounds * CHAINS as u64 * 8 * 2) as f64
    }

    /// `vdpbf16ps`: 32 bf16 products summed in pairs into 16 f32 lanes.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn dpbf16(rounds: u64) -> f64 {
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        let a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3), _mm512_set1_ps(1e-3));
        let b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3), _mm512_set1_ps(1e-3));
        for _ in 0..rounds {
            for x in &mut acc {
                *x = _mm512_dpbf16_ps(*x, a, b);
            }
        }
        std::hint::black_box(acc);
        (rounds * CHAINS as u64 * 32 * 2) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The measurement is a positive figure and the bf16 one exists
    /// exactly where the CPU has the instruction.
    #[test]
    fn peaks_are_measured_where_supported() {
        let peak = measure(1, Duration::from_millis(20));
        assert!(peak.f32_gflops > 0.1, "{peak:?}");
        assert_eq!(peak.bf16_gflops.is_some(), peak.features.avx512_bf16);
    }
}
