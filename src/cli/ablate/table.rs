//! The ablation's table: one row per model with what its run measured,
//! beside the paper's Table 3 figures where the model is one of the
//! paper's; written as `table.md` and `table.json`.

use crate::back::summary::thousands;
use crate::ir::Graph;
use crate::paper;
use runtime::train::EpochMetrics;
use serde::Serialize;
use std::fmt::Write;

/// `table.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    /// The base model's file.
    pub base: String,
    /// The file whose `train` section every model trained under.
    pub recipe: String,
    pub data: String,
    pub seed: u64,
    /// Epochs of the recipe.
    pub epochs: u32,
    /// The models with at least one epoch, in training order.
    pub models: Vec<Row>,
}

/// One model's row. Errors are test errors in percent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub model: String,
    /// `base`, or the variant it was derived as (`strided`, `convpool`,
    /// `allconv`).
    pub variant: String,
    pub parameters: u64,
    /// Multiply-accumulates of one image's forward pass.
    pub macs: u64,
    /// The learning rate of its recipe (the peak of its schedule): the
    /// recipe's, or the one `--lr-for` gave this variant.
    pub lr: f64,
    pub epochs_run: u32,
    /// Whether every epoch of the recipe has run.
    pub finished: bool,
    pub final_test_error_percent: f64,
    pub best_test_error_percent: f64,
    /// The first epoch with the best test error.
    pub best_epoch: u32,
    /// Training time of the epochs run (evaluation not counted).
    pub train_seconds: f64,
    /// Training images per second over those epochs.
    pub train_images_per_s: f64,
    /// Table 3: CIFAR-10 test error without augmentation, 350 epochs.
    pub paper_test_error_percent: Option<f64>,
    /// Table 3's rounded parameter count.
    pub paper_parameters: Option<String>,
}

impl Row {
    /// The row of `graph`'s run, from its metrics; `None` before its first
    /// epoch.
    pub fn new(
        variant: &str,
        graph: &Graph,
        lr: f64,
        history: &[EpochMetrics],
        epochs: u32,
    ) -> Option<Row> {
        let last = history.last()?;
        let error = |m: &EpochMetrics| 100.0 * (1.0 - m.test_accuracy);
        // The first epoch of the best accuracy, as the trainer's
        // best.safetensors keeps it.
        let best = history.iter().fold(&history[0], |best, m| {
            if m.test_accuracy > best.test_accuracy {
                m
            } else {
                best
            }
        });
        let train_seconds: f64 = history.iter().map(|m| m.seconds).sum();
        let images: f64 = history.iter().map(|m| m.images_per_s * m.seconds).sum();
        let figures = paper::paper_figures(&graph.name);
        Some(Row {
            model: graph.name.clone(),
            variant: variant.to_string(),
            parameters: graph.total_params(),
            macs: graph.total_macs(),
            lr,
            epochs_run: last.epoch,
            finished: last.epoch >= epochs,
            final_test_error_percent: error(last),
            best_test_error_percent: error(best),
            best_epoch: best.epoch,
            train_seconds,
            train_images_per_s: images / train_seconds.max(1e-9),
            paper_test_error_percent: figures.map(|f| f.error_percent),
            paper_parameters: figures.map(|f| f.params.to_string()),
        })
    }
}

impl Table {
    /// `table.md`: a title, what the runs had in common, the table.
    pub fn markdown(&self) -> String {
        let mut text = String::new();
        let base = self.models.first().map_or("?", |row| row.model.as_str());
        // Writing to a String cannot fail.
        let _ = writeln!(text, "# Ablation of `{base}` ({})\n", self.base);
        let _ = writeln!(
            text,
            "Every model trained on {} with seed {} (same data order) under the recipe of {}, {} epochs, at the learning rate of its row. \
             Errors are test errors in percent; the paper's (Table 3) are CIFAR-10 without augmentation after 350 epochs.\n",
            self.data, self.seed, self.recipe, self.epochs
        );
        text.push_str(
            "| model | variant | parameters | MACs | lr | epochs | final error % | best error % (epoch) | train time (s) | train images/s | paper error % | paper parameters |\n",
        );
        text.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for row in &self.models {
            let paper_error = row
                .paper_test_error_percent
                .map_or("-".to_string(), |e| format!("{e:.2}"));
            let _ = writeln!(
                text,
                "| {} | {} | {} | {} | {} | {}/{} | {:.2} | {:.2} ({}) | {:.1} | {:.0} | {} | {} |",
                row.model,
                row.variant,
                thousands(row.parameters),
                thousands(row.macs),
                row.lr,
                row.epochs_run,
                self.epochs.max(row.epochs_run),
                row.final_test_error_percent,
                row.best_test_error_percent,
                row.best_epoch,
                row.train_seconds,
                row.train_images_per_s,
                paper_error,
                row.paper_parameters.as_deref().unwrap_or("-"),
            );
        }
        text
    }

