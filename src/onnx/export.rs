//! A plan and its checkpoint as one ONNX model that computes what
//! `allcnnc predict` computes: the checkpoint's preprocessing, every layer,
//! the class probabilities.
//!
//! The model (opset [`OPSET`], IR version [`IR_VERSION`]):
//! - input `input`: `N x C x H x W` float32, pixels in `0..=1` (a byte
//!   divided by 255, as allcnnc reads images), `N` a symbolic batch size;
//! - output `probabilities`: `N x classes`, the softmax;
//! - metadata: `model`, `model_hash`, `class_names` (a JSON list),
//!   `preprocessing` (`none`, `mean-std`, `gcn-zca`), `input` (the layout
//!   in words), `producer`.
//!
//! Names come from the plan: layer `conv1` is node `conv1` with initializers
//! `conv1.weight` (OIHW, transposed from the checkpoint's HWIO) and
//! `conv1.bias`, its activation node `conv1.relu` or `conv1.leaky_relu`;
//! preprocessing nodes and tensors are `preprocess.*`.
//!
//! How each part stays exact:
//! - mean-std: `(x - mean[c]) / std[c]` in float32, the runtime's two
//!   operations;
//! - GCN + ZCA: the runtime works on `H x W x C` images, so the input is
//!   transposed to `N x H x W x C` and flattened to `N x D` before it and
//!   back after it, and the ZCA matrix meets the features in the order it
//!   was fitted in. GCN runs in float64 as in the runtime (`Cast`, the same
//!   mean, sum of squares, divisor and floor), ZCA in float32;
//! - convolution: explicit `pads` `[top, left, bottom, right]` from the plan
//!   (`same` with an even kernel is asymmetric, and so is the ONNX node);
//!   ONNX's floor rounding is the language's for convolutions;
//! - pooling: the runtime's output size comes from Caffe's round-up rule,
//!   so a last window may run past the padded input and is clipped. No
//!   `ceil_mode` is used (runtimes disagree on its clipped windows): the
//!   trailing padding is set so that ONNX's floor rounding gives the plan's
//!   size. Max pooling ignores padding in both; a window with no input
//!   element (possible only when a padding is at least the kernel) outputs
//!   0 in the runtime, so such layers pad with `-inf` explicitly and a
//!   constant mask sets those windows to 0. Average pooling divides by the
//!   number of window elements inside the *padded* input: the plan's
//!   padding becomes zeros (in the pool's `pads` with `count_include_pad =
//!   1`, or an explicit `Pad` when a window is clipped or a padding is not
//!   smaller than the kernel) and the clipped part is excluded from the
//!   count (`count_include_pad = 0` over only that part);
//! - dropout is a `Dropout` node with its rate as written (`NAME.ratio`,
//!   float64) and no
//!   training mode: the identity at inference, as in the runtime; the node
//!   keeps the layer, so that `allcnnc import` gives the model back whole.
//!
//! Invariant: nothing is approximated. A model the exporter cannot write
//! exactly is an [`ExportError`] naming what; today the only one is size:
//! a protobuf message is at most 2 GiB, so tensors larger than that in all
//! (a ZCA matrix over more than 23,170 input values) are refused.

use super::proto::{
    tensor_shape_proto::{dimension, Dimension},
    type_proto, AttributeProto, AttributeType, DataType, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};
use crate::back::names::UniqueNames;
use crate::driver::Model;
use plan::{Activation, Layer, Op, Plan, Shape, Window};
use runtime::data::preprocess::{Gcn, Method, Preprocess, Zca};
use runtime::train::checkpoint::Checkpoint;

/// The ONNX operator set the models import.
pub const OPSET: i64 = 18;
/// The IR version of opset 18 (ONNX 1.13).
pub const IR_VERSION: i64 = 8;
/// The graph's input.
pub const INPUT: &str = "input";
/// The graph's output: the class probabilities.
pub const OUTPUT: &str = "probabilities";
/// The symbolic batch dimension.
pub const BATCH: &str = "N";
/// The most bytes of tensor data one model may hold: protobuf's 2 GiB limit
/// on a message, less 64 MiB for everything else.
pub const MAX_TENSOR_BYTES: u64 = (2 << 30) - (64 << 20);

