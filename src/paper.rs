//! The paper's own parameter figures (Springenberg et al., Table 3), so the
//! summary can say where the exact count disagrees with the rounded one.

/// The paper's rounded parameter count of a model, by network name.
pub fn paper_params(network: &str) -> Option<&'static str> {
    Some(match network {
        "model_a" | "strided_cnn_a" => "0.9M",
        "model_b" | "strided_cnn_b" => "1M",
        "model_c" | "strided_cnn_c" => "1.3M",
        "convpool_cnn_a" | "all_cnn_a" => "1.28M",
        "convpool_cnn_b" | "all_cnn_b" => "1.35M",
        "convpool_cnn_c" | "all_cnn_c" => "1.4M",
        _ => return None,
    })
}

/// Whether an exact count rounds to the paper's figure at the figure's own
/// precision (`1.35M` is compared to two decimals).
pub fn agrees(exact: u64, figure: &str) -> bool {
    let digits = figure.trim_end_matches('M');
    let decimals = digits.split('.').nth(1).map_or(0, str::len) as i32;
    let Ok(paper) = digits.parse::<f64>() else {
        return false;
    };
    let scale = 10f64.powi(decimals);
    let exact_m = (exact as f64 / 1e6 * scale).round() / scale;
    (exact_m - paper).abs() < 0.5 / scale
}

#[cfg(test)]
mod tests {
    use super::agrees;

    #[test]
    fn rounding_matches_the_figure_precision() {
        assert!(agrees(1_369_738, "1.4M"));
        assert!(!agrees(954_730, "1.3M"));
        assert!(!agrees(1_300_618, "1.35M"));
        assert!(agrees(1_346_000, "1.35M"));
        assert!(agrees(1_000_000, "1M"));
    }
}
