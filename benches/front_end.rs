//! Parse + every pass (analysis and the three rewrites) for two models.
//!
//! Needs only the compiler's library: `cargo bench --bench front_end
//! --no-default-features` builds it without the runtime (cudarc, gemm, plotters).

use allcnnc::diagnostic::Source;
use allcnnc::front;
use allcnnc::passes::{allconv, convpool, strided, PassManager};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

fn front_end(c: &mut Criterion) {
    for model in ["all-cnn-c", "all-cnn-imagenet", "model-c"] {
        let path = format!("{}/models/{model}.net", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("model");
        c.bench_function(&format!("parse+passes/{model}"), |b| {
            b.iter(|| {
                let source = Source::new("m.net", black_box(text.clone()));
                let graph = front::load(&source).expect("valid model");
                for pass in [
                    Box::new(strided::Strided) as Box<dyn allcnnc::passes::Pass>,
                    Box::new(allconv::AllConv),
                    Box::new(convpool::ConvPool),
                ] {
                    let mut derived = graph.clone();
                    // Models without pools have nothing to rewrite; errors are not expected.
                    let _ = PassManager::derive(pass).run(&mut derived);
                    black_box(derived);
                }
                black_box(graph)
            })
        });
    }
}

criterion_group! {
    name = benches;
    // No HTML plots: plotters here is built for ab_glyph fonts that
    // criterion does not register, so plotting would fail.
    config = Criterion::default().without_plots();
    targets = front_end
}
criterion_main!(benches);
