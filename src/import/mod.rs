//! Models from other tools as `.net` files and checkpoints: `allcnnc
//! import` of ONNX models ([`onnx`]) and Caffe networks ([`caffe`]).
//!
//! Each importer walks its source's layers in order and feeds them to one
//! [`Builder`], which owns every rule that is the same for all sources:
//! - a ReLU or leaky ReLU becomes the activation of the convolution before
//!   it; one that follows a max pool moves before the pool (both are
//!   monotonic, so they commute exactly), anything else is an error;
//! - batch normalisation (and Caffe's `Scale`) is folded into the
//!   convolution before it: exact at inference, and the imported model
//!   trains without batch normalisation (the header says so);
//! - a fully connected layer after a flatten is the valid convolution over
//!   the whole feature map (its `out x (C*H*W)` matrix is already the
//!   `O x C x H x W` kernel: both flatten in C, H, W order);
//! - paddings and pools are written in the language's defaults where they
//!   compute the same thing (`same` or `valid`, Caffe's round-up rule),
//!   else explicitly, so that a model exported by allcnnc comes back with
//!   its own signature;
//! - a source that ends in scores gets the softmax the language's
//!   classifier ends in (noted in the header).
//!
//! [`Imported::write`] prints the `.net` text with a header naming the
//! source and everything folded, moved, added or dropped, checks it like
//! any `.net` file (a failure is a bug of the importer, reported as such)
//! and builds the checkpoint of its weights in the plan's order.
//!
//! Invariant: nothing is approximated or dropped silently. A layer that the
//! language cannot express exactly is an [`ImportError`] naming the node or
//! layer, its operator and why.

pub mod caffe;
pub mod from_caffe;
pub mod onnx;

use crate::back;
use crate::driver::{DriverError, Model};
use crate::front::elaborate::MAX_LAYERS;
use crate::ir::{Activation, Graph, Node, Op, Pad, Rounding};
use crate::passes::shapes::{axis_out, out_shape};
use plan::{Padding, Shape};
use runtime::data::preprocess::Preprocess;
use runtime::train::checkpoint::{Checkpoint, CheckpointError, Progress};
use std::collections::HashSet;
use std::path::Path;

/// Why a model could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file is not a well-formed model of its format.
    #[error("{file}: {reason}")]
    Malformed { file: String, reason: String },
    /// A node or layer the language cannot express exactly.
    #[error("{file}: {at} ({op}): {reason}")]
    Unsupported {
        file: String,
        /// Where: e.g. "node 7 `/fc1/Gemm`" or "layer `norm1`, line 40".
        at: String,
        op: String,
        reason: String,
    },
    /// The `.net` text of the model does not check (e.g. it exceeds a
    /// limit of the language).
    #[error("the imported model does not check as a .net file:\n{0}")]
    Check(String),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Where a layer came from, for messages: "node 7 `/fc1/Gemm`".
#[derive(Debug, Clone)]
pub struct Origin {
    pub at: String,
    pub op: String,
}

impl Origin {
    pub fn new(at: impl Into<String>, op: impl Into<String>) -> Self {
        Self {
            at: at.into(),
            op: op.into(),
        }
    }
}

/// One layer being built: its IR node and, for a convolution, its weights
/// (`O x I x KH x KW`) and bias.
#[derive(Debug, Clone)]
struct Layer {
    name: String,
    op: Op,
    out: Shape,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    /// Per-channel `factor, offset` folded in (batch norm, Scale), not yet
    /// applied to `weight` and `bias`.
    affine: Option<(Vec<f64>, Vec<f64>)>,
}

impl Layer {
    /// `weight` and `bias` with the folded per-channel affine map applied.
    fn folded(mut self) -> Self {
        if let Some((factor, offset)) = self.affine.take() {
            let out = factor.len();
            let per_out = self.weight.len() / out.max(1);
            if per_out > 0 {
                for (o, chunk) in self.weight.chunks_mut(per_out).enumerate() {
                    for w in chunk {
                        *w = (f64::from(*w) * factor[o]) as f32;
                    }
                }
            }
            let bias = self.bias.get_or_insert_with(|| vec![0.0; out]);
            for (o, b) in bias.iter_mut().enumerate() {
                *b = (f64::from(*b) * factor[o] + offset[o]) as f32;
            }
        }
        self
    }
}

