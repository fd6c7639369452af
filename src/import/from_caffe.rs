//! Caffe networks as `.net` files: the layers of a [`CaffeNet`] (read by
//! [`super::caffe`] from a `.prototxt` and, for the weights, a
//! `.caffemodel`) fed to the [`Builder`] in order.
//!
//! Caffe's rules kept exactly: pooled sizes round up (`round_mode: FLOOR`
//! rounds down) with the language's Caffe rule, average pools divide as
//! Caffe does, convolutions and inner products take Caffe's `O x I x KH x
//! KW` and `out x in` blobs (a transposed inner product is transposed
//! back), `BatchNorm`'s statistics are divided by its scale factor blob and
//! folded with the `Scale` after it. The network is read as in Caffe's TEST
//! phase: layers included only in TRAIN are left out, data layers give the
//! input, `Accuracy` layers are dropped and `SoftmaxWithLoss` is read as
//! the softmax it is built on (each noted in the header).
//!
//! Layers are chained by their blobs: each layer must take the top of the
//! layer before it (in-place layers, whose top is their bottom, included).
//! Anything else, and any layer type the language lacks (`LRN`, `Concat`,
//! `Eltwise`, ...), is an error that points at the layer in the file;
//! `--drop TYPE` leaves out the layers of a type on request, saying in the
//! header that the imported network then computes another function.

use super::caffe::{self, CaffeLayer, CaffeNet, Phase, PoolMethod, RoundMode};
use super::onnx::shortest;
use super::{Builder, ImportError, Imported, Origin, PoolKind, PoolSpec};
use crate::diagnostic::{Diagnostic, Source};
use crate::ir::Rounding;
use plan::{Padding, Shape};

/// Why a Caffe network could not be imported.
#[derive(Debug)]
pub enum CaffeError {
    /// Problems in the text, to render against it.
    Diagnostics(Box<Source>, Vec<Diagnostic>),
    Import(ImportError),
}

impl From<ImportError> for CaffeError {
    fn from(err: ImportError) -> Self {
        CaffeError::Import(err)
    }
}

/// The start of the reason for a layer type the language lacks.
const NO_SUCH_LAYER: &str = "the language has no such layer";

/// Layer types that only feed data or measure training.
const DATA_LAYERS: &[&str] = &[
    "Data",
    "ImageData",
    "HDF5Data",
    "MemoryData",
    "WindowData",
    "DummyData",
    "Input",
    "Python",
];

/// Imports the network of `source` (a prototxt) with the weights of
/// `weights` (a caffemodel's bytes) when given. `input` overrides or
/// supplies the image shape; `drop` names layer types to leave out.
pub fn import(
    source: &Source,
    weights: Option<(&str, &[u8])>,
    input: Option<Shape>,
    drop: &[String],
) -> Result<Imported, CaffeError> {
    let mut net = caffe::parse_prototxt(source)
        .map_err(|d| CaffeError::Diagnostics(Box::new(source.clone()), d))?;
    let mut header = Vec::new();
    if let Some((name, bytes)) = weights {
        let model = caffe::decode_caffemodel(bytes).map_err(|err| ImportError::Malformed {
            file: name.to_string(),
            reason: err.to_string(),
        })?;
        let report =
            caffe::attach_weights(&mut net, model).map_err(|err| ImportError::Malformed {
                file: name.to_string(),
                reason: err.to_string(),
            })?;
        header.push(format!("weights from {name}"));
        if !report.unused.is_empty() {
            header.push(format!(
                "layers of {name} with no layer of their name in the prototxt, not used: {}",
                report.unused.join(", ")
            ));
        }
    }
    let file = source.name.clone();
    let weights_given = weights.is_some();
    convert(&file, &net, input, drop, header, weights_given).map_err(|err| match err {
        Located::At(span, err) => to_diagnostic(source, span, *err),
        Located::Anywhere(err) => CaffeError::Import(*err),
    })
}

/// Imports a `.caffemodel` alone (its layers and blobs; the input from
/// `input` or the file).
pub fn import_binary(
    file: &str,
    bytes: &[u8],
    input: Option<Shape>,
    drop: &[String],
) -> Result<Imported, ImportError> {
    let net = caffe::decode_caffemodel(bytes).map_err(|err| ImportError::Malformed {
        file: file.to_string(),
        reason: err.to_string(),
    })?;
    convert(file, &net, input, drop, Vec::new(), true).map_err(|err| match err {
        Located::At(_, err) | Located::Anywhere(err) => *err,
    })
}

/// An error and, when the layer came from text, where it is.
enum Located {
    At(std::ops::Range<usize>, Box<ImportError>),
    Anywhere(Box<ImportError>),
}

