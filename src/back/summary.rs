//! The per-layer summary: a text table for people and JSON for scripts.

use crate::ir::{Graph, Shape};
use crate::paper;
use serde::Serialize;
use std::fmt::Write;

#[derive(Debug, Clone, Serialize)]
pub struct LayerRow {
    pub name: String,
    pub op: String,
    pub output_shape: [usize; 3],
    pub params: u64,
    pub macs: u64,
    pub receptive_field: u64,
    pub jump: u64,
    pub activation_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub name: String,
    pub input: [usize; 3],
    pub classes: usize,
    pub total_params: u64,
    pub total_macs: u64,
    pub total_activation_bytes: u64,
    pub layers: Vec<LayerRow>,
    /// The paper's rounded figure, when it has one for this model.
    pub paper_params: Option<&'static str>,
    pub training: Option<crate::ir::Training>,
}

fn dims(shape: Shape) -> [usize; 3] {
    [shape.c, shape.h, shape.w]
}

pub fn summarize(graph: &Graph) -> Summary {
    let layers: Vec<LayerRow> = graph
        .nodes()
        .map(|node| {
            let stats = node.stats.unwrap_or_default();
            LayerRow {
                name: node.name.clone(),
                op: crate::back::net::op_text(&node.op),
                output_shape: node.out_shape.map(dims).unwrap_or_default(),
                params: stats.params,
                macs: stats.macs,
                receptive_field: stats.receptive_field,
                jump: stats.jump,
                activation_bytes: stats.activation_bytes,
            }
        })
        .collect();
    Summary {
        name: graph.name.clone(),
        input: dims(graph.input),
        classes: graph.classes,
        total_params: graph.total_params(),
        total_macs: graph.total_macs(),
        total_activation_bytes: layers.iter().map(|l| l.activation_bytes).sum(),
        layers,
        paper_params: paper::paper_params(&graph.name),
        training: graph.training.clone(),
    }
}

/// `1369738` as `1,369,738`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

pub fn render_text(summary: &Summary) -> String {
    let mut out = String::new();
    let [c, h, w] = summary.input;
    let _ = writeln!(
        out,
        "network {}: input {c}x{h}x{w}, {} classes",
        summary.name, summary.classes
    );
    let header = [
        "layer", "op", "output", "params", "MACs", "RF", "jump", "act/img",
    ];
    let rows: Vec<[String; 8]> = summary
        .layers
        .iter()
        .map(|l| {
            let [c, h, w] = l.output_shape;
            [
                l.name.clone(),
                l.op.clone(),
                format!("{c}x{h}x{w}"),
                thousands(l.params),
                thousands(l.macs),
                l.receptive_field.to_string(),
                l.jump.to_string(),
                bytes(l.activation_bytes),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let put = |out: &mut String, cells: &[String]| {
        let mut line = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            // Text columns align left, numbers right.
            if i < 3 {
                let _ = write!(line, "{cell:<width$}  ");
            } else {
                let _ = write!(line, "{cell:>width$}  ");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    };
    put(&mut out, &header.map(String::from));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    put(&mut out, &rule);
    for row in &rows {
        put(&mut out, row);
    }
    let _ = writeln!(
        out,
        "total: {} parameters (weights + biases), {} MACs per image ({:.3} GFLOP forward), {} of activations per image",
        thousands(summary.total_params),
        thousands(summary.total_macs),
        2.0 * summary.total_macs as f64 / 1e9,
        bytes(summary.total_activation_bytes)
    );
    if let Some(figure) = summary.paper_params {
        if paper::agrees(summary.total_params, figure) {
            let _ = writeln!(
                out,
                "paper (Table 3): {figure} parameters, in agreement with the exact count"
            );
        } else {
            let _ = writeln!(
                out,
                "paper (Table 3): {figure} parameters; the exact count above ({:.2}M) disagrees with the paper's rounded figure",
                summary.total_params as f64 / 1e6
            );
        }
    }
    if let Some(t) = &summary.training {
        use crate::ir::training::{Preprocess, Schedule};
        let schedule = match &t.schedule {
            Schedule::Constant => "constant".to_string(),
            Schedule::Cosine => "cosine".to_string(),
            Schedule::Step { gamma, milestones } => {
                let at: Vec<String> = milestones.iter().map(u32::to_string).collect();
                format!("x{gamma} at epochs {}", at.join(", "))
            }
        };
        let preprocess = match t.preprocess {
            Preprocess::None => "none",
            Preprocess::Normalize => "per-channel normalisation",
            Preprocess::GcnZca => "GCN + ZCA whitening",
        };
        let mut augment = Vec::new();
        if t.flip {
            augment.push("flips".to_string());
        }
        if t.translate > 0 {
            augment.push(format!("translations up to {} px", t.translate));
        }
        let _ = writeln!(
            out,
            "training: sgd momentum {}{}, lr {} ({schedule}{}), {} epochs, batch {}, weight decay {}, {preprocess}, augmentation: {}, init {}",
            t.momentum,
            if t.nesterov { " (nesterov)" } else { "" },
            t.lr,
            if t.warmup > 0 { format!(", {} warm-up epochs", t.warmup) } else { String::new() },
            t.epochs,
            t.batch,
            t.weight_decay,
            if augment.is_empty() { "none".to_string() } else { augment.join(", ") },
            t.init.name()
        );
    }
    out
}