/// Why a model could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the checkpoint holds {found} parameter tensors but model `{model}` has {expected}")]
    ParamCount {
        model: String,
        found: usize,
        expected: usize,
    },
    #[error("checkpoint tensor `{name}` has {found} values but model `{model}` needs {expected}")]
    ParamSize {
        model: String,
        name: String,
        found: usize,
        expected: usize,
    },
    #[error(
        "model `{model}` cannot be one ONNX file: its tensors take {bytes} bytes, over the {limit} one file may hold (a protobuf message is at most 2 GiB, and the graph needs the rest); the largest is `{largest}`, {largest_bytes} bytes. ONNX's external data files are not written"
    )]
    TooLarge {
        model: String,
        bytes: u64,
        limit: u64,
        largest: String,
        largest_bytes: u64,
    },
}

/// The ONNX model of `plan` with the weights, preprocessing and class names
/// of `checkpoint`.
pub fn export(model: &Model, checkpoint: &Checkpoint) -> Result<ModelProto, ExportError> {
    export_within(model, checkpoint, MAX_TENSOR_BYTES)
}

/// [`export`] with another bound on the tensor bytes (tests use a small one).
pub fn export_within(
    model: &Model,
    checkpoint: &Checkpoint,
    max_tensor_bytes: u64,
) -> Result<ModelProto, ExportError> {
    let plan = &model.plan;
    // The dropout rates as written (float64; the plan holds float32).
    let mut rates =
        model
            .graph
            .layers()
            .into_iter()
            .filter_map(|id| match model.graph.node(id).op {
                crate::ir::Op::Dropout { p } => Some(p),
                _ => None,
            });
    check_params(plan, checkpoint)?;
    check_size(plan, checkpoint, max_tensor_bytes)?;
    let mut graph = Builder::default();
    let mut value = INPUT.to_string();
    if let Some(preprocess) = &checkpoint.preprocess {
        value = graph.preprocess(preprocess, &value);
    }
    let specs = plan.params();
    let mut params = specs.iter().zip(&checkpoint.params);
    for layer in &plan.layers {
        value = match &layer.op {
            Op::Conv {
                out_channels,
                window,
                bias,
                act,
            } => {
                let (spec, weight) = params.next().expect("checked: a weight per conv");
                let bias = bias.then(|| params.next().expect("checked: a bias").1);
                debug_assert_eq!(spec.name, format!("{}.weight", layer.name));
                graph.conv(layer, *out_channels, window, weight, bias, *act, &value)
            }
            Op::MaxPool { window } => graph.max_pool(layer, window, &value),
            Op::AvgPool { window } => graph.avg_pool(layer, window, &value),
            Op::GlobalAvgPool => graph.node(
                "GlobalAveragePool",
                &layer.name,
                &[&value],
                Vec::new(),
                layer,
            ),
            Op::Dropout { p } => {
                let p = rates.next().unwrap_or(f64::from(*p));
                let ratio = graph.tensor(&format!("{}.ratio", layer.name), &[], Data::F64(&[p]));
                graph.node("Dropout", &layer.name, &[&value, &ratio], Vec::new(), layer)
            }
            Op::Softmax => {
                let flat = graph.node(
                    "Flatten",
                    &format!("{}.flatten", layer.name),
                    &[&value],
                    vec![int("axis", 1)],
                    layer,
                );
                graph.node_to(
                    "Softmax",
                    &layer.name,
                    &[&flat],
                    OUTPUT,
                    vec![int("axis", 1)],
                    layer,
                )
            }
        };
    }
    let input = plan.input;
    let mut graph = graph.graph;
    graph.name = Some(plan.name.clone());
    graph.doc_string = Some(format!(
        "{} (allcnnc): class probabilities of N x {} x {} x {} float32 images with pixels in 0..1",
        plan.name, input.c, input.h, input.w,
    ));
    graph.input = vec![tensor_value(
        INPUT,
        &[
            Dim::Symbol(BATCH),
            Dim::Size(input.c),
            Dim::Size(input.h),
            Dim::Size(input.w),
        ],
    )];
    graph.output = vec![tensor_value(
        OUTPUT,
        &[Dim::Symbol(BATCH), Dim::Size(plan.classes)],
    )];
    let mut metadata = model_metadata(plan, checkpoint);
    metadata.extend([
        (
            "input",
            format!(
                "N x {} x {} x {} (NCHW) float32, pixel bytes / 255; the preprocessing is in the graph",
                input.c, input.h, input.w
            ),
        ),
        (
            "producer",
            format!("allcnnc {}", env!("CARGO_PKG_VERSION")),
        ),
    ]);
    Ok(ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some("allcnnc".to_string()),
        producer_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        doc_string: Some(format!("{} exported by allcnnc", plan.name)),
        graph: Some(graph),
        metadata_props: metadata
            .into_iter()
            .map(|(key, value)| StringStringEntryProto {
                key: Some(key.to_string()),
                value: Some(value),
            })
            .collect(),
        ..Default::default()
    })
}

