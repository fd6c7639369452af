//! The pretty printer: IR to `.net` text.
//!
//! Deterministic and canonical: options equal to their defaults are left out,
//! floats print in Rust's shortest round-trip form, and labels are written
//! only for layers whose names were written in the source. Invariant:
//! parsing the printed text gives the same IR (tested for every model).

use crate::ir::training::{Init, Preprocess, Schedule};
use crate::ir::{Activation, Graph, Op, Pad, Rounding, Training};
use std::fmt::{self, Write};

/// Prints a whole file: an optional header comment, the network, the recipe.
pub fn print(graph: &Graph, header: &[String]) -> String {
    let mut writer = Writer::default();
    // Writing into a String cannot fail.
    let _ = writer.put_file(graph, header);
    writer.out
}

#[derive(Default)]
struct Writer {
    out: String,
    indent: usize,
}

impl Writer {
    fn line(&mut self, args: fmt::Arguments<'_>) -> fmt::Result {
        for _ in 0..self.indent {
            self.out.push_str("    ");
        }
        self.out.write_fmt(args)?;
        self.out.push('\n');
        Ok(())
    }

    fn put_file(&mut self, graph: &Graph, header: &[String]) -> fmt::Result {
        for line in header {
            self.line(format_args!("# {line}"))?;
        }
        if !header.is_empty() {
            self.out.push('\n');
        }
        self.line(format_args!("network {} {{", graph.name))?;
        self.indent += 1;
        let input = graph.input;
        self.line(format_args!("input {}x{}x{}", input.c, input.h, input.w))?;
        self.line(format_args!("classes {}", graph.classes))?;
        self.out.push('\n');
        for node in graph.nodes() {
            let label = if node.labelled {
                format!("{}: ", node.name)
            } else {
                String::new()
            };
            self.line(format_args!("{label}{}", op_text(&node.op)))?;
        }
        self.indent -= 1;
        self.line(format_args!("}}"))?;
        if let Some(training) = &graph.training {
            self.out.push('\n');
            self.put_training(training)?;
        }
        Ok(())
    }

    fn put_training(&mut self, t: &Training) -> fmt::Result {
        self.line(format_args!("train {{"))?;
        self.indent += 1;
        let nesterov = if t.nesterov { " nesterov=true" } else { "" };
        self.line(format_args!(
            "optimizer sgd momentum={}{nesterov}",
            t.momentum
        ))?;
        self.line(format_args!("lr {}", t.lr))?;
        match &t.schedule {
            Schedule::Constant => self.line(format_args!("schedule constant"))?,
            Schedule::Cosine => self.line(format_args!("schedule cosine"))?,
            Schedule::Step { gamma, milestones } => {
                let at: Vec<String> = milestones.iter().map(u32::to_string).collect();
                // A single milestone is a plain value, not a list.
                self.line(format_args!(
                    "schedule step gamma={gamma} at={}",
                    at.join(",")
                ))?
            }
        }
        if t.warmup > 0 {
            self.line(format_args!("warmup {}", t.warmup))?;
        }
        if t.init != Init::default() {
            let init = match t.init {
                Init::He => "he",
                Init::Lsuv => "lsuv",
            };
            self.line(format_args!("init {init}"))?;
        }
        self.line(format_args!("epochs {}", t.epochs))?;
        self.line(format_args!("batch {}", t.batch))?;
        self.line(format_args!("weight_decay {}", t.weight_decay))?;
        let preprocess = match t.preprocess {
            Preprocess::None => "none",
            Preprocess::Normalize => "normalize",
            Preprocess::GcnZca => "gcn_zca",
        };
        self.line(format_args!("preprocess {preprocess}"))?;
        let mut augment = String::new();
        if t.flip {
            augment.push_str(" flip");
        }
        if t.translate > 0 {
            augment.push_str(&format!(" translate={}", t.translate));
        }
        if augment.is_empty() {
            augment.push_str(" none");
        }
        self.line(format_args!("augment{augment}"))?;
        self.indent -= 1;
        self.line(format_args!("}}"))
    }
}

fn pair(p: (usize, usize)) -> String {
    if p.0 == p.1 {
        p.0.to_string()
    } else {
        format!("{}x{}", p.0, p.1)
    }
}

fn pad_text(pad: &Pad) -> String {
    match pad {
        Pad::Same => "same".into(),
        Pad::Valid => "valid".into(),
        Pad::Explicit(p) if p.top == p.bottom && p.left == p.right && p.top == p.left => {
            p.top.to_string()
        }
        Pad::Explicit(p) if p.top == p.bottom && p.left == p.right => {
            format!("{}x{}", p.top, p.left)
        }
        Pad::Explicit(p) => format!("{}x{}x{}x{}", p.top, p.left, p.bottom, p.right),
    }
}

/// One layer as `.net` text (without its label).
pub fn op_text(op: &Op) -> String {
    match op {
        Op::Conv {
            out_channels,
            kernel,
            stride,
            pad,
            act,
            bias,
        } => {
            let mut s = format!("conv {out_channels} {}x{}", kernel.0, kernel.1);
            if *stride != (1, 1) {
                s.push_str(&format!(" stride={}", pair(*stride)));
            }
            if *pad != Pad::Same {
                s.push_str(&format!(" pad={}", pad_text(pad)));
            }
            match act {
                Activation::Relu => {}
                Activation::None => s.push_str(" act=none"),
                Activation::LeakyRelu { slope } => s.push_str(&format!(" act=leaky({slope})")),
            }
            if !bias {
                s.push_str(" bias=false");
            }
            s
        }
        Op::MaxPool { .. } | Op::AvgPool { .. } => {
            let pool = op.pool_window().expect("a pooling op has a window");
            let mut s = format!("{} {}x{}", op.keyword(), pool.kernel.0, pool.kernel.1);
            if pool.stride != pool.kernel {
                s.push_str(&format!(" stride={}", pair(pool.stride)));
            }
            if pool.pad != Pad::Valid {
                s.push_str(&format!(" pad={}", pad_text(&pool.pad)));
            }
            if pool.round == Rounding::Down {
                s.push_str(" round=down");
            }
            s
        }
        Op::GlobalAvgPool => "gap".into(),
        Op::Dropout { p } => format!("dropout {p}"),
        Op::Softmax => "softmax".into(),
    }
}
