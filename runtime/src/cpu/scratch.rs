//! Per-thread scratch memory for the kernels' hot loops.
//!
//! im2col and col2im need a buffer of a few megabytes per chunk of rows.
//! Allocating it per chunk would fault in fresh pages every time; instead each
//! rayon worker keeps one buffer that only grows.
//!
//! Invariant: a closure given a scratch buffer never calls back into rayon,
//! so a worker can not re-enter [`with_scratch`] while it holds its buffer.

use std::cell::RefCell;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer resized to exactly `len`
/// values. The contents are unspecified (left over from earlier use).
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| {
        let mut buffer = cell.borrow_mut();
        if buffer.len() < len {
            buffer.resize(len, 0.0);
        }
        f(&mut buffer[..len])
    })
}