fn to_diagnostic(source: &Source, span: std::ops::Range<usize>, err: ImportError) -> CaffeError {
    // The layer's first line (`layer {`, or its name) rather than the block.
    let first_line_end = source.text[span.clone()]
        .find('\n')
        .map_or(span.end, |i| span.start + i);
    let span = span.start..first_line_end;
    let diagnostic = match &err {
        ImportError::Unsupported { at, op, reason, .. } => {
            Diagnostic::error("E0809", format!("cannot import {at} ({op})"))
                .at(span, reason.clone())
        }
        other => Diagnostic::error("E0809", "cannot import this layer").at(span, other.to_string()),
    };
    let unknown_type = matches!(&err, ImportError::Unsupported { reason, .. } if reason.starts_with(NO_SUCH_LAYER));
    let diagnostic = if unknown_type {
        diagnostic.hint("the language cannot express this layer; `--drop TYPE` leaves every layer of a type out, and the imported network then computes another function")
    } else {
        diagnostic
    };
    CaffeError::Diagnostics(Box::new(source.clone()), vec![diagnostic])
}

fn convert(
    file: &str,
    net: &CaffeNet,
    input: Option<Shape>,
    drop: &[String],
    mut header: Vec<String>,
    weights_given: bool,
) -> Result<Imported, Located> {
    let anywhere = |err: ImportError| Located::Anywhere(Box::new(err));
    let shape = match input {
        Some(shape) => shape,
        None => net_input(net).ok_or_else(|| {
            anywhere(ImportError::Malformed {
                file: file.to_string(),
                reason: "the input size is not in the file (a data layer reads it from a database): give --input CxHxW".into(),
            })
        })?,
    };
    let mut builder = Builder::new(file, shape).map_err(anywhere)?;
    for note in header.drain(..) {
        builder.note(note);
    }
    let mut current: Option<String> = net.input.as_ref().map(|i| i.name.clone());
    for (index, layer) in net.layers.iter().enumerate() {
        let origin = Origin::new(
            match &layer.span {
                Some(_) => format!("layer `{}`", layer.name),
                None => format!("layer `{}` (NetParameter.layer[{index}])", layer.name),
            },
            layer.kind.clone(),
        );
        let locate = |err: ImportError| match &layer.span {
            Some(span) => Located::At(span.clone(), Box::new(err)),
            None => Located::Anywhere(Box::new(err)),
        };
        let unsupported = |reason: String| ImportError::Unsupported {
            file: file.to_string(),
            at: origin.at.clone(),
            op: origin.op.clone(),
            reason,
        };
        if layer.phase == Some(Phase::Train) {
            continue;
        }
        let kind = layer.kind.as_str();
        // A Python layer is data only where it takes nothing.
        if DATA_LAYERS.contains(&kind) && (kind != "Python" || layer.bottoms.is_empty()) {
            if current.is_none() {
                current = layer.tops.first().cloned();
            }
            continue;
        }
        if kind == "Accuracy" {
            builder.note(format!(
                "accuracy layer `{}` left out (it measures training)",
                layer.name
            ));
            continue;
        }
        if drop.iter().any(|d| d.eq_ignore_ascii_case(kind)) {
            builder.note(format!(
                "{kind} layer `{}` DROPPED at the user's request (--drop {kind}): the imported network computes another function than the source",
                layer.name
            ));
            if let (Some(top), Some(bottom)) = (layer.tops.first(), layer.bottoms.first()) {
                if Some(bottom) == current.as_ref() {
                    current = Some(top.clone());
                }
            }
            continue;
        }
        // The chain: the layer takes the top of the layer before it (a
        // loss also takes the labels).
        let data_bottoms: Vec<&String> = if kind == "SoftmaxWithLoss" {
            layer.bottoms.iter().take(1).collect()
        } else {
            layer.bottoms.iter().collect()
        };
        if current.is_some()
            && data_bottoms.len() == 1
            && data_bottoms[0] != current.as_ref().unwrap_or(&String::new())
        {
            return Err(locate(unsupported(format!(
                "it takes `{}`, which is not the top of the layer before it (`{}`): only chains of layers import (no branches)",
                data_bottoms[0],
                current.as_deref().unwrap_or_default()
            ))));
        }
        if data_bottoms.len() != 1 {
            return Err(locate(unsupported(format!(
                "it takes {} blobs ({}); only layers of one input import",
                data_bottoms.len(),
                layer.bottoms.join(", ")
            ))));
        }
        if weights_given
            && layer.blobs.is_empty()
            && matches!(kind, "Convolution" | "InnerProduct" | "BatchNorm" | "Scale")
        {
            return Err(locate(unsupported(
                "the weights file has no blobs for it (no layer of its name): its weights would be made up".into(),
            )));
        }
        layer_into(&mut builder, layer, &origin, file).map_err(locate)?;
        current = layer.tops.first().cloned();
    }
    let name = if net.name.is_empty() {
        super::stem(file)
    } else {
        net.name.clone()
    };
    builder
        .finish(&name, &format!("{file} (Caffe)"), None, Vec::new())
        .map_err(anywhere)
}