/// Builds a network layer by layer from a source's nodes, applying the
/// rules of the module doc; shapes are followed as layers are added.
#[derive(Debug)]
pub struct Builder {
    file: String,
    input: Shape,
    layers: Vec<Layer>,
    notes: Vec<String>,
    names: HashSet<String>,
    /// A flatten was seen: the next fully connected layer takes the whole
    /// feature map.
    flattened: bool,
}

/// The pool kinds the language has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

/// A pool as the source writes it: explicit paddings and a rounding rule.
#[derive(Debug, Clone, Copy)]
pub struct PoolSpec {
    pub kind: PoolKind,
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub pad: Padding,
    pub round: Rounding,
}

impl Builder {
    /// A builder for a model of `input` images read from `file`; each size
    /// at most the language's largest number (2^24), the image at most 2^32
    /// values.
    pub fn new(file: impl Into<String>, input: Shape) -> Result<Self, ImportError> {
        let file = file.into();
        let sizes = [input.c, input.h, input.w];
        let fits = sizes.iter().all(|&s| (1..=MAX_SIZE).contains(&s))
            && input
                .c
                .checked_mul(input.h)
                .and_then(|v| v.checked_mul(input.w))
                .is_some_and(|v| v <= 1 << 32);
        if !fits {
            return Err(ImportError::Malformed {
                file,
                reason: format!("an input of {}x{}x{}: each size must be 1 to {MAX_SIZE} and the image at most 2^32 values", input.c, input.h, input.w),
            });
        }
        Ok(Self {
            file,
            input,
            layers: Vec::new(),
            notes: Vec::new(),
            names: HashSet::new(),
            flattened: false,
        })
    }

    /// The shape the next layer sees.
    pub fn shape(&self) -> Shape {
        self.layers.last().map_or(self.input, |layer| layer.out)
    }

