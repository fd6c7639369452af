//! Redraws a run's curves from its `metrics.jsonl`:
//! `cargo run --release -p allcnnc-runtime --example redraw_curves -- METRICS.jsonl OUT.png TITLE`.

use runtime::train::{curves, read_metrics};
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [metrics, out, title] = args.as_slice() else {
        eprintln!("usage: redraw_curves METRICS.jsonl OUT.png TITLE");
        std::process::exit(2);
    };
    let history = read_metrics(Path::new(metrics));
    if history.is_empty() {
        eprintln!("{metrics}: no metrics lines");
        std::process::exit(1);
    }
    if let Err(err) = curves::draw(&history, Path::new(out), title) {
        eprintln!("cannot draw {out}: {err}");
        std::process::exit(1);
    }
}
