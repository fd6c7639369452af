//! `curves.png`: loss and accuracy per epoch, train and test, drawn with
//! plotters. Text uses DejaVu Sans from the system (Debian's
//! fonts-dejavu-core); without it the curves are drawn without labels.

use super::EpochMetrics;
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers a sans-serif font once; returns whether one is available.
pub fn ensure_font() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        for path in FONT_PATHS {
            if let Ok(bytes) = std::fs::read(path) {
                // plotters keeps registered fonts for the whole process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

pub fn draw(history: &[EpochMetrics], path: &Path, title: &str) -> Result<(), String> {
    if history.is_empty() {
        return Ok(());
    }
    let labels = ensure_font();
    let root = BitMapBackend::new(path, (1100, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(550);
    let epochs = history.last().map_or(1, |m| m.epoch).max(2) as f64;
    let max_loss = history
        .iter()
        .flat_map(|m| [m.train_loss, m.test_loss])
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.05;
    let loss: [Series; 2] = [
        Series {
            value: |m| m.train_loss,
            label: "train",
            color: BLUE,
        },
        Series {
            value: |m| m.test_loss,
            label: "test",
            color: RED,
        },
    ];
    let accuracy: [Series; 2] = [
        Series {
            value: |m| 100.0 * m.train_accuracy,
            label: "train",
            color: BLUE,
        },
        Series {
            value: |m| 100.0 * m.test_accuracy,
            label: "test",
            color: RED,
        },
    ];
    panel(
        &left,
        history,
        &format!("{title}: loss"),
        "loss",
        epochs,
        max_loss,
        &loss,
        labels,
        // Losses fall: the upper right stays free.
        SeriesLabelPosition::UpperRight,
    )?;
    panel(
        &right,
        history,
        &format!("{title}: accuracy (%)"),
        "accuracy (%)",
        epochs,
        100.0,
        &accuracy,
        labels,
        // Accuracies rise: the lower right stays free.
        SeriesLabelPosition::LowerRight,
    )?;
    root.present().map_err(|e| e.to_string())
}

/// One curve: which value of a metrics line, its legend and colour.
struct Series {
    value: fn(&EpochMetrics) -> f64,
    label: &'static str,
    color: RGBColor,
}

#[allow(clippy::too_many_arguments)]
fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    history: &[EpochMetrics],
    caption: &str,
    name: &str,
    epochs: f64,
    top: f64,
    series: &[Series],
    labels: bool,
    legend: SeriesLabelPosition,
) -> Result<(), String> {
    let mut builder = ChartBuilder::on(area);
    builder.margin(15);
    if labels {
        builder
            .caption(caption, ("sans-serif", 20))
            .x_label_area_size(35)
            .y_label_area_size(50);
    }
    let mut chart = builder
        .build_cartesian_2d(0.0..epochs, 0.0..top)
        .map_err(|e| e.to_string())?;
    if labels {
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(name)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    for s in series {
        let color = s.color;
        let points: Vec<(f64, f64)> = history
            .iter()
            .map(|m| (m.epoch as f64, (s.value)(m)))
            .collect();
        let drawn = chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?;
        if labels {
            drawn.label(s.label).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .map_err(|e| e.to_string())?;
    }
    if labels {
        chart
            .configure_series_labels()
            .position(legend)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
