//! ONNX models as `.net` files: a chain of `Conv`, `BatchNormalization`,
//! `Relu`/`LeakyRelu`, `MaxPool`/`AveragePool`, `GlobalAveragePool` (or
//! `ReduceMean` over H and W), `Dropout`, `Flatten`/`Reshape`,
//! `Gemm`/`MatMul` (+ `Add`), `Softmax` and `Identity` nodes, read through
//! the `prost` messages of [`crate::onnx::proto`].
//!
//! Also read: a leading `Sub` and `Div` by per-channel constants (mean-std
//! preprocessing, as `allcnnc export` and many conversion scripts write
//! it), the GCN + ZCA block of `allcnnc export` (its nodes are named
//! `preprocess.*`; the tensors by name), a constant zero (or `-inf`) `Pad`
//! before an average (max) pool, and the model's `class_names` metadata.
//!
//! Refused with the node's index, name and operator: branches (a node
//! taking a value other than the layer before it: residual adds,
//! concatenations), grouped or dilated convolutions, any operator the
//! language lacks, external tensor data.

use super::{Builder, ImportError, Imported, Origin, PoolKind, PoolSpec};
use crate::ir::Rounding;
use crate::onnx::proto::{AttributeProto, DataType, ModelProto, NodeProto, TensorProto};
use crate::passes::shapes::axis_out;
use plan::{Padding, Shape};
use prost::Message;
use runtime::data::preprocess::{Gcn, Method, Preprocess, Zca};
use std::collections::HashMap;

/// A constant tensor's values.
#[derive(Debug, Clone)]
enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    Other,
}

#[derive(Debug, Clone)]
struct Tensor {
    dims: Vec<usize>,
    values: Values,
}

/// The reader's state: the file, its constants and the value the next
/// layer must take.
struct Reader<'a> {
    file: &'a str,
    constants: HashMap<String, Tensor>,
    current: String,
    builder: Builder,
    preprocess: Option<Preprocess>,
    /// A constant `Pad` waiting for the pool after it: amounts, value.
    pending_pad: Option<(Padding, f32, Origin)>,
    /// The value is `N x C` (after a flatten or a fully connected layer),
    /// not `N x C x H x W`.
    flat: bool,
    /// The default domain's operator set.
    opset: Option<i64>,
}

/// Imports the ONNX model in `bytes` (read from `file`); `input` overrides
/// the image shape when the model's input has symbolic sizes.
pub fn import(file: &str, bytes: &[u8], input: Option<Shape>) -> Result<Imported, ImportError> {
    let malformed = |reason: String| ImportError::Malformed {
        file: file.to_string(),
        reason,
    };
    let model =
        ModelProto::decode(bytes).map_err(|err| malformed(format!("not an ONNX model: {err}")))?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| malformed("the model has no graph (ModelProto.graph)".into()))?;
    let metadata: HashMap<&str, &str> = model
        .metadata_props
        .iter()
        .filter_map(|p| Some((p.key.as_deref()?, p.value.as_deref()?)))
        .collect();
    let opset = model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .and_then(|o| o.version);

    let mut constants = HashMap::new();
    for (i, init) in graph.initializer.iter().enumerate() {
        let name = init.name.clone().unwrap_or_default();
        let tensor = tensor(init)
            .map_err(|why| malformed(format!("GraphProto.initializer[{i}] `{name}`: {why}")))?;
        constants.insert(name, tensor);
    }
    let data_inputs: Vec<_> = graph
        .input
        .iter()
        .filter(|v| !constants.contains_key(v.name.as_deref().unwrap_or_default()))
        .collect();
    let [value] = data_inputs.as_slice() else {
        return Err(malformed(format!(
            "the graph has {} inputs that are not initializers; an image classifier has one",
            data_inputs.len()
        )));
    };
    let input_name = value.name.clone().unwrap_or_default();
    let shape = match input {
        Some(shape) => shape,
        None => input_shape(value).ok_or_else(|| {
            malformed(format!(
                "input `{input_name}` is not N x C x H x W with known C, H and W: give them with --input CxHxW"
            ))
        })?,
    };
    let mut reader = Reader {
        file,
        constants,
        current: input_name,
        builder: Builder::new(file, shape)?,
        preprocess: None,
        pending_pad: None,
        flat: false,
        opset,
    };
    reader.walk(graph.node.as_slice(), &metadata)?;
    if let Some((_, _, origin)) = &reader.pending_pad {
        return Err(reader.unsupported(origin, "a `Pad` that no pool follows"));
    }
    let outputs: Vec<&str> = graph
        .output
        .iter()
        .filter_map(|v| v.name.as_deref())
        .collect();
    if outputs != [reader.current.as_str()] {
        return Err(malformed(format!(
            "the graph's outputs are {outputs:?}; the chain of layers ends in `{}`",
            reader.current
        )));
    }
    // Exporters' graph names are often generic (`main_graph`,
    // `torch_jit`): the file's name says more.
    let name = metadata
        .get("model")
        .map_or_else(|| super::stem(file), |s| s.to_string());
    let producer = match (&model.producer_name, &model.producer_version) {
        (Some(p), Some(v)) if !p.is_empty() => format!(", made by {p} {v}"),
        (Some(p), None) if !p.is_empty() => format!(", made by {p}"),
        _ => String::new(),
    };
    let opset = opset.map_or(String::new(), |v| format!(" opset {v}"));
    let source = format!("{file} (ONNX{opset}{producer})");
    let mut imported = reader
        .builder
        .finish(&name, &source, reader.preprocess, Vec::new())?;
    if let Some(names) = metadata
        .get("class_names")
        .and_then(|json| serde_json::from_str::<Vec<String>>(json).ok())
    {
        if names.len() == imported.graph.classes {
            imported.class_names = names;
        }
    }
    Ok(imported)
}

