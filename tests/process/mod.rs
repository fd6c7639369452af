//! Running the `allcnnc` binary from the command-line tests that train
//! (tests/train_cli.rs, tests/ablate_cli.rs): its output, and a run
//! interrupted by a signal in the middle.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_allcnnc"))
}

pub fn run(args: &[String]) -> Output {
    bin().args(args).output().expect("run allcnnc")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `args`, waits until `metrics` (a run's `metrics.jsonl`) has
/// `lines` lines, lets the next epoch get under way, then sends `signal`.
pub fn interrupt_after_epochs(
    args: &[String],
    metrics: &Path,
    lines: usize,
    signal: &str,
) -> Output {
    let child = bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    loop {
        let seen = std::fs::read_to_string(metrics)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if seen >= lines || started.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(150));
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    child.wait_with_output().expect("wait")
}