/// The metadata every export carries, as `(key, value)`: `model`,
/// `model_hash`, `class_names` (a JSON list) and `preprocessing` (its
/// command-line name, or `none`).
pub(crate) fn model_metadata(plan: &Plan, checkpoint: &Checkpoint) -> Vec<(&'static str, String)> {
    let kind = checkpoint
        .preprocess
        .as_ref()
        .map_or("none", |p| p.kind().name());
    vec![
        ("model", plan.name.clone()),
        ("model_hash", plan.model_hash.clone()),
        (
            "class_names",
            serde_json::to_string(&checkpoint.class_names).expect("strings serialise"),
        ),
        ("preprocessing", kind.to_string()),
    ]
}

/// The checkpoint's parameters fit the plan (a loaded checkpoint always
/// does; one built by hand may not).
pub(crate) fn check_params(plan: &Plan, checkpoint: &Checkpoint) -> Result<(), ExportError> {
    let specs = plan.params();
    if specs.len() != checkpoint.params.len() {
        return Err(ExportError::ParamCount {
            model: plan.name.clone(),
            found: checkpoint.params.len(),
            expected: specs.len(),
        });
    }
    for (spec, values) in specs.iter().zip(&checkpoint.params) {
        if values.len() != spec.len() {
            return Err(ExportError::ParamSize {
                model: plan.name.clone(),
                name: spec.name.clone(),
                found: values.len(),
                expected: spec.len(),
            });
        }
    }
    Ok(())
}

/// Refuses a model whose tensors exceed `limit` bytes, before any is copied.
fn check_size(plan: &Plan, checkpoint: &Checkpoint, limit: u64) -> Result<(), ExportError> {
    let mut tensors: Vec<(String, u64)> = plan
        .params()
        .iter()
        .map(|spec| (spec.name.clone(), 4 * spec.len() as u64))
        .collect();
    if let Some(preprocess) = &checkpoint.preprocess {
        for (name, dims, _) in preprocess.to_tensors_whole() {
            tensors.push((name, 4 * dims.iter().product::<usize>() as u64));
        }
    }
    let bytes: u64 = tensors.iter().map(|(_, bytes)| bytes).sum();
    if bytes <= limit {
        return Ok(());
    }
    let (largest, largest_bytes) = tensors
        .into_iter()
        .max_by_key(|(_, bytes)| *bytes)
        .expect("a model over the limit has tensors");
    Err(ExportError::TooLarge {
        model: plan.name.clone(),
        bytes,
        limit,
        largest,
        largest_bytes,
    })
}

/// A dimension of a graph input or output.
enum Dim<'a> {
    Size(usize),
    Symbol(&'a str),
}

fn tensor_value(name: &str, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Size(n) => dimension::Value::DimValue(*n as i64),
                Dim::Symbol(s) => dimension::Value::DimParam(s.to_string()),
            }),
            denotation: None,
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            denotation: None,
        }),
        ..Default::default()
    }
}

/// An attribute of type `kind`, its value field set by `set`.
fn attribute(
    name: &str,
    kind: AttributeType,
    set: impl FnOnce(&mut AttributeProto),
) -> AttributeProto {
    let mut attribute = AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(kind as i32),
        ..Default::default()
    };
    set(&mut attribute);
    attribute
}

fn int(name: &str, value: i64) -> AttributeProto {
    attribute(name, AttributeType::Int, |a| a.i = Some(value))
}

fn ints(name: &str, values: &[usize]) -> AttributeProto {
    attribute(name, AttributeType::Ints, |a| {
        a.ints = values.iter().map(|&v| v as i64).collect();
    })
}

