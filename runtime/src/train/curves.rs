//! `curves.png`: loss and accuracy per epoch, train and test, drawn with
//! plotters. Text is in the font of [`crate::draw`]; without it the curves
//! are drawn without labels.

use super::EpochMetrics;
use crate::draw;
use plotters::prelude::*;
use std::path::Path;

pub fn draw(history: &[EpochMetrics], path: &Path, title: &str) -> Result<(), String> {
    if history.is_empty() {
        return Ok(());
    }
    let labels = draw::font_available();
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
            .caption(caption, (draw::FAMILY, 20))
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