    /// Whether a layer has been added yet.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Adds a line to the header of the written file.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    fn unsupported(&self, origin: &Origin, reason: impl Into<String>) -> ImportError {
        ImportError::Unsupported {
            file: self.file.clone(),
            at: origin.at.clone(),
            op: origin.op.clone(),
            reason: reason.into(),
        }
    }

    fn push(
        &mut self,
        name: &str,
        op: Op,
        weight: Vec<f32>,
        bias: Option<Vec<f32>>,
        origin: Origin,
    ) -> Result<(), ImportError> {
        if self.layers.len() >= MAX_LAYERS {
            return Err(self.unsupported(
                &origin,
                format!("more than {MAX_LAYERS} layers, the language's limit"),
            ));
        }
        let input = self.shape();
        let out = out_shape(&op, input).map_err(|why| self.unsupported(&origin, why))?;
        let fallback = format!("{}{}", op.name_prefix(), self.layers.len() + 1);
        let name = unique_label(&mut self.names, name, &fallback);
        self.layers.push(Layer {
            name,
            op,
            out,
            weight,
            bias,
            affine: None,
        });
        Ok(())
    }

    /// A convolution with `O x I x KH x KW` weights (no activation yet).
    pub fn conv(
        &mut self,
        name: &str,
        stride: (usize, usize),
        pad: Padding,
        weight: (Vec<f32>, [usize; 4]),
        bias: Option<Vec<f32>>,
        origin: Origin,
    ) -> Result<(), ImportError> {
        let (weight, [out_channels, in_channels, kh, kw]) = weight;
        let input = self.shape();
        if self.flattened && (input.h, input.w) != (1, 1) {
            return Err(self.unsupported(
                &origin,
                format!("a convolution after a flatten of a {input} feature map"),
            ));
        }
        if in_channels != input.c {
            return Err(self.unsupported(
                &origin,
                format!(
                    "its weights take {in_channels} channels but its input has {}",
                    input.c
                ),
            ));
        }
        // No weights at all: a network read without them (a prototxt).
        let sized = weight.is_empty() || weight.len() == out_channels * in_channels * kh * kw;
        if !sized || kh == 0 || kw == 0 || out_channels == 0 || out_channels > MAX_SIZE {
            return Err(self.unsupported(
                &origin,
                format!(
                    "{} weight values for a {out_channels}x{in_channels}x{kh}x{kw} kernel",
                    weight.len()
                ),
            ));
        }
        if let Some(bias) = &bias {
            if bias.len() != out_channels && !(bias.is_empty() && weight.is_empty()) {
                return Err(self.unsupported(
                    &origin,
                    format!("{} bias values for {out_channels} outputs", bias.len()),
                ));
            }
        }
        let op = Op::Conv {
            out_channels,
            kernel: (kh, kw),
            stride,
            pad: conv_pad(pad, kh, kw),
            act: Activation::None,
            bias: bias.is_some(),
        };
        self.push(name, op, weight, bias, origin)
    }

    /// A fully connected layer: `weight` is `out x in` (row-major), `in`
    /// the flattened feature map (C, H, W order) or its channels.
    pub fn fully_connected(
        &mut self,
        name: &str,
        weight: Vec<f32>,
        out: usize,
        bias: Option<Vec<f32>>,
        origin: Origin,
    ) -> Result<(), ImportError> {
        let input = self.shape();
        if (input.h, input.w) != (1, 1) && !self.flattened {
            return Err(self.unsupported(
                &origin,
                format!("a fully connected layer over a {input} feature map without a flatten before it"),
            ));
        }
        let fan_in = input.len();
        if out == 0 || (!weight.is_empty() && weight.len() != out * fan_in) {
            return Err(self.unsupported(
                &origin,
                format!(
                    "{} weight values for {out} outputs of {fan_in} inputs (the flattened {input})",
                    weight.len()
                ),
            ));
        }
        if (input.h, input.w) != (1, 1) {
            self.note(format!(
                "fully connected layer ({} {}): the valid {}x{} convolution over the {input} feature map (same weights)",
                origin.op, origin.at, input.h, input.w
            ));
        }
        self.flattened = false;
        self.conv(
            name,
            (1, 1),
            Padding::default(),
            (weight, [out, input.c, input.h, input.w]),
            bias,
            origin,
        )
    }

    /// A flatten: the identity on the values; the next fully connected
    /// layer takes the whole map.
    pub fn flatten(&mut self) {
        let shape = self.shape();
        if (shape.h, shape.w) != (1, 1) {
            self.flattened = true;
        }
    }

    /// The last layer when it is a convolution with no activation yet.
    fn open_conv(&mut self) -> Option<&mut Layer> {
        self.layers.last_mut().filter(|layer| {
            matches!(
                layer.op,
                Op::Conv {
                    act: Activation::None,
                    ..
                }
            )
        })
    }

    /// A ReLU (`slope` 0) or leaky ReLU on the last layer's output.
    pub fn activation(&mut self, slope: f32, origin: Origin) -> Result<(), ImportError> {
        if !slope.is_finite() || slope < 0.0 {
            return Err(self.unsupported(
                &origin,
                format!("a negative slope of {slope}: only slopes >= 0 keep the activation monotonic, as the language's are"),
            ));
        }
        let act = if slope == 0.0 {
            Activation::Relu
        } else {
            Activation::LeakyRelu { slope }
        };
        let n = self.layers.len();
        // conv -> act, or conv -> max pool -> act (they commute).
        let target = match self.layers.last().map(|layer| &layer.op) {
            Some(Op::Conv {
                act: Activation::None,
                ..
            }) => Some(n - 1),
            Some(Op::MaxPool { .. }) if n >= 2 => match self.layers[n - 2].op {
                Op::Conv {
                    act: Activation::None,
                    ..
                } => Some(n - 2),
                _ => None,
            },
            _ => None,
        };
        let Some(target) = target else {
            let after = self
                .layers
                .last()
                .map_or("the input".to_string(), |l| format!("`{}`", l.name));
            return Err(self.unsupported(
                &origin,
                format!("an activation after {after}: the language has activations only on convolutions (directly, or across a max pool)"),
            ));
        };
        if target != n - 1 {
            let note =
                format!(
                "{} ({}) applied before max pool `{}` (an increasing function commutes with max)",
                origin.op, origin.at, self.layers[n - 1].name
            );
            self.note(note);
        }
        if let Op::Conv { act: a, .. } = &mut self.layers[target].op {
            *a = act;
        }
        Ok(())
    }

    /// Batch normalisation `y = (x - mean) / sqrt(var + eps) * scale + shift`
    /// per channel, folded into the convolution before it.
    pub fn batch_norm(
        &mut self,
        scale: &[f32],
        shift: &[f32],
        mean: &[f32],
        var: &[f32],
        eps: f64,
        origin: Origin,
    ) -> Result<(), ImportError> {
        let c = self.shape().c;
        if [scale.len(), shift.len(), mean.len(), var.len()] != [c; 4] {
            return Err(self.unsupported(
                &origin,
                format!("its tensors do not all have {c} values (one per channel)"),
            ));
        }
        let mut factor = Vec::with_capacity(c);
        let mut offset = Vec::with_capacity(c);
        for i in 0..c {
            let denom = (f64::from(var[i]) + eps).sqrt();
            if !(denom.is_finite() && denom > 0.0) {
                return Err(self.unsupported(
                    &origin,
                    format!(
                        "channel {i}: variance {} + epsilon {eps} is not positive",
                        var[i]
                    ),
                ));
            }
            let f = f64::from(scale[i]) / denom;
            factor.push(f);
            offset.push(f64::from(shift[i]) - f64::from(mean[i]) * f);
        }
        self.affine(&factor, &offset, &origin, "batch normalisation")
    }

    /// `y = x * factor + offset` per channel (Caffe's `Scale`, or a folded
    /// batch normalisation), folded into the convolution before it.
    pub fn channel_affine(
        &mut self,
        factor: &[f32],
        offset: Option<&[f32]>,
        origin: Origin,
    ) -> Result<(), ImportError> {
        let c = self.shape().c;
        if factor.len() != c || offset.is_some_and(|o| o.len() != c) {
            return Err(self.unsupported(
                &origin,
                format!("its tensors do not all have {c} values (one per channel)"),
            ));
        }
        let factor: Vec<f64> = factor.iter().map(|&v| f64::from(v)).collect();
        let offset: Vec<f64> = match offset {
            Some(o) => o.iter().map(|&v| f64::from(v)).collect(),
            None => vec![0.0; c],
        };
        self.affine(&factor, &offset, &origin, "scale")
    }

    fn affine(
        &mut self,
        factor: &[f64],
        offset: &[f64],
        origin: &Origin,
        what: &str,
    ) -> Result<(), ImportError> {
        let conv_name = self.layers.last().map_or(String::new(), |l| l.name.clone());
        let file_note = format!(
            "{what} ({} {}) folded into convolution `{conv_name}` (exact at inference; the imported model trains without it)",
            origin.op, origin.at
        );
        let Some(conv) = self.open_conv() else {
            return Err(self.unsupported(
                origin,
                format!("{what} that does not follow a convolution (without an activation between) cannot be folded"),
            ));
        };
        // Composed in float64 with any fold before (batch norm then
        // Scale) and applied once, so each weight is rounded once.
        let (f, o) = conv
            .affine
            .get_or_insert_with(|| (vec![1.0; factor.len()], vec![0.0; factor.len()]));
        for c in 0..factor.len() {
            f[c] *= factor[c];
            o[c] = o[c] * factor[c] + offset[c];
        }
        if let Op::Conv { bias, .. } = &mut conv.op {
            *bias = true;
        }
        self.note(file_note);
        Ok(())
    }

    /// A max or average pool; written in the language's defaults (valid,
    /// Caffe's round-up) where they give the same windows.
    pub fn pool(&mut self, name: &str, spec: PoolSpec, origin: Origin) -> Result<(), ImportError> {
        let input = self.shape();
        let PoolSpec {
            kind,
            kernel,
            stride,
            pad,
            round,
        } = spec;
        let size = |pad: &Pad, round| {
            let p = pad.resolve(kernel.0, kernel.1);
            Some((
                axis_out(input.h, kernel.0, stride.0, p.top, p.bottom, round)?,
                axis_out(input.w, kernel.1, stride.1, p.left, p.right, round)?,
            ))
        };
        let Some(wanted) = size(&Pad::Explicit(pad), round) else {
            return Err(self.unsupported(
                &origin,
                format!(
                    "a {}x{} window does not fit the {input} input with its padding",
                    kernel.0, kernel.1
                ),
            ));
        };
        // The windows start at -top + i * stride in every form below, so
        // the same leading padding and output size is the same pool, up to
        // trailing padding that no window of the output reaches (max) or
        // that both count alike (average, checked by the caller).
        let mut candidates = vec![(Pad::Valid, Rounding::Up), (Pad::Same, Rounding::Up)];
        if kind == PoolKind::Max {
            candidates.push((Pad::Valid, Rounding::Down));
        }
        let lead = |p: &Pad| {
            let r = p.resolve(kernel.0, kernel.1);
            (r.top, r.left)
        };
        let chosen = candidates
            .into_iter()
            .find(|(p, r)| {
                lead(p) == (pad.top, pad.left)
                    && size(p, *r) == Some(wanted)
                    && (kind == PoolKind::Max || p.resolve(kernel.0, kernel.1) == pad)
            })
            .unwrap_or((pool_pad(pad), round));
        let (pad, round) = chosen;
        let op = match kind {
            PoolKind::Max => Op::MaxPool {
                kernel,
                stride,
                pad,
                round,
            },
            PoolKind::Avg => Op::AvgPool {
                kernel,
                stride,
                pad,
                round,
            },
        };
        self.push(name, op, Vec::new(), None, origin)
    }

    /// A global average pool.
    pub fn global_avg_pool(&mut self, name: &str, origin: Origin) -> Result<(), ImportError> {
        self.push(name, Op::GlobalAvgPool, Vec::new(), None, origin)
    }

    /// Dropout with drop probability `p` (the identity at inference).
    pub fn dropout(&mut self, name: &str, p: f64, origin: Origin) -> Result<(), ImportError> {
        if !(0.0..1.0).contains(&p) {
            return Err(self.unsupported(&origin, format!("a drop probability of {p}")));
        }
        self.push(name, Op::Dropout { p }, Vec::new(), None, origin)
    }

    /// The softmax over the classes.
    pub fn softmax(&mut self, name: &str, origin: Origin) -> Result<(), ImportError> {
        let shape = self.shape();
        if (shape.h, shape.w) != (1, 1) {
            return Err(self.unsupported(
                &origin,
                format!("a softmax over a {shape} feature map: the language's softmax takes class scores (1x1)"),
            ));
        }
        self.push(name, Op::Softmax, Vec::new(), None, origin)
    }

    /// The finished model `name`: adds the softmax when the source ends in
    /// scores. `source` names the file in the header's first line.
    pub fn finish(
        mut self,
        name: &str,
        source: &str,
        preprocess: Option<Preprocess>,
        class_names: Vec<String>,
    ) -> Result<Imported, ImportError> {
        let Some(last) = self.layers.last() else {
            return Err(ImportError::Malformed {
                file: self.file.clone(),
                reason: "no layers".into(),
            });
        };
        if !matches!(last.op, Op::Softmax) {
            let shape = last.out;
            if (shape.h, shape.w) != (1, 1) {
                return Err(ImportError::Malformed {
                    file: self.file.clone(),
                    reason: format!(
                        "the network ends in a {shape} feature map, not class scores; a classifier ends in C x 1 x 1"
                    ),
                });
            }
            self.note("softmax added: the source ends in class scores");
            let origin = Origin::new("the end", "softmax");
            self.softmax("softmax", origin)?;
        }
        let classes = self.shape().c;
        let mut graph = Graph::new(label_of(name), self.input, classes);
        let mut weights = Vec::new();
        for layer in self.layers {
            let layer = layer.folded();
            let mut node = Node::new(layer.name.clone(), layer.op, 0..0);
            node.labelled = true;
            graph.push(node);
            if matches!(
                graph.node(*graph.layers().last().expect("pushed")).op,
                Op::Conv { .. }
            ) {
                weights.push((layer.name, layer.weight, layer.bias));
            }
        }
        let mut header = vec![format!("Imported from {source} by allcnnc import.")];
        header.extend(self.notes);
        Ok(Imported {
            graph,
            header,
            weights,
            preprocess,
            class_names,
        })
    }
}

