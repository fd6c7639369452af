//! Counted skips. A test that cannot run on this machine for a reason the
//! README's set-up cannot remove (no GPU) calls [`skip`]: it prints why and
//! appends `TEST_BINARY TEST: REASON` to the file `ALLCNNC_SKIP_LOG` names,
//! so the README's test command (`scripts/test.sh`) lists every skip by
//! name in its summary and counts it as skipped, not passed. A prerequisite
//! the set-up provides (data, NVRTC, a C++ compiler) is never a skip: its
//! absence fails the test with how to get it.

use std::io::Write;

/// Records that the calling test did not run its checks, and why.
pub fn skip(reason: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_string();
    println!("skipped: {reason}");
    if let Some(path) = std::env::var_os("ALLCNNC_SKIP_LOG") {
        let line = format!("{} {test}: {reason}\n", env!("CARGO_CRATE_NAME"));
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(line.as_bytes()));
        if let Err(err) = appended {
            panic!(
                "cannot record the skip in {}: {err}",
                path.to_string_lossy()
            );
        }
    }
}
