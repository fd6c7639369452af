//! Visualising what a unit has learned (Springenberg et al. 2015, Section 3.4,
//! Figures 1 and 3-6): the pure logic behind `allcnnc visualize`.
//!
//! - [`field`]: where a unit of a layer looks in the input image (receptive
//!   field size and jump from the compiler's `stats` pass, offset from the
//!   layers' padding);
//! - [`search`]: the images that excite a unit most, and the reconstruction
//!   of one unit by a backward pass with a [`ReluRule`] through any
//!   [`Executor`](runtime::backend::Executor);
//! - [`display`]: the one documented mapping from signals to pixels;
//! - [`canvas`]: an RGB canvas; its text is set in the font of
//!   [`runtime::draw`], the one the training curves use;
//! - [`figure`]: the labelled grid every figure is drawn as.
//!
//! Invariant: nothing here reads files or prints; the command line
//! (`cli::visualize`) does that.

pub mod canvas;
pub mod display;
pub mod field;
pub mod figure;
pub mod search;

use runtime::plan::ReluRule;

/// The three backward rules in the order every figure shows them.
pub const RULES: [ReluRule; 3] = [ReluRule::Backprop, ReluRule::Deconvnet, ReluRule::Guided];

/// The name of a rule in figures, JSON and on the command line.
pub fn rule_name(rule: ReluRule) -> &'static str {
    match rule {
        ReluRule::Backprop => "backprop",
        ReluRule::Deconvnet => "deconvnet",
        ReluRule::Guided => "guided",
    }
}

/// The name of a rule over a figure's column group, as the paper writes it.
pub fn rule_title(rule: ReluRule) -> &'static str {
    match rule {
        ReluRule::Backprop => "Backpropagation",
        ReluRule::Deconvnet => "Deconvnet",
        ReluRule::Guided => "Guided backpropagation",
    }
}