/// `C x H x W` from the net's input declaration (`N x C x H x W`, or `C x
/// H x W`).
fn net_input(net: &CaffeNet) -> Option<Shape> {
    match net.input.as_ref()?.dims[..] {
        [_, c, h, w] | [c, h, w] => Some(Shape::new(c, h, w)),
        _ => None,
    }
}

/// Blob `i` of `layer` when it has `len` values, else an error; an absent
/// blob (no weights given) is an empty vector.
fn blob(
    layer: &CaffeLayer,
    i: usize,
    len: usize,
    what: &str,
    origin: &Origin,
    file: &str,
) -> Result<Vec<f32>, ImportError> {
    if layer.blobs.is_empty() {
        return Ok(Vec::new());
    }
    match layer.blobs.get(i) {
        Some(b) if b.data.len() == len => Ok(b.data.clone()),
        Some(b) => Err(ImportError::Unsupported {
            file: file.to_string(),
            at: origin.at.clone(),
            op: origin.op.clone(),
            reason: format!(
                "its {what} blob has {} values ({:?}) but {len} are needed",
                b.data.len(),
                b.shape
            ),
        }),
        None => Err(ImportError::Unsupported {
            file: file.to_string(),
            at: origin.at.clone(),
            op: origin.op.clone(),
            reason: format!("it has no {what} blob (blob {i})"),
        }),
    }
}