    /// `table.json`, pretty-printed.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the table serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::Model;

    /// A line of `metrics.jsonl`: epoch `epoch` at `test_accuracy`, with
    /// `100 x epoch` images/s over 2 s.
    fn epoch(epoch: u32, test_accuracy: f64) -> EpochMetrics {
        let line = format!(
            r#"{{"epoch":{epoch},"lr":0.1,"train_loss":1,"train_accuracy":0.5,"test_loss":1,"test_accuracy":{test_accuracy},"images_per_s":{},"seconds":2}}"#,
            100 * epoch
        );
        serde_json::from_str(&line).unwrap()
    }

    fn graph(name: &str) -> Graph {
        let text = format!(
            "network {name} {{\n input 1x8x8\n classes 2\n conv 4 3x3\n maxpool 2x2 stride=2\n conv 2 1x1\n gap\n softmax\n}}\n"
        );
        Model::from_text("test.net", &text).unwrap().graph
    }

    #[test]
    fn a_row_reads_the_runs_metrics() {
        let history = [epoch(1, 0.5), epoch(2, 0.8), epoch(3, 0.8), epoch(4, 0.75)];
        let row = Row::new("base", &graph("tiny"), 0.1, &history, 5).unwrap();
        assert_eq!((row.epochs_run, row.finished), (4, false));
        assert!((row.final_test_error_percent - 25.0).abs() < 1e-9);
        assert!((row.best_test_error_percent - 20.0).abs() < 1e-9);
        assert_eq!(row.best_epoch, 2, "the first of equal bests");
        assert_eq!(row.train_seconds, 8.0);
        // (100 + 200 + 300 + 400) images/s x 2 s over 8 s.
        assert!((row.train_images_per_s - 250.0).abs() < 1e-9);
        assert_eq!(row.parameters, 4 * 9 + 4 + 2 * 4 + 2);
        assert_eq!(Row::new("base", &graph("tiny"), 0.1, &[], 5), None);
    }

    #[test]
    fn paper_figures_only_for_the_papers_models() {
        let history = [epoch(1, 0.5)];
        let ours = Row::new("allconv", &graph("all_cnn_tiny"), 0.1, &history, 1).unwrap();
        assert_eq!(ours.paper_test_error_percent, None);
        assert_eq!(ours.paper_parameters, None);
        let papers = Row::new("allconv", &graph("all_cnn_c"), 0.01, &history, 1).unwrap();
        assert_eq!(papers.paper_test_error_percent, Some(9.08));
        assert_eq!(papers.paper_parameters.as_deref(), Some("1.4M"));
        assert!(papers.finished);

        let table = Table {
            base: "base.net".into(),
            recipe: "base.net".into(),
            data: "data".into(),
            seed: 3,
            epochs: 1,
            models: vec![ours, papers],
        };
        let markdown = table.markdown();
        assert!(
            markdown.contains("| all_cnn_tiny | allconv |"),
            "{markdown}"
        );
        assert!(markdown.contains("| 9.08 | 1.4M |"), "{markdown}");
        assert!(markdown.contains("| 0.01 | 1/1 |"), "{markdown}");
        assert!(markdown.contains("| - | - |"), "{markdown}");
        let json: serde_json::Value = serde_json::from_str(&table.json()).unwrap();
        assert_eq!(
            json["models"][0]["paper_test_error_percent"],
            serde_json::Value::Null
        );
        assert_eq!(json["models"][1]["paper_test_error_percent"], 9.08);
    }
}
