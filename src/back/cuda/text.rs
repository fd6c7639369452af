//! Names and text of the generated source: C identifiers from layer names,
//! float literals, and the phrases kernel comments are made of.
//!
//! Invariant: every function here is pure and formats numbers one way
//! (floats in Rust's shortest round-trip form), so the source is
//! deterministic.

use crate::back::names::UniqueNames;
use plan::{Activation, Window};

/// A C float literal in Rust's shortest round-trip form (`0.5f`, `1e-5f`).
pub fn c_float(value: f32) -> String {
    let text = format!("{value:?}");
    if text.contains(['.', 'e', 'E']) {
        format!("{text}f")
    } else {
        format!("{text}.0f")
    }
}

/// A C identifier from a layer name.
fn identifier(name: &str) -> String {
    let mut id: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !id.starts_with(|c: char| c.is_ascii_alphabetic()) {
        id.insert_str(0, "layer_");
    }
    id
}

/// Unique identifiers for the groups.
#[derive(Default)]
pub struct Namer {
    names: UniqueNames,
}

impl Namer {
    pub fn name(&mut self, wanted: &str) -> String {
        self.names.claim(&identifier(wanted))
    }
}

/// The prelude's constant for an activation and its slope.
pub fn act_code(act: Activation) -> (&'static str, f32) {
    match act {
        Activation::None => ("allcnnc::ACT_NONE", 0.0),
        Activation::Relu => ("allcnnc::ACT_RELU", 0.0),
        Activation::LeakyRelu { slope } => ("allcnnc::ACT_LEAKY", slope),
    }
}

pub fn act_text(act: Activation) -> String {
    match act {
        Activation::None => "no activation".into(),
        Activation::Relu => "relu".into(),
        Activation::LeakyRelu { slope } => format!("leaky relu (slope {slope:?})"),
    }
}

pub fn window_text(window: &Window) -> String {
    let pad = window.pad;
    format!(
        "{}x{} stride {}x{} pad {},{},{},{} (top, left, bottom, right)",
        window.kh,
        window.kw,
        window.stride_h,
        window.stride_w,
        pad.top,
        pad.left,
        pad.bottom,
        pad.right
    )
}
