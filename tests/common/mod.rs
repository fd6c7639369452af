//! Generators shared by the property tests (tests/fuzz.rs,
//! tests/cuda_backend.rs).

use proptest::prelude::*;
use proptest::sample::select;

/// Cases per test: `PROPTEST_CASES` when set, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// One random layer statement: a conv (up to `max_channels` - 1 outputs,
/// square kernels up to `max_kernel` - 1), a max or average pool, a dropout
/// or a global average pool, with every stride, padding, activation and
/// rounding spelling. Many combinations do not fit the input: the checker
/// rejects those.
pub fn layer(max_channels: usize, max_kernel: usize) -> impl Strategy<Value = String> {
    let kernel = prop_oneof![
        (1usize..max_kernel).prop_map(|k| format!("{k}x{k}")),
        (1usize..4, 1usize..4).prop_map(|(a, b)| format!("{a}x{b}")),
        (1usize..4).prop_map(|k| format!("k={k}")),
    ];
    let stride = prop_oneof![
        Just(String::new()),
        (1usize..4).prop_map(|s| format!(" stride={s}")),
        (1usize..3, 1usize..3).prop_map(|(a, b)| format!(" stride={a}x{b}")),
    ];
    let pad = prop_oneof![
        Just(String::new()),
        Just(" pad=same".to_string()),
        Just(" pad=valid".to_string()),
        (0usize..3).prop_map(|p| format!(" pad={p}")),
        (0usize..3, 0usize..3).prop_map(|(a, b)| format!(" pad={a}x{b}")),
        (0usize..2, 0usize..2, 0usize..2, 0usize..2)
            .prop_map(|(t, l, b, r)| format!(" pad={t}x{l}x{b}x{r}")),
    ];
    let act = prop_oneof![
        Just(String::new()),
        Just(" act=relu".to_string()),
        Just(" act=none".to_string()),
        (0u32..100).prop_map(|s| format!(" act=leaky({})", s as f64 / 100.0)),
        Just(" act=leaky slope=0.2".to_string()),
    ];
    let round = prop_oneof![
        Just(String::new()),
        Just(" round=up".to_string()),
        Just(" round=down".to_string()),
    ];
    prop_oneof![
        4 => (1usize..max_channels, kernel.clone(), stride.clone(), pad.clone(), act, any::<bool>()).prop_map(
            |(channels, kernel, stride, pad, act, bias)| {
                let bias = if bias { "" } else { " bias=false" };
                format!("conv {channels} {kernel}{stride}{pad}{act}{bias}")
            }
        ),
        2 => (select(&["maxpool", "avgpool"][..]), kernel, stride, pad, round)
            .prop_map(|(kind, kernel, stride, pad, round)| format!("{kind} {kernel}{stride}{pad}{round}")),
        1 => (0u32..1000).prop_map(|p| format!("dropout {}", p as f64 / 1000.0)),
        1 => Just("global_avg_pool".to_string()),
    ]
}