fn float(name: &str, value: f32) -> AttributeProto {
    attribute(name, AttributeType::Float, |a| a.f = Some(value))
}

fn string(name: &str, value: &str) -> AttributeProto {
    attribute(name, AttributeType::String, |a| {
        a.s = Some(value.as_bytes().to_vec());
    })
}

/// A tensor's data, which fixes its element type.
enum Data<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    I64(&'a [i64]),
    Bool(&'a [bool]),
}

impl Data<'_> {
    fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::F64(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::Bool(v) => v.len(),
        }
    }

    /// The data type and the little-endian bytes of `raw_data`.
    fn raw(&self) -> (DataType, Vec<u8>) {
        match self {
            Data::F32(v) => (
                DataType::Float,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            Data::F64(v) => (
                DataType::Double,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            Data::I64(v) => (
                DataType::Int64,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            Data::Bool(v) => (DataType::Bool, v.iter().map(|&b| u8::from(b)).collect()),
        }
    }
}

/// One pooling axis in ONNX terms: the padding the plan gives, and how far
/// the windows that the plan's output size implies reach past it.
#[derive(Debug, Clone)]
struct PoolAxis {
    /// The plan's leading padding.
    before: usize,
    /// The plan's trailing padding, as far as the windows reach into it.
    after: usize,
    /// How far the last window runs past the padded input (Caffe's clipped
    /// part: not counted by average pooling).
    clipped: usize,
    /// Which outputs have no input element in their window.
    empty: Vec<bool>,
}

impl PoolAxis {
    fn new(
        size: usize,
        out: usize,
        kernel: usize,
        stride: usize,
        before: usize,
        after: usize,
    ) -> Self {
        // The windows cover `-before .. reach - before`; ONNX's floor
        // rounding gives `out` windows when the trailing padding is exactly
        // what the last one needs beyond the input.
        let reach = (out - 1) * stride + kernel;
        let trailing = reach.saturating_sub(before + size);
        let empty = (0..out)
            .map(|o| {
                let start = o * stride;
                let end = start + kernel;
                // The input is `before .. before + size` in window terms.
                end <= before || start >= before + size
            })
            .collect();
        Self {
            before,
            after: trailing.min(after),
            clipped: trailing.saturating_sub(after),
            empty,
        }
    }

    /// Whether ONNX pooling can take this padding as its `pads`: runtimes
    /// (onnxruntime) require each to be smaller than the kernel.
    fn pads_fit(&self, kernel: usize) -> bool {
        self.before < kernel && self.after + self.clipped < kernel
    }
}

/// The graph under construction; every value and tensor name is unique.
struct Builder {
    graph: GraphProto,
    names: UniqueNames,
}

impl Default for Builder {
    fn default() -> Self {
        let mut names = UniqueNames::default();
        // The graph's input and output keep their names whatever the
        // layers are called (a layer may be labelled `input`).
        names.claim(INPUT);
        names.claim(OUTPUT);
        Self {
            graph: GraphProto::default(),
            names,
        }
    }
}

impl Builder {
    /// `name`, or `name_2`, `name_3`, ... when a layer's label took it.
    fn claim(&mut self, name: &str) -> String {
        self.names.claim(name)
    }

    /// Adds an initializer and returns its name.
    fn tensor(&mut self, name: &str, dims: &[usize], data: Data) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len(), "{name}");
        let name = self.claim(name);
        let (data_type, raw) = data.raw();
        self.graph.initializer.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(data_type as i32),
            name: Some(name.clone()),
            raw_data: Some(raw),
            ..Default::default()
        });
        name
    }

    /// Adds node `name` whose one output is the value `name`.
    fn node(
        &mut self,
        op_type: &str,
        name: &str,
        inputs: &[&str],
        attribute: Vec<AttributeProto>,
        layer: &Layer,
    ) -> String {
        self.node_to(op_type, name, inputs, name, attribute, layer)
    }

    /// Adds node `name` with output value `output`; `layer` is named in
    /// the node's documentation.
    fn node_to(
        &mut self,
        op_type: &str,
        name: &str,
        inputs: &[&str],
        output: &str,
        attribute: Vec<AttributeProto>,
        layer: &Layer,
    ) -> String {
        let doc = if layer.line > 0 {
            format!("layer `{}`, line {}", layer.name, layer.line)
        } else {
            format!("layer `{}`", layer.name)
        };
        self.op(op_type, name, inputs, output, attribute, Some(doc))
    }

    fn op(
        &mut self,
        op_type: &str,
        name: &str,
        inputs: &[&str],
        output: &str,
        attribute: Vec<AttributeProto>,
        doc: Option<String>,
    ) -> String {
        let (name, output) = if output == OUTPUT {
            (name.to_string(), OUTPUT.to_string())
        } else {
            let output = self.claim(output);
            (output.clone(), output)
        };
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            name: Some(name),
            op_type: Some(op_type.to_string()),
            domain: Some(String::new()),
            attribute,
            doc_string: doc,
            ..Default::default()
        });
        output
    }

    /// A preprocessing node `preprocess.NAME`.
    fn pre(
        &mut self,
        op_type: &str,
        name: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> String {
        let name = format!("preprocess.{name}");
        self.op(op_type, &name, inputs, &name, attrs, None)
    }

    /// A preprocessing `Cast` of `input` to `to`.
    fn cast(&mut self, name: &str, input: &str, to: DataType) -> String {
        self.pre("Cast", name, &[input], vec![int("to", to as i64)])
    }

    /// The checkpoint's preprocessing applied to `input` (N x C x H x W).
    fn preprocess(&mut self, preprocess: &Preprocess, input: &str) -> String {
        let shape = preprocess.shape;
        match &preprocess.method {
            Method::None => input.to_string(),
            Method::MeanStd { mean, std } => {
                let dims = [1, shape.c, 1, 1];
                let mean = self.tensor("preprocess.mean", &dims, Data::F32(mean));
                let std = self.tensor("preprocess.std", &dims, Data::F32(std));
                let centred = self.pre("Sub", "centred", &[input, &mean], Vec::new());
                self.pre("Div", "normalized", &[&centred, &std], Vec::new())
            }
            Method::GcnZca { gcn, zca } => self.gcn_zca(shape, gcn, zca, input),
        }
    }

    fn gcn_zca(&mut self, shape: Shape, gcn: &Gcn, zca: &Zca, input: &str) -> String {
        let dim = shape.len();
        // The runtime's images are H x W x C: the features in that order.
        let hwc = self.pre(
            "Transpose",
            "to_hwc",
            &[input],
            vec![ints("perm", &[0, 2, 3, 1])],
        );
        let flat_shape = self.tensor("preprocess.flat_shape", &[2], Data::I64(&[-1, dim as i64]));
        let flat = self.pre("Reshape", "flatten", &[&hwc, &flat_shape], Vec::new());

        // GCN in float64, as `Gcn::apply_image`.
        let x = self.cast("gcn.to_f64", &flat, DataType::Double);
        let axes = self.tensor("preprocess.gcn.axes", &[1], Data::I64(&[1]));
        let keep = || vec![int("keepdims", 1)];
        let sum = self.pre("ReduceSum", "gcn.sum", &[&x, &axes], keep());
        let count = self.tensor("preprocess.gcn.count", &[], Data::F64(&[dim as f64]));
        let mean = self.pre("Div", "gcn.mean", &[&sum, &count], Vec::new());
        let centred = self.pre("Sub", "gcn.centred", &[&x, &mean], Vec::new());
        let squares = self.pre("Mul", "gcn.squares", &[&centred, &centred], Vec::new());
        let sum_sq = self.pre("ReduceSum", "gcn.sum_squares", &[&squares, &axes], keep());
        let sqrt_bias = f64::from(gcn.sqrt_bias);
        let bias = self.tensor("preprocess.gcn.sqrt_bias", &[], Data::F64(&[sqrt_bias]));
        let biased = self.pre("Add", "gcn.plus_sqrt_bias", &[&sum_sq, &bias], Vec::new());
        let norm = self.pre("Sqrt", "gcn.norm", &[&biased], Vec::new());
        let scale = self.tensor(
            "preprocess.gcn.scale",
            &[],
            Data::F64(&[f64::from(gcn.scale)]),
        );
        let divisor = self.pre("Div", "gcn.divisor", &[&norm, &scale], Vec::new());
        let floor = f64::from(gcn.min_divisor);
        let min = self.tensor("preprocess.gcn.min_divisor", &[], Data::F64(&[floor]));
        let tiny = self.pre("Less", "gcn.divisor_tiny", &[&divisor, &min], Vec::new());
        let one = self.tensor("preprocess.gcn.one", &[], Data::F64(&[1.0]));
        let safe = self.pre(
            "Where",
            "gcn.safe_divisor",
            &[&tiny, &one, &divisor],
            Vec::new(),
        );
        let normalised = self.pre("Div", "gcn.normalized", &[&centred, &safe], Vec::new());
        let x = self.cast("gcn.to_f32", &normalised, DataType::Float);

        // ZCA in float32, as `Zca::apply`: (x - mean) W.
        let zca_mean = self.tensor("preprocess.zca_mean", &[dim], Data::F32(&zca.mean));
        let matrix = self.tensor("preprocess.zca_matrix", &[dim, dim], Data::F32(&zca.matrix));
        let centred = self.pre("Sub", "zca.centred", &[&x, &zca_mean], Vec::new());
        let white = self.pre("MatMul", "zca.whitened", &[&centred, &matrix], Vec::new());

        let hwc_shape = [-1, shape.h as i64, shape.w as i64, shape.c as i64];
        let hwc_shape = self.tensor("preprocess.hwc_shape", &[4], Data::I64(&hwc_shape));
        let hwc = self.pre("Reshape", "unflatten", &[&white, &hwc_shape], Vec::new());
        self.pre(
            "Transpose",
            "to_chw",
            &[&hwc],
            vec![ints("perm", &[0, 3, 1, 2])],
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        layer: &Layer,
        out_channels: usize,
        window: &Window,
        hwio: &[f32],
        bias: Option<&Vec<f32>>,
        act: Activation,
        input: &str,
    ) -> String {
        let name = &layer.name;
        let in_channels = layer.in_shape.c;
        let oihw = hwio_to_oihw(hwio, window.kh, window.kw, in_channels, out_channels);
        let weight = self.tensor(
            &format!("{name}.weight"),
            &[out_channels, in_channels, window.kh, window.kw],
            Data::F32(&oihw),
        );
        let mut inputs = vec![input.to_string(), weight];
        if let Some(bias) = bias {
            inputs.push(self.tensor(&format!("{name}.bias"), &[out_channels], Data::F32(bias)));
        }
        let pad = window.pad;
        let attrs = vec![
            ints("kernel_shape", &[window.kh, window.kw]),
            ints("strides", &[window.stride_h, window.stride_w]),
            ints("pads", &[pad.top, pad.left, pad.bottom, pad.right]),
            ints("dilations", &[1, 1]),
            int("group", 1),
        ];
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let conv = self.node("Conv", name, &inputs, attrs, layer);
        match act {
            Activation::None => conv,
            Activation::Relu => {
                self.node("Relu", &format!("{name}.relu"), &[&conv], Vec::new(), layer)
            }
            Activation::LeakyRelu { slope } => self.node(
                "LeakyRelu",
                &format!("{name}.leaky_relu"),
                &[&conv],
                vec![float("alpha", slope)],
                layer,
            ),
        }
    }

    fn pool_axes(layer: &Layer, window: &Window) -> (PoolAxis, PoolAxis) {
        let (input, out, pad) = (layer.in_shape, layer.out_shape, window.pad);
        (
            PoolAxis::new(
                input.h,
                out.h,
                window.kh,
                window.stride_h,
                pad.top,
                pad.bottom,
            ),
            PoolAxis::new(
                input.w,
                out.w,
                window.kw,
                window.stride_w,
                pad.left,
                pad.right,
            ),
        )
    }

    /// An explicit constant `Pad` of `input` by `[top, left, bottom, right]`.
    fn pad(&mut self, layer: &Layer, input: &str, pads: [usize; 4], value: f32) -> String {
        let name = &layer.name;
        let [top, left, bottom, right] = pads.map(|p| p as i64);
        let amounts = [0, 0, top, left, 0, 0, bottom, right];
        let amounts = self.tensor(&format!("{name}.pads"), &[8], Data::I64(&amounts));
        let value = self.tensor(&format!("{name}.pad_value"), &[], Data::F32(&[value]));
        self.node(
            "Pad",
            &format!("{name}.pad"),
            &[input, &amounts, &value],
            vec![string("mode", "constant")],
            layer,
        )
    }

    fn max_pool(&mut self, layer: &Layer, window: &Window, input: &str) -> String {
        let (rows, cols) = Self::pool_axes(layer, window);
        let window_attrs = || {
            vec![
                ints("kernel_shape", &[window.kh, window.kw]),
                ints("strides", &[window.stride_h, window.stride_w]),
            ]
        };
        if rows.pads_fit(window.kh) && cols.pads_fit(window.kw) {
            // Every window holds an input element; padding never wins.
            let mut attrs = window_attrs();
            attrs.push(ints(
                "pads",
                &[
                    rows.before,
                    cols.before,
                    rows.after + rows.clipped,
                    cols.after + cols.clipped,
                ],
            ));
            return self.node("MaxPool", &layer.name, &[input], attrs, layer);
        }
        // A padding not smaller than the kernel: pad with -inf, which never
        // wins, and give the windows without input element the runtime's 0.
        let padded = self.pad(
            layer,
            input,
            [
                rows.before,
                cols.before,
                rows.after + rows.clipped,
                cols.after + cols.clipped,
            ],
            f32::NEG_INFINITY,
        );
        let pooled = self.node(
            "MaxPool",
            &format!("{}.max", layer.name),
            &[&padded],
            window_attrs(),
            layer,
        );
        let mask: Vec<bool> = rows
            .empty
            .iter()
            .flat_map(|&row| cols.empty.iter().map(move |&col| row || col))
            .collect();
        if !mask.contains(&true) {
            return self.renamed(layer, &pooled);
        }
        let (out_h, out_w) = (rows.empty.len(), cols.empty.len());
        let mask = self.tensor(
            &format!("{}.empty_windows", layer.name),
            &[1, 1, out_h, out_w],
            Data::Bool(&mask),
        );
        let zero = self.tensor(&format!("{}.zero", layer.name), &[], Data::F32(&[0.0]));
        self.node(
            "Where",
            &layer.name,
            &[&mask, &zero, &pooled],
            Vec::new(),
            layer,
        )
    }

    fn avg_pool(&mut self, layer: &Layer, window: &Window, input: &str) -> String {
        let (rows, cols) = Self::pool_axes(layer, window);
        let mut attrs = vec![
            ints("kernel_shape", &[window.kh, window.kw]),
            ints("strides", &[window.stride_h, window.stride_w]),
        ];
        let unclipped = rows.clipped == 0 && cols.clipped == 0;
        if unclipped && rows.pads_fit(window.kh) && cols.pads_fit(window.kw) {
            // The divisor is the whole window, padding included.
            attrs.push(ints(
                "pads",
                &[rows.before, cols.before, rows.after, cols.after],
            ));
            attrs.push(int("count_include_pad", 1));
            return self.node("AveragePool", &layer.name, &[input], attrs, layer);
        }
        // The plan's padding as zeros that count; the clipped part as ONNX
        // padding that does not.
        let pads = [rows.before, cols.before, rows.after, cols.after];
        let padded = if pads.iter().any(|&p| p > 0) {
            self.pad(layer, input, pads, 0.0)
        } else {
            input.to_string()
        };
        attrs.push(ints("pads", &[0, 0, rows.clipped, cols.clipped]));
        attrs.push(int("count_include_pad", 0));
        self.node("AveragePool", &layer.name, &[&padded], attrs, layer)
    }

    /// `value` under the layer's name (an `Identity`), so that every layer
    /// has a node and a value of its name.
    fn renamed(&mut self, layer: &Layer, value: &str) -> String {
        self.node("Identity", &layer.name, &[value], Vec::new(), layer)
    }
}

/// A `KH x KW x C_in x C_out` (HWIO) weight as `C_out x C_in x KH x KW`
/// (OIHW, ONNX's and PyTorch's layout).
pub fn hwio_to_oihw(hwio: &[f32], kh: usize, kw: usize, c_in: usize, c_out: usize) -> Vec<f32> {
    assert_eq!(hwio.len(), kh * kw * c_in * c_out, "HWIO weight size");
    let mut oihw = vec![0.0; hwio.len()];
    for y in 0..kh {
        for x in 0..kw {
            for i in 0..c_in {
                for o in 0..c_out {
                    oihw[((o * c_in + i) * kh + y) * kw + x] =
                        hwio[((y * kw + x) * c_in + i) * c_out + o];
                }
            }
        }
    }
    oihw
}
