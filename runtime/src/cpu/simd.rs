//! Runtime dispatch to AVX-512 and a 16-lane vector type for the transforms.
//!
//! The crate is compiled for the baseline x86-64 target (SSE2), so plain
//! loops vectorise four lanes wide. Two macros compile a function body twice,
//! once inside a `#[target_feature(enable = "avx512f")]` wrapper, and pick
//! the wide copy when the CPU has AVX-512F:
//!
//! - [`avx512_dispatch!`] for plain loops (auto-vectorised);
//! - [`lanes_dispatch!`] for bodies generic over [`Lanes`], run with
//!   [`Avx512`] (explicit intrinsics, one register per value) or
//!   [`Portable`] (arrays) elsewhere.
//!
//! Both copies do the same IEEE operations in the same order (no fused
//! multiply-add), so the choice changes speed, never results.
//!
//! Invariant: an [`Avx512`] value only exists inside the wide copy that
//! [`lanes_dispatch!`] runs after detecting AVX-512F; the type is private to
//! the CPU backend.

use std::ops::{Add, Mul, Sub};

/// Lanes per vector.
pub(crate) const LANES: usize = 16;

/// Test hook: while set, the dispatch macros take the portable path, so the
/// unit tests can compare both copies on a machine with AVX-512.
#[cfg(test)]
pub(crate) static FORCE_PORTABLE: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Whether the dispatch macros run the AVX-512 copy.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn use_avx512() -> bool {
    #[cfg(test)]
    if FORCE_PORTABLE.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Defines `fn $name(args)` whose body runs with AVX-512F enabled when the
/// CPU supports it. Only for functions without generics or return value.
macro_rules! avx512_dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn wide($($arg: $ty),*) {
                    body($($arg),*)
                }
                if $crate::cpu::simd::use_avx512() {
                    // SAFETY: the CPU supports AVX-512F, checked just above,
                    // which is all `wide` requires.
                    unsafe { wide($($arg),*) };
                    return;
                }
            }
            body($($arg),*)
        }
    };
}

/// Like [`avx512_dispatch!`], for a body generic over `L: Lanes`: the wide
/// copy runs with `L = Avx512`, the other with `L = Portable`.
macro_rules! lanes_dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body<L: $crate::cpu::simd::Lanes>($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn wide($($arg: $ty),*) {
                    body::<$crate::cpu::simd::Avx512>($($arg),*)
                }
                if $crate::cpu::simd::use_avx512() {
                    // SAFETY: the CPU supports AVX-512F, checked just above,
                    // which is all `wide` and the `Avx512` values it creates
                    // require.
                    unsafe { wide($($arg),*) };
                    return;
                }
            }
            body::<$crate::cpu::simd::Portable>($($arg),*)
        }
    };
}

pub(crate) use {avx512_dispatch, lanes_dispatch};

/// Sixteen `f32` lanes with the operations the transforms need.
pub(crate) trait Lanes:
    Copy + Add<Output = Self> + Sub<Output = Self> + Mul<f32, Output = Self>
{
    fn zero() -> Self;
    /// The first [`LANES`] values of `src` (panics if it is shorter).
    fn load(src: &[f32]) -> Self;
    /// The first `width <= LANES` values of `src`, the other lanes zero.
    fn load_partial(src: &[f32], width: usize) -> Self;
    /// Stores all lanes at the start of `dst` (panics if it is shorter).
    fn store(self, dst: &mut [f32]);
    /// Stores the first `width <= LANES` lanes at the start of `dst`.
    fn store_partial(self, dst: &mut [f32], width: usize);
    /// `max(self, 0)` per lane.
    fn relu(self) -> Self;
    /// `self if self > 0 else slope * self` per lane.
    fn leaky_relu(self, slope: f32) -> Self;
}

/// Loads `width` lanes, choosing the full-width path when possible.
#[inline(always)]
pub(crate) fn load_lanes<L: Lanes>(src: &[f32], width: usize) -> L {
    if width == LANES {
        L::load(src)
    } else {
        L::load_partial(src, width)
    }
}

/// Stores `width` lanes, choosing the full-width path when possible.
#[inline(always)]
pub(crate) fn store_lanes<L: Lanes>(value: L, dst: &mut [f32], width: usize) {
    if width == LANES {
        value.store(dst)
    } else {
        value.store_partial(dst, width)
    }
}

/// The portable vector: an array the compiler vectorises as it can.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Portable([f32; LANES]);

impl Add for Portable {
    type Output = Self;
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        Self(std::array::from_fn(|i| self.0[i] + other.0[i]))
    }
}

impl Sub for Portable {
    type Output = Self;
    #[inline(always)]
    fn sub(self, other: Self) -> Self {
        Self(std::array::from_fn(|i| self.0[i] - other.0[i]))
    }
}