/// A `.net` label from a source name: letters, digits and `_`, not
/// starting with a digit, no keyword, unique among `names` (to which it is
/// added). Falls back to `fallback` (e.g. `conv3`) when nothing usable is
/// left.
fn unique_label(names: &mut HashSet<String>, name: &str, fallback: &str) -> String {
    let mut label: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    label = label.trim_matches('_').to_string();
    while label.contains("__") {
        label = label.replace("__", "_");
    }
    if label.is_empty() {
        label = fallback.to_string();
    }
    if label.starts_with(|c: char| c.is_ascii_digit()) {
        label = format!("{fallback}_{label}");
    }
    if KEYWORDS.contains(&label.as_str()) {
        label.push('_');
    }
    let mut unique = label.clone();
    let mut n = 2;
    while names.contains(&unique) {
        unique = format!("{label}_{n}");
        n += 1;
    }
    names.insert(unique.clone());
    unique
}

/// The largest size of an input axis: the language's largest whole number.
const MAX_SIZE: usize = 1 << 24;

/// The language's keywords, which no label may be.
const KEYWORDS: &[&str] = &["let", "block", "network", "train", "repeat", "use", "in"];

/// The file name without folders and extension: a model's name where the
/// source gives none (or a generic one).
fn stem(file: &str) -> String {
    std::path::Path::new(file).file_stem().map_or_else(
        || "imported".to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

/// A model name for the `.net` text.
fn label_of(name: &str) -> String {
    unique_label(&mut HashSet::new(), name, "imported")
}

/// A convolution's padding in the language's words: `same` (the default)
/// or `valid` where they are these amounts.
fn conv_pad(pad: Padding, kh: usize, kw: usize) -> Pad {
    if Pad::Same.resolve(kh, kw) == pad {
        Pad::Same
    } else if pad == Padding::default() {
        Pad::Valid
    } else {
        Pad::Explicit(pad)
    }
}

/// A pool's padding in the language's words (`valid` is its default).
fn pool_pad(pad: Padding) -> Pad {
    if pad == Padding::default() {
        Pad::Valid
    } else {
        Pad::Explicit(pad)
    }
}

/// An imported model: its graph, the header of its `.net` text, each
/// convolution's weights (`O x I x KH x KW`) and bias, the preprocessing
/// and class names its source holds.
#[derive(Debug, Clone)]
pub struct Imported {
    pub graph: Graph,
    pub header: Vec<String>,
    weights: Vec<(String, Vec<f32>, Option<Vec<f32>>)>,
    pub preprocess: Option<Preprocess>,
    pub class_names: Vec<String>,
}

impl Imported {
    /// The `.net` text.
    pub fn text(&self) -> String {
        back::net::print(&self.graph, &self.header)
    }

    /// Whether the source held weights (every convolution has some).
    pub fn has_weights(&self) -> bool {
        !self.weights.is_empty() && self.weights.iter().all(|(_, w, _)| !w.is_empty())
    }

    /// The text checked as a `.net` file named `net_name`, and the
    /// checkpoint of the weights in its plan's order.
    pub fn model(&self, net_name: &str) -> Result<(Model, Checkpoint), ImportError> {
        let model = Model::from_text(net_name, &self.text()).map_err(|err| match err {
            DriverError::Diagnostics { file, diagnostics } => {
                ImportError::Check(crate::diagnostic::render_plain(&file, &diagnostics))
            }
            other => ImportError::Check(other.to_string()),
        })?;
        let mut params = Vec::new();
        for (layer, (name, weight, bias)) in model
            .plan
            .layers
            .iter()
            .filter(|layer| matches!(layer.op, plan::Op::Conv { .. }))
            .zip(&self.weights)
        {
            debug_assert_eq!(&layer.name, name);
            let plan::Op::Conv {
                out_channels,
                window,
                ..
            } = &layer.op
            else {
                unreachable!("filtered to convolutions");
            };
            let (o, i, kh, kw) = (*out_channels, layer.in_shape.c, window.kh, window.kw);
            // Empty when the source has no weights (see `has_weights`).
            params.push(if weight.is_empty() {
                Vec::new()
            } else {
                oihw_to_hwio(weight, o, i, kh, kw)
            });
            if let Some(bias) = bias {
                params.push(bias.clone());
            }
        }
        let checkpoint = Checkpoint {
            model_hash: model.plan.model_hash.clone(),
            model: model.plan.name.clone(),
            params,
            momentum: Vec::new(),
            preprocess: self.preprocess.clone(),
            class_names: self.class_names.clone(),
            progress: Progress::default(),
        };
        Ok((model, checkpoint))
    }

    /// Writes the `.net` text to `net` and, when given, the weights to
    /// `weights` (an inference checkpoint); both are checked first.
    pub fn write(&self, net: &Path, weights: Option<&Path>) -> Result<Model, ImportError> {
        let (model, checkpoint) = self.model(&net.display().to_string())?;
        if let Some(path) = weights {
            checkpoint.save(&model.plan, path)?;
        }
        runtime::file::write_atomically(net, |out| {
            std::io::Write::write_all(out, model.source.text.as_bytes())
        })
        .map_err(|source| ImportError::Write {
            path: net.display().to_string(),
            source,
        })?;
        Ok(model)
    }
}

/// `O x I x KH x KW` to the checkpoint's `KH x KW x I x O`.
pub fn oihw_to_hwio(oihw: &[f32], o: usize, i: usize, kh: usize, kw: usize) -> Vec<f32> {
    let mut hwio = vec![0.0; oihw.len()];
    for oc in 0..o {
        for ic in 0..i {
            for y in 0..kh {
                for x in 0..kw {
                    hwio[((y * kw + x) * i + ic) * o + oc] =
                        oihw[((oc * i + ic) * kh + y) * kw + x];
                }
            }
        }
    }
    hwio
}
