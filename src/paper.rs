//! The paper's own figures (Springenberg et al., Table 3): the rounded
//! parameter counts, so the summary can say where the exact count disagrees
//! with the rounded one, and the CIFAR-10 test errors, which `ablate`
//! prints beside its own.

/// A model's row of Table 3: CIFAR-10 test error without augmentation and
/// the rounded parameter count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaperFigures {
    /// Test error in percent.
    pub error_percent: f64,
    pub params: &'static str,
}

/// Table 3's row of a model, by network name (`model_c`, `all_cnn_c`: the
/// names of models/ and of `convert`'s derived networks); `None` for a
/// network the paper does not have.
pub fn paper_figures(network: &str) -> Option<PaperFigures> {
    let (error_percent, params) = match network {
        "model_a" => (12.47, "0.9M"),
        "strided_cnn_a" => (13.46, "0.9M"),
        "convpool_cnn_a" => (10.21, "1.28M"),
        "all_cnn_a" => (10.30, "1.28M"),
        "model_b" => (10.20, "1M"),
        "strided_cnn_b" => (10.98, "1M"),
        "convpool_cnn_b" => (9.33, "1.35M"),
        "all_cnn_b" => (9.10, "1.35M"),
        "model_c" => (9.74, "1.3M"),
        "strided_cnn_c" => (10.19, "1.3M"),
        "convpool_cnn_c" => (9.31, "1.4M"),
        "all_cnn_c" => (9.08, "1.4M"),
        _ => return None,
    };
    Some(PaperFigures {
        error_percent,
        params,
    })
}

/// The paper's rounded parameter count of a model, by network name.
pub fn paper_params(network: &str) -> Option<&'static str> {
    paper_figures(network).map(|figures| figures.params)
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
    use super::{agrees, paper_figures, paper_params};

    #[test]
    fn rounding_matches_the_figure_precision() {
        assert!(agrees(1_369_738, "1.4M"));
        assert!(!agrees(954_730, "1.3M"));
        assert!(!agrees(1_300_618, "1.35M"));
        assert!(agrees(1_346_000, "1.35M"));
        assert!(agrees(1_000_000, "1M"));
    }

    #[test]
    fn table_3_rows_by_network_name() {
        let all_cnn_c = paper_figures("all_cnn_c").unwrap();
        assert_eq!((all_cnn_c.error_percent, all_cnn_c.params), (9.08, "1.4M"));
        assert_eq!(paper_figures("strided_cnn_a").unwrap().error_percent, 13.46);
        assert_eq!(paper_params("model_b"), Some("1M"));
    }

    #[test]
    fn a_model_unknown_to_the_paper_has_no_figures() {
        for name in [
            "tiny",
            "fashion_all_cnn",
            "all_cnn_tiny",
            "model_d",
            "large_all_cnn",
        ] {
            assert_eq!(paper_figures(name), None, "{name}");
            assert_eq!(paper_params(name), None, "{name}");
        }
    }
}