impl Mul<f32> for Portable {
    type Output = Self;
    #[inline(always)]
    fn mul(self, k: f32) -> Self {
        Self(std::array::from_fn(|i| self.0[i] * k))
    }
}

impl Lanes for Portable {
    #[inline(always)]
    fn zero() -> Self {
        Self([0.0; LANES])
    }

    #[inline(always)]
    fn load(src: &[f32]) -> Self {
        Self(src[..LANES].try_into().expect("a full vector"))
    }

    #[inline(always)]
    fn load_partial(src: &[f32], width: usize) -> Self {
        let mut lanes = [0.0; LANES];
        lanes[..width].copy_from_slice(&src[..width]);
        Self(lanes)
    }

    #[inline(always)]
    fn store(self, dst: &mut [f32]) {
        dst[..LANES].copy_from_slice(&self.0);
    }

    #[inline(always)]
    fn store_partial(self, dst: &mut [f32], width: usize) {
        dst[..width].copy_from_slice(&self.0[..width]);
    }

    #[inline(always)]
    fn relu(self) -> Self {
        Self(self.0.map(|v| v.max(0.0)))
    }

    #[inline(always)]
    fn leaky_relu(self, slope: f32) -> Self {
        Self(self.0.map(|v| if v > 0.0 { v } else { slope * v }))
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use avx512::Avx512;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;
    use std::ops::{Add, Mul, Sub};

    use super::{Lanes, LANES};

    /// One AVX-512 register. See the module invariant: values exist only
    /// where AVX-512F has been detected, which every `SAFETY` below relies on.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Avx512(__m512);

    /// The mask of the first `width` lanes.
    #[inline(always)]
    fn mask(width: usize) -> __mmask16 {
        assert!(width <= LANES, "at most {LANES} lanes");
        ((1u32 << width) - 1) as __mmask16
    }

    impl Add for Avx512 {
        type Output = Self;
        #[inline(always)]
        fn add(self, other: Self) -> Self {
            // SAFETY: AVX-512F is available (module invariant).
            Self(unsafe { _mm512_add_ps(self.0, other.0) })
        }
    }

    impl Sub for Avx512 {
        type Output = Self;
        #[inline(always)]
        fn sub(self, other: Self) -> Self {
            // SAFETY: AVX-512F is available (module invariant).
            Self(unsafe { _mm512_sub_ps(self.0, other.0) })
        }
    }

    impl Mul<f32> for Avx512 {
        type Output = Self;
        #[inline(always)]
        fn mul(self, k: f32) -> Self {
            // SAFETY: AVX-512F is available (module invariant).
            Self(unsafe { _mm512_mul_ps(self.0, _mm512_set1_ps(k)) })
        }
    }

    impl Lanes for Avx512 {
        #[inline(always)]
        fn zero() -> Self {
            // SAFETY: AVX-512F is available (module invariant).
            Self(unsafe { _mm512_setzero_ps() })
        }

        #[inline(always)]
        fn load(src: &[f32]) -> Self {
            let src = &src[..LANES];
            // SAFETY: `src` holds 16 values (checked by the slicing above);
            // the load is unaligned; AVX-512F is available.
            Self(unsafe { _mm512_loadu_ps(src.as_ptr()) })
        }

        #[inline(always)]
        fn load_partial(src: &[f32], width: usize) -> Self {
            let src = &src[..width];
            // SAFETY: the masked load touches only the first `width` values,
            // which `src` holds (checked by the slicing above); AVX-512F is
            // available.
            Self(unsafe { _mm512_maskz_loadu_ps(mask(width), src.as_ptr()) })
        }

        #[inline(always)]
        fn store(self, dst: &mut [f32]) {
            let dst = &mut dst[..LANES];
            // SAFETY: `dst` holds 16 values (checked by the slicing above)
            // and is borrowed mutably; AVX-512F is available.
            unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), self.0) }
        }

        #[inline(always)]
        fn store_partial(self, dst: &mut [f32], width: usize) {
            let dst = &mut dst[..width];
            // SAFETY: the masked store writes only the first `width` values,
            // which `dst` holds; AVX-512F is available.
            unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask(width), self.0) }
        }

        #[inline(always)]
        fn relu(self) -> Self {
            // SAFETY: AVX-512F is available (module invariant).
            Self(unsafe { _mm512_max_ps(self.0, _mm512_setzero_ps()) })
        }

        #[inline(always)]
        fn leaky_relu(self, slope: f32) -> Self {
            // SAFETY: AVX-512F is available (module invariant).
            unsafe {
                let positive = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(self.0, _mm512_setzero_ps());
                let scaled = _mm512_mul_ps(self.0, _mm512_set1_ps(slope));
                Self(_mm512_mask_blend_ps(positive, scaled, self.0))
            }
        }
    }
}
