//! Runtime dispatch of the pointwise and transform loops to AVX-512.
//!
//! The crate is compiled for the baseline x86-64 target (SSE2), so plain
//! loops vectorise four lanes wide. [`avx512_dispatch!`] compiles a function
//! body twice, once inside a `#[target_feature(enable = "avx512f")]` wrapper,
//! and picks the wide copy when the CPU has AVX-512F. The body is written
//! with plain arithmetic (no `mul_add`), so both copies compute the same
//! values: the choice changes speed, never results.

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
                if std::arch::is_x86_feature_detected!("avx512f") {
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

pub(crate) use avx512_dispatch;