fn layer_into(
    builder: &mut Builder,
    layer: &CaffeLayer,
    origin: &Origin,
    file: &str,
) -> Result<(), ImportError> {
    let origin = origin.clone();
    let unsupported = |reason: &str| ImportError::Unsupported {
        file: file.to_string(),
        at: origin.at.clone(),
        op: origin.op.clone(),
        reason: reason.to_string(),
    };
    let c = builder.shape().c;
    match layer.kind.as_str() {
        "Convolution" => {
            let p = layer.conv.as_ref().ok_or_else(|| unsupported("no convolution_param"))?;
            if p.group != 1 {
                return Err(unsupported("a grouped convolution: the language has none"));
            }
            if p.dilation != (1, 1) {
                return Err(unsupported("a dilated convolution: the language has none"));
            }
            let (kh, kw) = p.kernel;
            let o = p.num_output;
            let len = [c, kh, kw]
                .iter()
                .try_fold(o, |n, &d| n.checked_mul(d))
                .ok_or_else(|| unsupported("a kernel too large"))?;
            let weight = blob(layer, 0, len, "weight", &origin, file)?;
            let bias = if p.bias_term {
                Some(blob(layer, 1, o, "bias", &origin, file)?)
            } else {
                None
            };
            let pad = Padding {
                top: p.pad.0,
                bottom: p.pad.0,
                left: p.pad.1,
                right: p.pad.1,
            };
            builder.conv(&layer.name, p.stride, pad, (weight, [o, c, kh, kw]), bias, origin)
        }
        "InnerProduct" => {
            let p = layer
                .inner_product
                .as_ref()
                .ok_or_else(|| unsupported("no inner_product_param"))?;
            if p.axis != 1 {
                return Err(unsupported("an inner product over another axis than 1"));
            }
            let fan_in = builder.shape().len();
            let o = p.num_output;
            let len = o
                .checked_mul(fan_in)
                .ok_or_else(|| unsupported("an inner product too large"))?;
            let mut weight = blob(layer, 0, len, "weight", &origin, file)?;
            if p.transpose && !weight.is_empty() {
                // Stored `in x out`.
                let mut t = vec![0.0; weight.len()];
                for i in 0..fan_in {
                    for j in 0..o {
                        t[j * fan_in + i] = weight[i * o + j];
                    }
                }
                weight = t;
            }
            let bias = if p.bias_term {
                Some(blob(layer, 1, o, "bias", &origin, file)?)
            } else {
                None
            };
            builder.flatten();
            builder.fully_connected(&layer.name, weight, o, bias, origin)
        }
        "Pooling" => {
            let p = layer.pool.as_ref().ok_or_else(|| unsupported("no pooling_param"))?;
            let kind = match p.method {
                PoolMethod::Max => PoolKind::Max,
                PoolMethod::Ave => PoolKind::Avg,
                PoolMethod::Stochastic => return Err(unsupported("stochastic pooling: the language has none")),
            };
            if p.global_pooling {
                return match kind {
                    PoolKind::Avg => builder.global_avg_pool(&layer.name, origin),
                    PoolKind::Max => Err(unsupported("global max pooling: the language has only global average pooling")),
                };
            }
            let kernel = p.kernel.ok_or_else(|| unsupported("no kernel size"))?;
            if p.round_mode == RoundMode::Ceil && !caffe_sizes_agree(builder.shape(), kernel, p.stride, p.pad) {
                return Err(unsupported(
                    "a pooled size that Caffe computes otherwise than the language (a stride larger than the window without padding)",
                ));
            }
            let spec = PoolSpec {
                kind,
                kernel,
                stride: p.stride,
                pad: Padding {
                    top: p.pad.0,
                    bottom: p.pad.0,
                    left: p.pad.1,
                    right: p.pad.1,
                },
                round: match p.round_mode {
                    RoundMode::Ceil => Rounding::Up,
                    RoundMode::Floor => Rounding::Down,
                },
            };
            builder.pool(&layer.name, spec, origin)
        }
        "ReLU" => builder.activation(layer.relu.unwrap_or(0.0), origin),
        "Dropout" => builder.dropout(&layer.name, shortest(layer.dropout.unwrap_or(0.5)), origin),
        "Softmax" => builder.softmax(&layer.name, origin),
        "SoftmaxWithLoss" => {
            builder.note(format!(
                "the training loss `{}` (SoftmaxWithLoss) read as the softmax it is built on",
                layer.name
            ));
            builder.softmax(&layer.name, origin)
        }
        "BatchNorm" => {
            if layer.batch_norm.as_ref().and_then(|b| b.use_global_stats) == Some(false) {
                return Err(unsupported(
                    "`use_global_stats: false`: Caffe normalises with each batch's statistics then, even in testing; only stored statistics fold",
                ));
            }
            let eps = f64::from(layer.batch_norm.as_ref().map_or(1e-5, |b| b.eps));
            let (mean, var) = if layer.blobs.is_empty() {
                (vec![0.0; c], vec![1.0; c])
            } else {
                let mut mean = blob(layer, 0, c, "mean", &origin, file)?;
                let mut var = blob(layer, 1, c, "variance", &origin, file)?;
                // Caffe keeps running sums and their weight in blob 2.
                let factor = blob(layer, 2, 1, "scale factor", &origin, file)?[0];
                let factor = if factor == 0.0 { 0.0 } else { 1.0 / factor };
                mean.iter_mut().chain(var.iter_mut()).for_each(|v| *v *= factor);
                (mean, var)
            };
            builder.batch_norm(&vec![1.0; c], &vec![0.0; c], &mean, &var, eps, origin)
        }
        "Scale" => {
            let (axis, num_axes, bias_term) = layer
                .scale
                .as_ref()
                .map_or((1, 1, false), |p| (p.axis, p.num_axes, p.bias_term));
            if axis != 1 || num_axes != 1 {
                return Err(unsupported("a scale over other axes than the channels"));
            }
            if layer.bottoms.len() != 1 {
                return Err(unsupported("a scale by a second input"));
            }
            let (factor, offset) = if layer.blobs.is_empty() {
                (vec![1.0; c], None)
            } else {
                let factor = blob(layer, 0, c, "scale", &origin, file)?;
                let offset = if bias_term {
                    Some(blob(layer, 1, c, "bias", &origin, file)?)
                } else {
                    None
                };
                (factor, offset)
            };
            builder.channel_affine(&factor, offset.as_deref(), origin)
        }
        "Flatten" => {
            builder.flatten();
            Ok(())
        }
        _ => Err(unsupported(&format!(
            "{NO_SUCH_LAYER} (it imports Convolution, Pooling, InnerProduct, ReLU, Dropout, BatchNorm + Scale, Flatten, Softmax)"
        ))),
    }
}

/// Whether Caffe's pooled size (round up; one less only where the last
/// window would start in the padding, and only with padding) is the
/// language's round-up size.
fn caffe_sizes_agree(
    input: Shape,
    kernel: (usize, usize),
    stride: (usize, usize),
    pad: (usize, usize),
) -> bool {
    let caffe = |size: usize, k: usize, s: usize, p: usize| {
        let padded = (size + 2 * p).checked_sub(k)?;
        let mut out = padded.div_ceil(s) + 1;
        if p > 0 && (out - 1) * s >= size + p {
            out -= 1;
        }
        Some(out)
    };
    let ours = |size, k, s, p| crate::passes::shapes::axis_out(size, k, s, p, p, Rounding::Up);
    caffe(input.h, kernel.0, stride.0, pad.0) == ours(input.h, kernel.0, stride.0, pad.0)
        && caffe(input.w, kernel.1, stride.1, pad.1) == ours(input.w, kernel.1, stride.1, pad.1)
}