/// `C x H x W` of an `N x C x H x W` input with known sizes.
fn input_shape(value: &crate::onnx::proto::ValueInfoProto) -> Option<Shape> {
    use crate::onnx::proto::{tensor_shape_proto::dimension::Value, type_proto};
    let Some(type_proto::Value::TensorType(t)) = value.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    let dims = &t.shape.as_ref()?.dim;
    if dims.len() != 4 {
        return None;
    }
    let size = |i: usize| match dims[i].value {
        Some(Value::DimValue(v)) if v > 0 => usize::try_from(v).ok(),
        _ => None,
    };
    Some(Shape::new(size(1)?, size(2)?, size(3)?))
}

/// A tensor's values, checked against its dimensions.
fn tensor(proto: &TensorProto) -> Result<Tensor, String> {
    if proto.data_location == Some(1) || !proto.external_data.is_empty() {
        return Err("its data is stored outside the file (external data): save the model with its weights inside".into());
    }
    let mut dims = Vec::with_capacity(proto.dims.len());
    let mut len: usize = 1;
    for &d in &proto.dims {
        let d = usize::try_from(d).map_err(|_| format!("a negative dimension {d}"))?;
        len = len.checked_mul(d).ok_or("dimensions too large")?;
        dims.push(d);
    }
    let raw = proto.raw_data.as_deref();
    let from_raw = |size: usize| -> Result<Option<&[u8]>, String> {
        match raw {
            Some(bytes) if !bytes.is_empty() || len == 0 => {
                if bytes.len() / size != len || bytes.len() % size != 0 {
                    return Err(format!(
                        "{} bytes of data for {len} values of {size} bytes",
                        bytes.len()
                    ));
                }
                Ok(Some(bytes))
            }
            _ => Ok(None),
        }
    };
    let check = |n: usize| {
        if n == len {
            Ok(())
        } else {
            Err(format!(
                "{n} values for dimensions {dims:?}",
                dims = proto.dims
            ))
        }
    };
    let values = match proto.data_type.and_then(|t| DataType::try_from(t).ok()) {
        Some(DataType::Float) => match from_raw(4)? {
            Some(bytes) => Values::F32(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            None => {
                check(proto.float_data.len())?;
                Values::F32(proto.float_data.clone())
            }
        },
        Some(DataType::Double) => match from_raw(8)? {
            Some(bytes) => Values::F64(
                bytes
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
            ),
            None => {
                check(proto.double_data.len())?;
                Values::F64(proto.double_data.clone())
            }
        },
        Some(DataType::Bool) => match from_raw(1)? {
            Some(bytes) => Values::I64(bytes.iter().map(|&b| i64::from(b)).collect()),
            None => {
                check(proto.int32_data.len())?;
                Values::I64(proto.int32_data.iter().map(|&b| i64::from(b)).collect())
            }
        },
        Some(DataType::Int64) => match from_raw(8)? {
            Some(bytes) => Values::I64(
                bytes
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
            ),
            None => {
                check(proto.int64_data.len())?;
                Values::I64(proto.int64_data.clone())
            }
        },
        _ => Values::Other,
    };
    Ok(Tensor { dims, values })
}

fn attr<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
}

fn attr_int(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).and_then(|a| a.i).unwrap_or(default)
}

fn attr_float(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).and_then(|a| a.f).unwrap_or(default)
}

fn attr_ints<'n>(node: &'n NodeProto, name: &str) -> Option<&'n [i64]> {
    attr(node, name).map(|a| a.ints.as_slice())
}

fn attr_string(node: &NodeProto, name: &str) -> Option<String> {
    attr(node, name)
        .and_then(|a| a.s.as_ref())
        .map(|s| String::from_utf8_lossy(s).into_owned())
}

