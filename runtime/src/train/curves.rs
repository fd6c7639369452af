//! `curves.png`: loss and accuracy per epoch, train and test, drawn with
//! plotters; and [`draw_comparison`], the test error per epoch of several
//! runs on one chart (`allcnnc ablate`). Text is in the font of
//! [`crate::draw`]; without it the curves are drawn without labels.

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
    let epochs = last_epoch(history);
    let max_loss = history
        .iter()
        .flat_map(|m| [m.train_loss, m.test_loss])
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.05;
    let loss = [
        Line::of(history, "train", BLUE, |m| m.train_loss),
        Line::of(history, "test", RED, |m| m.test_loss),
    ];
    let accuracy = [
        Line::of(history, "train", BLUE, |m| 100.0 * m.train_accuracy),
        Line::of(history, "test", RED, |m| 100.0 * m.test_accuracy),
    ];
    panel(
        &left,
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

/// Colours of the runs of [`draw_comparison`], in order (then again).
const RUN_COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// The test error (%) per epoch of several runs, one line each, labelled
/// with its name in the legend; runs without an epoch are left out.
pub fn draw_comparison(
    runs: &[(String, Vec<EpochMetrics>)],
    path: &Path,
    title: &str,
) -> Result<(), String> {
    let runs: Vec<_> = runs.iter().filter(|(_, h)| !h.is_empty()).collect();
    if runs.is_empty() {
        return Ok(());
    }
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let lines: Vec<Line> = runs
        .iter()
        .enumerate()
        .map(|(index, (name, history))| {
            let color = RUN_COLORS[index % RUN_COLORS.len()];
            Line::of(history, name, color, |m| 100.0 * (1.0 - m.test_accuracy))
        })
        .collect();
    let epochs = runs
        .iter()
        .map(|(_, history)| last_epoch(history))
        .fold(2.0, f64::max);
    let max_error = lines
        .iter()
        .flat_map(|line| line.points.iter().map(|&(_, error)| error))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .clamp(1.0, 100.0)
        * 1.05;
    panel(
        &root,
        &format!("{title}: test error (%)"),
        "test error (%)",
        epochs,
        max_error,
        &lines,
        draw::font_available(),
        // Errors start high and fall, rarely to near 0: the lower left
        // stays free.
        SeriesLabelPosition::LowerLeft,
    )?;
    root.present().map_err(|e| e.to_string())
}

/// The x range of a chart: the last epoch, at least 2.
fn last_epoch(history: &[EpochMetrics]) -> f64 {
    history.last().map_or(1, |m| m.epoch).max(2) as f64
}

/// One curve: its points (epoch, value), legend and colour.
struct Line {
    label: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

impl Line {
    /// `value` of each epoch of `history`.
    fn of(
        history: &[EpochMetrics],
        label: &str,
        color: RGBColor,
        value: fn(&EpochMetrics) -> f64,
    ) -> Self {
        Self {
            label: label.to_string(),
            color,
            points: history.iter().map(|m| (m.epoch as f64, value(m))).collect(),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    caption: &str,
    name: &str,
    epochs: f64,
    top: f64,
    lines: &[Line],
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
    for line in lines {
        let color = line.color;
        let drawn = chart
            .draw_series(LineSeries::new(
                line.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
        if labels {
            drawn.label(line.label.as_str()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
        chart
            .draw_series(
                line.points
                    .iter()
                    .map(|&p| Circle::new(p, 3, color.filled())),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(epoch: u32, test_accuracy: f64) -> EpochMetrics {
        EpochMetrics {
            epoch,
            lr: 0.1,
            train_loss: 1.0,
            train_accuracy: 0.5,
            test_loss: 1.0,
            test_accuracy,
            images_per_s: 100.0,
            seconds: 1.0,
        }
    }

    #[test]
    fn a_comparison_draws_one_line_a_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        let runs = vec![
            ("a".to_string(), vec![epoch(1, 0.5), epoch(2, 0.7)]),
            ("b".to_string(), vec![epoch(1, 0.6)]),
            ("not started".to_string(), vec![]),
        ];
        draw_comparison(&runs, &path, "ablation").unwrap();
        let png = image::open(&path).unwrap().to_rgb8();
        let has = |rgb: RGBColor| png.pixels().any(|p| p.0 == [rgb.0, rgb.1, rgb.2]);
        assert!(has(RUN_COLORS[0]) && has(RUN_COLORS[1]));
        assert!(!has(RUN_COLORS[2]), "a run without epochs was drawn");

        let empty = dir.path().join("none.png");
        draw_comparison(&runs[2..], &empty, "ablation").unwrap();
        assert!(!empty.exists());
    }
}