impl Reader<'_> {
    fn unsupported(&self, origin: &Origin, reason: impl Into<String>) -> ImportError {
        ImportError::Unsupported {
            file: self.file.to_string(),
            at: origin.at.clone(),
            op: origin.op.clone(),
            reason: reason.into(),
        }
    }

    /// A constant input of `node` as float32 values and its dimensions.
    fn floats(
        &self,
        node: &NodeProto,
        index: usize,
        origin: &Origin,
    ) -> Result<(Vec<f32>, Vec<usize>), ImportError> {
        let name = node
            .input
            .get(index)
            .map(String::as_str)
            .unwrap_or_default();
        let tensor = self.constants.get(name).ok_or_else(|| {
            self.unsupported(
                origin,
                format!("input {index} `{name}` is not a constant (an initializer)"),
            )
        })?;
        match &tensor.values {
            Values::F32(v) => Ok((v.clone(), tensor.dims.clone())),
            _ => Err(self.unsupported(origin, format!("input {index} `{name}` is not float32"))),
        }
    }

    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        match &self.constants.get(name)?.values {
            Values::I64(v) => Some(v.clone()),
            _ => None,
        }
    }

    /// The data inputs of `node` (those that are not constants) must be
    /// exactly the current value.
    fn takes_current(&self, node: &NodeProto, origin: &Origin) -> Result<(), ImportError> {
        let data: Vec<&String> = node
            .input
            .iter()
            .filter(|i| !i.is_empty() && !self.constants.contains_key(*i))
            .collect();
        if data.len() == 1 && *data[0] == self.current {
            return Ok(());
        }
        if data.is_empty() {
            return Err(self.unsupported(
                origin,
                "it computes from constants only: fold constants before importing (e.g. onnx-simplifier)",
            ));
        }
        let other = data
            .iter()
            .find(|i| ***i != self.current)
            .map_or(String::new(), |i| i.to_string());
        Err(self.unsupported(
            origin,
            format!(
                "it takes `{other}`, which is not the output of the layer before it (`{}`): only chains of layers import (no branches, residual adds or concatenations)",
                self.current
            ),
        ))
    }

    fn walk(
        &mut self,
        nodes: &[NodeProto],
        metadata: &HashMap<&str, &str>,
    ) -> Result<(), ImportError> {
        let mut i = 0;
        while i < nodes.len() {
            let node = &nodes[i];
            let name = node.name.clone().unwrap_or_default();
            let op = node.op_type.clone().unwrap_or_default();
            let origin = Origin::new(
                if name.is_empty() {
                    format!("node {i}")
                } else {
                    format!("node {i} `{name}`")
                },
                op.clone(),
            );
            if !matches!(node.domain.as_deref(), None | Some("") | Some("ai.onnx")) {
                return Err(self.unsupported(
                    &origin,
                    format!(
                        "an operator of domain `{}`",
                        node.domain.as_deref().unwrap_or_default()
                    ),
                ));
            }
            // The allcnnc exporter's GCN + ZCA block.
            if self.builder.is_empty()
                && self.preprocess.is_none()
                && name.starts_with("preprocess.")
                && metadata.get("preprocessing") == Some(&"gcn-zca")
            {
                let end = nodes[i..]
                    .iter()
                    .position(|n| {
                        !n.name
                            .as_deref()
                            .unwrap_or_default()
                            .starts_with("preprocess.")
                    })
                    .map_or(nodes.len(), |p| i + p);
                self.takes_current(node, &origin)?;
                self.current = nodes[end - 1].output.first().cloned().unwrap_or_default();
                self.preprocess = Some(self.gcn_zca(&origin)?);
                self.builder
                    .note("preprocessing: GCN + ZCA (the exporter's `preprocess.*` nodes), kept in the weights file");
                i = end;
                continue;
            }
            let output = node.output.first().cloned().unwrap_or_default();
            if op == "Constant" {
                let value = attr(node, "value").and_then(|a| a.t.as_ref());
                let tensor = match value {
                    Some(t) => tensor(t).map_err(|why| self.unsupported(&origin, why))?,
                    None => {
                        if let Some(f) = attr(node, "value_float").and_then(|a| a.f) {
                            Tensor {
                                dims: Vec::new(),
                                values: Values::F32(vec![f]),
                            }
                        } else if let Some(v) = attr(node, "value_int").and_then(|a| a.i) {
                            Tensor {
                                dims: Vec::new(),
                                values: Values::I64(vec![v]),
                            }
                        } else if let Some(v) = attr_ints(node, "value_ints") {
                            Tensor {
                                dims: vec![v.len()],
                                values: Values::I64(v.to_vec()),
                            }
                        } else {
                            return Err(self.unsupported(
                                &origin,
                                "a constant of a kind this importer does not read",
                            ));
                        }
                    }
                };
                self.constants.insert(output, tensor);
                i += 1;
                continue;
            }
            self.takes_current(node, &origin)?;
            // Usually one node; Sub then Div (mean-std) are read as a pair.
            let consumed = self.node(node, &op, &origin, nodes.get(i + 1))?;
            let last = &nodes[i + consumed - 1];
            self.current = if consumed == 1 {
                output
            } else {
                last.output.first().cloned().unwrap_or_default()
            };
            i += consumed;
        }
        Ok(())
    }

    /// The layer name a node gives: its weight's name without `.weight`,
    /// else the node's name without a trailing `/Op` path part.
    fn layer_name(node: &NodeProto, weight: Option<&str>) -> String {
        if let Some(w) = weight {
            for suffix in [".weight", "_weight", "/weight", ".W", "_W"] {
                if let Some(base) = w.strip_suffix(suffix) {
                    if !base.is_empty() {
                        return base.to_string();
                    }
                }
            }
        }
        let name = node.name.as_deref().unwrap_or_default();
        let op = node.op_type.as_deref().unwrap_or_default();
        let name = name.strip_suffix(&format!("/{op}")).unwrap_or(name);
        name.rsplit('/').next().unwrap_or(name).to_string()
    }

    /// Reads one node (two for mean-std); returns how many it read.
    fn node(
        &mut self,
        node: &NodeProto,
        op: &str,
        origin: &Origin,
        next: Option<&NodeProto>,
    ) -> Result<usize, ImportError> {
        let origin = origin.clone();
        if op == "Sub" && self.builder.is_empty() && self.preprocess.is_none() {
            self.mean_std(node, next, origin)?;
            return Ok(2);
        }
        self.layer(node, op, origin)?;
        Ok(1)
    }

    fn layer(&mut self, node: &NodeProto, op: &str, origin: Origin) -> Result<(), ImportError> {
        // A constant Pad is read with the pool or convolution right after
        // it; anything else between would see the unpadded values.
        if let Some((_, _, pad_origin)) = &self.pending_pad {
            if !matches!(op, "MaxPool" | "AveragePool" | "Conv" | "Pad") {
                return Err(self.unsupported(
                    pad_origin,
                    format!(
                        "a pad that no pool or convolution follows (next: {} {})",
                        origin.op, origin.at
                    ),
                ));
            }
        }
        match op {
            "Identity" => Ok(()),
            "Conv" => self.conv(node, origin),
            "BatchNormalization" => {
                if attr_int(node, "training_mode", 0) != 0 {
                    return Err(self.unsupported(&origin, "batch normalisation in training mode (export the model in eval mode)"));
                }
                let (scale, _) = self.floats(node, 1, &origin)?;
                let (shift, _) = self.floats(node, 2, &origin)?;
                let (mean, _) = self.floats(node, 3, &origin)?;
                let (var, _) = self.floats(node, 4, &origin)?;
                let eps = f64::from(attr_float(node, "epsilon", 1e-5));
                self.builder.batch_norm(&scale, &shift, &mean, &var, eps, origin)
            }
            "Relu" => self.builder.activation(0.0, origin),
            "LeakyRelu" => self.builder.activation(attr_float(node, "alpha", 0.01), origin),
            "MaxPool" | "AveragePool" => self.pool(node, op, origin),
            "Pad" => self.pad(node, origin),
            "GlobalAveragePool" => self.builder.global_avg_pool(&Self::layer_name(node, None), origin),
            "ReduceMean" => {
                let axes = match attr_ints(node, "axes") {
                    Some(a) => Some(a.to_vec()),
                    None => node.input.get(1).and_then(|n| self.ints(n)),
                };
                let keepdims = attr_int(node, "keepdims", 1);
                let mut axes = axes.unwrap_or_default();
                axes.sort_unstable();
                if (axes == [2, 3] || axes == [-2, -1]) && keepdims == 1 {
                    self.builder.global_avg_pool(&Self::layer_name(node, None), origin)
                } else {
                    Err(self.unsupported(&origin, format!("a mean over axes {axes:?} (keepdims {keepdims}); only the mean over H and W (a global average pool) imports")))
                }
            }
            "Dropout" => {
                let ratio = match node.input.get(1).filter(|n| !n.is_empty()) {
                    Some(name) => match self.constants.get(name).map(|t| &t.values) {
                        Some(Values::F64(v)) if v.len() == 1 => v[0],
                        _ => shortest(self.floats(node, 1, &origin)?.0.first().copied().unwrap_or(0.5)),
                    },
                    None => shortest(attr_float(node, "ratio", 0.5)),
                };
                if let Some(mode) = node.input.get(2).filter(|n| !n.is_empty()) {
                    if self.ints(mode).is_none_or(|v| v.iter().any(|&b| b != 0)) {
                        return Err(self.unsupported(&origin, "dropout in training mode (export the model in eval mode)"));
                    }
                }
                self.builder.dropout(&Self::layer_name(node, None), ratio, origin)
            }
            "Flatten" => {
                if attr_int(node, "axis", 1) != 1 {
                    return Err(self.unsupported(&origin, "a flatten at another axis than 1"));
                }
                self.builder.flatten();
                self.flat = true;
                Ok(())
            }
            "Reshape" => {
                let shape = node.input.get(1).and_then(|n| self.ints(n));
                let total = self.builder.shape().len() as i64;
                match shape.as_deref() {
                    Some([_, last]) if *last == -1 || *last == total => {
                        self.builder.flatten();
                        self.flat = true;
                        Ok(())
                    }
                    _ => Err(self.unsupported(&origin, format!("a reshape to {shape:?}; only a flatten to N x {total} imports"))),
                }
            }
            "Gemm" => self.gemm(node, origin),
            "MatMul" => {
                let (b, dims) = self.floats(node, 1, &origin)?;
                let [fan_in, out] = dims[..] else {
                    return Err(self.unsupported(&origin, format!("a {dims:?} matrix; a fully connected layer has an in x out matrix")));
                };
                let weight = transpose(&b, fan_in, out);
                let name = Self::layer_name(node, node.input.get(1).map(String::as_str));
                self.flat = true;
                self.builder.fully_connected(&name, weight, out, None, origin)
            }
            "Add" => {
                // The constant is the input that is not the current value.
                let index = usize::from(node.input.first() == Some(&self.current));
                let (offset, dims) = self.floats(node, index, &origin)?;
                let c = self.builder.shape().c;
                if offset.len() != c || !self.per_channel(&dims, c) {
                    return Err(self.unsupported(&origin, format!("an addition of {} values to {c} channels; only a bias per channel imports", offset.len())));
                }
                self.builder.channel_affine(&vec![1.0; c], Some(&offset), origin)
            }
            "Softmax" => {
                // Axis 1 by default before opset 13, the last axis after.
                let default = if self.opset.is_some_and(|v| v >= 13) { -1 } else { 1 };
                let axis = attr_int(node, "axis", default);
                if !(axis == 1 || (axis == -1 && self.flat)) {
                    return Err(self.unsupported(
                        &origin,
                        format!("a softmax over axis {axis} of a {}-D value: only the class axis imports", if self.flat { 2 } else { 4 }),
                    ));
                }
                self.builder.softmax(&Self::layer_name(node, None), origin)
            }
            _ => Err(self.unsupported(
                &origin,
                "the language has no such layer (it imports Conv, BatchNormalization, Relu, LeakyRelu, MaxPool, AveragePool, GlobalAveragePool, Dropout, Flatten, Gemm, MatMul, Add of a bias, Softmax)",
            )),
        }
    }

    fn conv(&mut self, node: &NodeProto, origin: Origin) -> Result<(), ImportError> {
        let (weight, dims) = self.floats(node, 1, &origin)?;
        let [o, i, kh, kw] = dims[..] else {
            return Err(self.unsupported(
                &origin,
                format!("a {dims:?} weight tensor; a 2-D convolution has O x I x KH x KW"),
            ));
        };
        if attr_int(node, "group", 1) != 1 {
            return Err(self.unsupported(&origin, "a grouped convolution: the language has none"));
        }
        if attr_ints(node, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) {
            return Err(self.unsupported(&origin, "a dilated convolution: the language has none"));
        }
        if let Some(k) = attr_ints(node, "kernel_shape") {
            if k != [kh as i64, kw as i64] {
                return Err(self.unsupported(
                    &origin,
                    format!("kernel_shape {k:?} but the weights are {kh}x{kw}"),
                ));
            }
        }
        let stride = self.pair(node, "strides", &origin)?;
        let mut pad = self.pads(node, (kh, kw), stride, &origin)?;
        if let Some((amounts, value, pad_origin)) = self.pending_pad.take() {
            // Zeros before a convolution are its own zero padding.
            if value != 0.0 {
                return Err(self.unsupported(
                    &pad_origin,
                    format!("a pad by {value} before a convolution (only zeros are its padding)"),
                ));
            }
            pad = Padding {
                top: pad.top + amounts.top,
                left: pad.left + amounts.left,
                bottom: pad.bottom + amounts.bottom,
                right: pad.right + amounts.right,
            };
        }
        let bias = match node.input.get(2).filter(|n| !n.is_empty()) {
            Some(_) => Some(self.floats(node, 2, &origin)?.0),
            None => None,
        };
        let name = Self::layer_name(node, node.input.get(1).map(String::as_str));
        self.builder
            .conv(&name, stride, pad, (weight, [o, i, kh, kw]), bias, origin)
    }

    /// Whether a constant of `dims` broadcasts over the value's channels:
    /// `[C]` on `N x C`, `[1, C, 1, 1]` or `[C, 1, 1]` on `N x C x H x W`.
    fn per_channel(&self, dims: &[usize], c: usize) -> bool {
        if self.flat {
            dims == [c] || dims == [1, c]
        } else {
            dims == [1, c, 1, 1] || dims == [c, 1, 1]
        }
    }

    fn pair(
        &self,
        node: &NodeProto,
        name: &str,
        origin: &Origin,
    ) -> Result<(usize, usize), ImportError> {
        match attr_ints(node, name) {
            None => Ok((1, 1)),
            Some([a, b]) if *a > 0 && *b > 0 => Ok((*a as usize, *b as usize)),
            Some(v) => Err(self.unsupported(
                origin,
                format!("`{name}` {v:?}: two positive values expected"),
            )),
        }
    }

    /// Explicit paddings from `pads` or `auto_pad`.
    fn pads(
        &self,
        node: &NodeProto,
        kernel: (usize, usize),
        stride: (usize, usize),
        origin: &Origin,
    ) -> Result<Padding, ImportError> {
        let auto = attr_string(node, "auto_pad").unwrap_or_else(|| "NOTSET".into());
        let input = self.builder.shape();
        let same = |size: usize, k: usize, s: usize, upper: bool| {
            let out = size.div_ceil(s);
            let total = ((out - 1) * s + k).saturating_sub(size);
            let small = total / 2;
            if upper {
                (small, total - small)
            } else {
                (total - small, small)
            }
        };
        match auto.as_str() {
            "NOTSET" => match attr_ints(node, "pads") {
                None => Ok(Padding::default()),
                Some([t, l, b, r]) if [t, l, b, r].iter().all(|&&v| (0..1 << 20).contains(&v)) => {
                    Ok(Padding {
                        top: *t as usize,
                        left: *l as usize,
                        bottom: *b as usize,
                        right: *r as usize,
                    })
                }
                Some(v) => Err(self.unsupported(
                    origin,
                    format!("`pads` {v:?}: four amounts (top, left, bottom, right) expected"),
                )),
            },
            "VALID" => Ok(Padding::default()),
            "SAME_UPPER" | "SAME_LOWER" => {
                let upper = auto == "SAME_UPPER";
                let (top, bottom) = same(input.h, kernel.0, stride.0, upper);
                let (left, right) = same(input.w, kernel.1, stride.1, upper);
                Ok(Padding {
                    top,
                    left,
                    bottom,
                    right,
                })
            }
            other => Err(self.unsupported(origin, format!("auto_pad `{other}`"))),
        }
    }

    fn pool(&mut self, node: &NodeProto, op: &str, origin: Origin) -> Result<(), ImportError> {
        let kernel = match attr_ints(node, "kernel_shape") {
            Some([a, b]) if *a > 0 && *b > 0 => (*a as usize, *b as usize),
            v => {
                return Err(self.unsupported(
                    &origin,
                    format!("`kernel_shape` {v:?}: two positive sizes expected"),
                ))
            }
        };
        if attr_ints(node, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) {
            return Err(self.unsupported(&origin, "a dilated pool: the language has none"));
        }
        if node.output.len() > 1 && node.output.get(1).is_some_and(|o| !o.is_empty()) {
            return Err(self.unsupported(&origin, "a max pool that also outputs indices"));
        }
        let stride = self.pair(node, "strides", &origin)?;
        let mut pad = self.pads(node, kernel, stride, &origin)?;
        let ceil = attr_int(node, "ceil_mode", 0) != 0;
        let kind = if op == "MaxPool" {
            PoolKind::Max
        } else {
            PoolKind::Avg
        };
        let mut round = if ceil { Rounding::Up } else { Rounding::Down };
        let zero = pad == Padding::default();
        if let Some((amounts, value, pad_origin)) = self.pending_pad.take() {
            let wanted = if kind == PoolKind::Max {
                f32::NEG_INFINITY
            } else {
                0.0
            };
            if value != wanted {
                return Err(self.unsupported(
                    &pad_origin,
                    format!("a pad by {value} before {}", origin.at),
                ));
            }
            if kind == PoolKind::Avg {
                // allcnnc's export: the counted padding as a Pad, the
                // clipped windows as uncounted trailing pads.
                if attr_int(node, "count_include_pad", 0) != 0
                    || pad.top != 0
                    || pad.left != 0
                    || ceil
                {
                    return Err(self.unsupported(&origin, "an average pool after a Pad with its own leading padding or counted padding"));
                }
                // The Pad's zeros count in the divisor (they are values);
                // the pool's own trailing padding clips windows at the
                // padded border: Caffe's round-up rule (allcnnc's export)
                // where the sizes agree, floor rounding without it.
                let input = self.builder.shape();
                let onnx = (
                    axis_out(
                        input.h,
                        kernel.0,
                        stride.0,
                        amounts.top,
                        amounts.bottom + pad.bottom,
                        Rounding::Down,
                    ),
                    axis_out(
                        input.w,
                        kernel.1,
                        stride.1,
                        amounts.left,
                        amounts.right + pad.right,
                        Rounding::Down,
                    ),
                );
                let with = |round| {
                    (
                        axis_out(
                            input.h,
                            kernel.0,
                            stride.0,
                            amounts.top,
                            amounts.bottom,
                            round,
                        ),
                        axis_out(
                            input.w,
                            kernel.1,
                            stride.1,
                            amounts.left,
                            amounts.right,
                            round,
                        ),
                    )
                };
                round = if pad == Padding::default() && with(Rounding::Down) == onnx {
                    Rounding::Down
                } else if with(Rounding::Up) == onnx {
                    Rounding::Up
                } else {
                    return Err(self.unsupported(&origin, "an average pool whose trailing padding clips windows otherwise than Caffe's round-up rule"));
                };
            } else if amounts.top >= kernel.0
                || amounts.left >= kernel.1
                || amounts.bottom >= kernel.0
                || amounts.right >= kernel.1
            {
                return Err(self.unsupported(&pad_origin, "a -inf pad not smaller than the max pool's window: a window wholly in it gives -inf in ONNX, 0 in the language"));
            }
            pad = Padding {
                top: amounts.top + pad.top,
                left: amounts.left + pad.left,
                bottom: amounts.bottom + if kind == PoolKind::Max { pad.bottom } else { 0 },
                right: amounts.right + if kind == PoolKind::Max { pad.right } else { 0 },
            };
        } else if kind == PoolKind::Avg
            && ((!zero && (attr_int(node, "count_include_pad", 0) == 0 || ceil))
                || (ceil
                    && attr_int(node, "count_include_pad", 0) != 0
                    && self.clips(kernel, stride, pad)))
        {
            return Err(self.unsupported(
                &origin,
                "an average pool with padding that it does not count (count_include_pad 0) or with ceil_mode: the language's average pool divides by the window inside the padded input",
            ));
        }
        let spec = PoolSpec {
            kind,
            kernel,
            stride,
            pad,
            round,
        };
        self.builder
            .pool(&Self::layer_name(node, None), spec, origin)
    }

    /// Whether ceil rounding makes a last window run past the padded input
    /// (runtimes disagree on its divisor when padding counts).
    fn clips(&self, kernel: (usize, usize), stride: (usize, usize), pad: Padding) -> bool {
        let input = self.builder.shape();
        let size = |round| {
            (
                axis_out(input.h, kernel.0, stride.0, pad.top, pad.bottom, round),
                axis_out(input.w, kernel.1, stride.1, pad.left, pad.right, round),
            )
        };
        size(Rounding::Up) != size(Rounding::Down)
    }

    fn pad(&mut self, node: &NodeProto, origin: Origin) -> Result<(), ImportError> {
        let mode = attr_string(node, "mode").unwrap_or_else(|| "constant".into());
        let amounts = node.input.get(1).and_then(|n| self.ints(n));
        let value = match node.input.get(2).filter(|n| !n.is_empty()) {
            Some(_) => self
                .floats(node, 2, &origin)?
                .0
                .first()
                .copied()
                .unwrap_or(0.0),
            None => 0.0,
        };
        if self.pending_pad.is_some() {
            return Err(self.unsupported(&origin, "a second pad in a row"));
        }
        if node.input.get(3).is_some_and(|n| !n.is_empty()) {
            return Err(self.unsupported(&origin, "a pad over chosen axes (its `axes` input)"));
        }
        match (mode.as_str(), amounts.as_deref()) {
            ("constant", Some([0, 0, t, l, 0, 0, b, r])) if [t, l, b, r].iter().all(|&&v| (0..1 << 20).contains(&v)) => {
                self.pending_pad = Some((
                    Padding { top: *t as usize, left: *l as usize, bottom: *b as usize, right: *r as usize },
                    value,
                    origin,
                ));
                Ok(())
            }
            _ => Err(self.unsupported(&origin, format!("a `{mode}` pad by {amounts:?}; only a constant pad of H and W before a pool imports"))),
        }
    }

    fn gemm(&mut self, node: &NodeProto, origin: Origin) -> Result<(), ImportError> {
        if attr_int(node, "transA", 0) != 0 {
            return Err(self.unsupported(&origin, "transA = 1"));
        }
        let alpha = attr_float(node, "alpha", 1.0);
        let beta = attr_float(node, "beta", 1.0);
        let (b, dims) = self.floats(node, 1, &origin)?;
        let [rows, cols] = dims[..] else {
            return Err(self.unsupported(&origin, format!("a {dims:?} matrix B")));
        };
        let (weight, out) = if attr_int(node, "transB", 0) != 0 {
            (b, rows)
        } else {
            (transpose(&b, rows, cols), cols)
        };
        let weight = weight.into_iter().map(|w| w * alpha).collect();
        let bias = match node.input.get(2).filter(|n| !n.is_empty()) {
            Some(_) => {
                let (c, _) = self.floats(node, 2, &origin)?;
                let c = if c.len() == 1 { vec![c[0]; out] } else { c };
                Some(c.into_iter().map(|v| v * beta).collect())
            }
            None => None,
        };
        let name = Self::layer_name(node, node.input.get(1).map(String::as_str));
        self.flat = true;
        self.builder
            .fully_connected(&name, weight, out, bias, origin)
    }

    /// `Sub(x, mean)` then `Div(_, std)` by per-channel constants before
    /// any layer: mean-std preprocessing.
    fn mean_std(
        &mut self,
        node: &NodeProto,
        next: Option<&NodeProto>,
        origin: Origin,
    ) -> Result<(), ImportError> {
        let c = self.builder.shape().c;
        let (mean, mean_dims) = self.floats(node, 1, &origin)?;
        if !self.per_channel(&mean_dims, c) {
            return Err(self.unsupported(&origin, format!("a subtraction of a {mean_dims:?} constant: only a per-channel mean ([1, C, 1, 1]) imports")));
        }
        let div = next.filter(|n| {
            n.op_type.as_deref() == Some("Div") && n.input.first() == node.output.first()
        });
        let Some(div) = div else {
            return Err(self.unsupported(
                &origin,
                "a subtraction that no division follows (only mean-std preprocessing imports)",
            ));
        };
        let div_origin = Origin::new(
            format!("node `{}`", div.name.as_deref().unwrap_or_default()),
            "Div",
        );
        let (std, std_dims) = self.floats(div, 1, &div_origin)?;
        if !self.per_channel(&std_dims, c) {
            return Err(self.unsupported(&div_origin, format!("a division by a {std_dims:?} constant: only a per-channel deviation ([1, C, 1, 1]) imports")));
        }
        if mean.len() != c || std.len() != c {
            return Err(self.unsupported(
                &origin,
                format!(
                    "mean-std preprocessing with {} and {} values for {c} channels",
                    mean.len(),
                    std.len()
                ),
            ));
        }
        if std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(self.unsupported(&div_origin, "a division by a value that is not positive"));
        }
        self.preprocess = Some(Preprocess {
            shape: self.builder.shape(),
            method: Method::MeanStd { mean, std },
        });
        self.builder.note("preprocessing: mean-std per channel (the leading Sub and Div), kept in the weights file");
        Ok(())
    }

    /// The exporter's GCN + ZCA tensors by name.
    fn gcn_zca(&self, origin: &Origin) -> Result<Preprocess, ImportError> {
        let scalar = |name: &str| match self.constants.get(name).map(|t| &t.values) {
            Some(Values::F64(v)) if v.len() == 1 => Ok(v[0] as f32),
            _ => Err(self.unsupported(origin, format!("no float64 scalar `{name}`"))),
        };
        let floats = |name: &str, len: usize| match self.constants.get(name).map(|t| &t.values) {
            Some(Values::F32(v)) if v.len() == len => Ok(v.clone()),
            _ => Err(self.unsupported(
                origin,
                format!("no float32 tensor `{name}` of {len} values"),
            )),
        };
        let shape = self.builder.shape();
        let dim = shape.len();
        let gcn = Gcn {
            scale: scalar("preprocess.gcn.scale")?,
            sqrt_bias: scalar("preprocess.gcn.sqrt_bias")?,
            min_divisor: scalar("preprocess.gcn.min_divisor")?,
        };
        let zca = Zca {
            bias: 0.0,
            fit_images: 0,
            mean: floats("preprocess.zca_mean", dim)?,
            matrix: floats("preprocess.zca_matrix", dim.saturating_mul(dim))?,
        };
        Ok(Preprocess {
            shape,
            method: Method::GcnZca { gcn, zca },
        })
    }
}

/// A `rows x cols` matrix transposed.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}

/// The float64 a float32 was written as: its shortest decimal (0.2, not
/// 0.20000000298).
pub(crate) fn shortest(value: f32) -> f64 {
    value.to_string().parse().unwrap_or(f64::NAN)
}
