//! The neutral description of a Caffe net ([`CaffeNet`]) and the one
//! lowering from Caffe's messages to it, shared by the prototxt reader and
//! the caffemodel decoder: Caffe's defaults are filled in here, and the
//! checks that do not depend on how the file was written (a zero stride, a
//! kernel given twice, a V1 type number) are made here once. Problems come
//! back as [`Issue`]s naming the layer and field; each reader turns them into
//! its own error (a diagnostic with a span, or a [`super::CaffeModelError`]).

use super::proto;
use std::ops::Range;

/// A whole Caffe net, as read from a prototxt or a caffemodel.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CaffeNet {
    /// `name:` of the net; empty when absent.
    pub name: String,
    /// The net's input: from `input:` with `input_shape { dim: }` or four
    /// `input_dim:` values (old style), or from an `Input` layer's
    /// `input_param` (that layer also stays in `layers`).
    pub input: Option<InputDecl>,
    /// The layers in file order (V2 `layer` or V1 `layers`; a file has one
    /// or the other).
    pub layers: Vec<CaffeLayer>,
}

/// The input blob of a net and its dimensions (usually N, C, H, W).
#[derive(Debug, Clone, PartialEq)]
pub struct InputDecl {
    pub name: String,
    /// Every dimension is at least 1.
    pub dims: Vec<usize>,
    /// Where it is declared in the prototxt (the `input:` field or the
    /// `Input` layer); `None` from a caffemodel.
    pub span: Option<Range<usize>>,
}

/// `TRAIN` or `TEST`: the only phase a layer runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Train,
    Test,
}

/// One layer. The parameter fields are `Some` exactly when the layer's
/// `kind` is the one they belong to (`conv` for "Convolution", `pool` for
/// "Pooling", `inner_product` for "InnerProduct", `relu` for "ReLU",
/// `dropout` for "Dropout", `batch_norm` for "BatchNorm", `scale` for
/// "Scale"), with Caffe's defaults filled in; a parameter block on a layer of
/// another kind is ignored, as Caffe ignores it.
#[derive(Debug, Clone, PartialEq)]
pub struct CaffeLayer {
    /// `name:`; may be empty. Weights are matched to layers by name.
    pub name: String,
    /// The V2 type name ("Convolution", "Pooling", ...). A V1 `layers`
    /// type is mapped to its V2 name the way Caffe's upgrade does
    /// (CONVOLUTION to "Convolution", SOFTMAX_LOSS to "SoftmaxWithLoss",
    /// ...); a number Caffe does not define becomes "V1 type N".
    pub kind: String,
    pub bottoms: Vec<String>,
    pub tops: Vec<String>,
    /// From the first `include { phase: }` rule with a phase, else the
    /// opposite of the first `exclude { phase: }`; `None`: both phases.
    pub phase: Option<Phase>,
    pub conv: Option<ConvParams>,
    pub pool: Option<PoolParams>,
    pub inner_product: Option<InnerProductParams>,
    /// `negative_slope` (0 for a plain ReLU).
    pub relu: Option<f32>,
    /// `dropout_ratio` (default 0.5; from 0 to below 1).
    pub dropout: Option<f32>,
    pub batch_norm: Option<BatchNormParams>,
    pub scale: Option<ScaleParams>,
    /// Byte span of the whole `layer { ... }` block in the prototxt; `None`
    /// from a caffemodel.
    pub span: Option<Range<usize>>,
    /// The parameter blobs, in Caffe's order (weights, then bias, ...);
    /// empty from a prototxt.
    pub blobs: Vec<Blob>,
}

/// A convolution. Pairs are (height, width).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvParams {
    /// At least 1.
    pub num_output: usize,
    /// Each at least 1.
    pub kernel: (usize, usize),
    /// Each at least 1; default 1.
    pub stride: (usize, usize),
    /// Default 0.
    pub pad: (usize, usize),
    /// At least 1; default 1.
    pub group: usize,
    /// Default true.
    pub bias_term: bool,
    /// Each at least 1; default 1.
    pub dilation: (usize, usize),
}

/// How a pooling combines its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMethod {
    Max,
    Ave,
    Stochastic,
}

/// How a pooling's output size is rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundMode {
    /// Caffe's default: windows may hang over the bottom-right edge.
    Ceil,
    Floor,
}

/// A pooling. Pairs are (height, width).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolParams {
    /// Default `Max`.
    pub method: PoolMethod,
    /// `None` exactly when `global_pooling` (the window is the whole map);
    /// else each at least 1.
    pub kernel: Option<(usize, usize)>,
    /// Each at least 1; default 1.
    pub stride: (usize, usize),
    /// Default 0.
    pub pad: (usize, usize),
    pub global_pooling: bool,
    /// Default `Ceil`.
    pub round_mode: RoundMode,
}

/// A fully connected layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InnerProductParams {
    /// At least 1.
    pub num_output: usize,
    /// Default true.
    pub bias_term: bool,
    /// Default false: the weights are `num_output x inputs`.
    pub transpose: bool,
    /// The first axis flattened into the product; default 1.
    pub axis: i32,
}

/// A batch normalisation (Caffe's has no scale or shift of its own).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormParams {
    /// Unset, Caffe uses the stored statistics in TEST and the batch's in TRAIN.
    pub use_global_stats: Option<bool>,
    /// Default 1e-5; finite and not negative.
    pub eps: f32,
}

/// A learned scale (and, with `bias_term`, shift).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleParams {
    /// Default false.
    pub bias_term: bool,
    /// Default 1.
    pub axis: i32,
    /// Default 1; -1 means every axis from `axis` on.
    pub num_axes: i32,
}

/// A parameter blob: its shape and its values, row-major.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Blob {
    /// From `BlobShape`; for a legacy blob (num/channels/height/width) the
    /// four values with the leading 1s dropped (keeping at least one), so a
    /// legacy inner-product weight `1x1xNxK` reads `NxK` and a bias
    /// `1x1x1xN` reads `N`. The product of the dimensions is `data.len()`.
    pub shape: Vec<usize>,
    /// The values; `double_data` is narrowed to f32.
    pub data: Vec<f32>,
    /// Whether the shape came from the legacy 4-D fields.
    pub legacy: bool,
}

impl Blob {
    /// Whether this blob fits a parameter of shape `expected` the way Caffe
    /// decides it (`Blob::ShapeEquals`): a legacy blob fits any shape of at
    /// most 4 axes that reads the same once padded with leading 1s (Caffe
    /// stored inner-product weights as `1x1xNxK`); any other must be equal.
    pub fn fits(&self, expected: &[usize]) -> bool {
        if !self.legacy {
            return self.shape == expected;
        }
        expected.len() <= 4 && legacy_padded(&self.shape) == legacy_padded(expected)
    }
}

/// `shape` padded to four axes with leading 1s (shape has at most 4 axes).
fn legacy_padded(shape: &[usize]) -> [usize; 4] {
    let mut out = [1; 4];
    let skip = 4usize.saturating_sub(shape.len());
    for (slot, &dim) in out[skip..].iter_mut().zip(shape) {
        *slot = dim;
    }
    out
}

/// A problem found while lowering Caffe's messages, before it knows how the
/// file was written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Issue {
    pub code: &'static str,
    /// Index of the layer in its list (`layer` or `layers`), or `None` for
    /// the net's own fields.
    pub layer: Option<usize>,
    /// The field inside the layer (or net), dotted, with `[i]` for the i-th
    /// value of a repeated one: `convolution_param.kernel_size[1]`; empty for
    /// the layer itself.
    pub field: String,
    pub message: String,
    pub hint: Option<String>,
}

/// Diagnostic codes (docs/import.md).
pub(crate) mod code {
    pub const SYNTAX: &str = "E0801";
    pub const TOO_DEEP: &str = "E0802";
    pub const WRONG_TYPE: &str = "E0803";
    pub const OUT_OF_RANGE: &str = "E0804";
    pub const TWICE: &str = "E0805";
    pub const MISSING: &str = "E0806";
    pub const UNKNOWN_NAME: &str = "E0807";
    pub const NET_SHAPE: &str = "E0808";
}

/// V1 `LayerType` names, their numbers and their V2 type names (Caffe's
/// `UpgradeV1LayerType`).
pub(crate) const V1_TYPES: &[(&str, i32, &str)] = &[
    ("ABSVAL", 35, "AbsVal"),
    ("ACCURACY", 1, "Accuracy"),
    ("ARGMAX", 30, "ArgMax"),
    ("BNLL", 2, "BNLL"),
    ("CONCAT", 3, "Concat"),
    ("CONTRASTIVE_LOSS", 37, "ContrastiveLoss"),
    ("CONVOLUTION", 4, "Convolution"),
    ("DATA", 5, "Data"),
    ("DECONVOLUTION", 39, "Deconvolution"),
    ("DROPOUT", 6, "Dropout"),
    ("DUMMY_DATA", 32, "DummyData"),
    ("EUCLIDEAN_LOSS", 7, "EuclideanLoss"),
    ("ELTWISE", 25, "Eltwise"),
    ("EXP", 38, "Exp"),
    ("FLATTEN", 8, "Flatten"),
    ("HDF5_DATA", 9, "HDF5Data"),
    ("HDF5_OUTPUT", 10, "HDF5Output"),
    ("HINGE_LOSS", 28, "HingeLoss"),
    ("IM2COL", 11, "Im2col"),
    ("IMAGE_DATA", 12, "ImageData"),
    ("INFOGAIN_LOSS", 13, "InfogainLoss"),
    ("INNER_PRODUCT", 14, "InnerProduct"),
    ("LRN", 15, "LRN"),
    ("MEMORY_DATA", 29, "MemoryData"),
    ("MULTINOMIAL_LOGISTIC_LOSS", 16, "MultinomialLogisticLoss"),
    ("MVN", 34, "MVN"),
    ("NONE", 0, ""),
    ("POOLING", 17, "Pooling"),
    ("POWER", 26, "Power"),
    ("RELU", 18, "ReLU"),
    ("SIGMOID", 19, "Sigmoid"),
    ("SIGMOID_CROSS_ENTROPY_LOSS", 27, "SigmoidCrossEntropyLoss"),
    ("SILENCE", 36, "Silence"),
    ("SOFTMAX", 20, "Softmax"),
    ("SOFTMAX_LOSS", 21, "SoftmaxWithLoss"),
    ("SPLIT", 22, "Split"),
    ("SLICE", 33, "Slice"),
    ("TANH", 23, "TanH"),
    ("WINDOW_DATA", 24, "WindowData"),
    ("THRESHOLD", 31, "Threshold"),
];

/// The V2 type name of a V1 type number.
pub(crate) fn v1_kind(number: i32) -> String {
    match V1_TYPES.iter().find(|(_, n, _)| *n == number) {
        Some((_, _, kind)) if !kind.is_empty() => (*kind).to_string(),
        _ => format!("V1 type {number}"),
    }
}

/// Collects issues for one layer (or the net) while lowering it.
struct Checker<'a> {
    issues: &'a mut Vec<Issue>,
    layer: Option<usize>,
}

impl Checker<'_> {
    fn push(&mut self, code: &'static str, field: impl Into<String>, message: impl Into<String>) {
        self.issues.push(Issue {
            code,
            layer: self.layer,
            field: field.into(),
            message: message.into(),
            hint: None,
        });
    }

    fn push_hint(
        &mut self,
        code: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.issues.push(Issue {
            code,
            layer: self.layer,
            field: field.into(),
            message: message.into(),
            hint: Some(hint.into()),
        });
    }

    /// A value that must be at least 1 (0 is the only bad `uint32`).
    fn positive(&mut self, field: &str, name: &str, value: u32) -> usize {
        if value == 0 {
            self.push(
                code::OUT_OF_RANGE,
                field,
                format!("`{name}` must be a positive whole number, found 0"),
            );
        }
        value as usize
    }

    /// A single value or a (height, width) pair, as Caffe reads a kernel,
    /// stride, padding or dilation: the field `list` (repeated in a
    /// convolution, single in a pooling) or its per-axis forms `{base}_h`
    /// and `{base}_w`, which need each other except for padding.
    #[allow(clippy::too_many_arguments)]
    fn pair(
        &mut self,
        prefix: &str,
        (list, base, repeated): (&str, &str, bool),
        values: &[u32],
        h: Option<u32>,
        w: Option<u32>,
        default: u32,
        min: u32,
    ) -> Option<(usize, usize)> {
        let check = |this: &mut Self, field: String, label: &str, v: u32| {
            if v < min {
                this.push(
                    code::OUT_OF_RANGE,
                    field,
                    format!("`{label}` must be a positive whole number, found {v}"),
                );
            }
            v as usize
        };
        if h.is_some() || w.is_some() {
            if !values.is_empty() {
                self.push_hint(
                    code::TWICE,
                    format!("{prefix}.{base}_h"),
                    format!("`{list}` and `{base}_h`/`{base}_w` are both given"),
                    format!("give either `{list}` or both `{base}_h` and `{base}_w`"),
                );
                return None;
            }
            let (h, w) = match (h, w) {
                (Some(h), Some(w)) => (h, w),
                // Caffe lets one padding default to 0 but needs both of the others.
                (h, w) if base == "pad" => (h.unwrap_or(0), w.unwrap_or(0)),
                (h, _) => {
                    let (given, missing) = if h.is_some() { ("h", "w") } else { ("w", "h") };
                    self.push(
                        code::MISSING,
                        format!("{prefix}.{base}_{given}"),
                        format!("`{base}_{given}` is given without `{base}_{missing}`"),
                    );
                    return None;
                }
            };
            let h = check(self, format!("{prefix}.{base}_h"), &format!("{base}_h"), h);
            let w = check(self, format!("{prefix}.{base}_w"), &format!("{base}_w"), w);
            return Some((h, w));
        }
        let field = |idx: usize| {
            if repeated {
                format!("{prefix}.{list}[{idx}]")
            } else {
                format!("{prefix}.{list}")
            }
        };
        match values {
            [] => {
                let d = default as usize;
                Some((d, d))
            }
            [v] => {
                let v = check(self, field(0), list, *v);
                Some((v, v))
            }
            [h, w] => {
                let h = check(self, field(0), list, *h);
                let w = check(self, field(1), list, *w);
                Some((h, w))
            }
            _ => {
                self.push_hint(
                    code::OUT_OF_RANGE,
                    field(2),
                    format!(
                        "`{list}` has {} values; only 2-D layers are supported (1 value, or height and width)",
                        values.len()
                    ),
                    "3-D convolutions cannot be imported",
                );
                None
            }
        }
    }

    /// A pooling's single value or `_h` / `_w` pair.
    fn pool_pair(
        &mut self,
        (list, base): (&str, &str),
        single: Option<u32>,
        (h, w): (Option<u32>, Option<u32>),
        default: u32,
        min: u32,
    ) -> Option<(usize, usize)> {
        let values: Vec<u32> = single.into_iter().collect();
        self.pair(
            "pooling_param",
            (list, base, false),
            &values,
            h,
            w,
            default,
            min,
        )
    }

    fn finite(&mut self, field: &str, name: &str, value: f32) -> f32 {
        if !value.is_finite() {
            self.push(
                code::OUT_OF_RANGE,
                field,
                format!("`{name}` must be a finite number, found {value}"),
            );
        }
        value
    }
}

/// The phase a layer runs in, from its include and exclude rules.
fn phase_of(include: &[proto::NetStateRule], exclude: &[proto::NetStateRule]) -> Option<Phase> {
    let phase = |number: i32| match number {
        0 => Some(Phase::Train),
        1 => Some(Phase::Test),
        _ => None,
    };
    if let Some(p) = include.iter().find_map(|rule| rule.phase.and_then(phase)) {
        return Some(p);
    }
    exclude
        .iter()
        .find_map(|rule| rule.phase.and_then(phase))
        .map(|p| match p {
            Phase::Train => Phase::Test,
            Phase::Test => Phase::Train,
        })
}

fn check_rules(check: &mut Checker<'_>, rules: &[proto::NetStateRule], list: &str) {
    for (idx, rule) in rules.iter().enumerate() {
        if let Some(number) = rule.phase {
            if !(0..=1).contains(&number) {
                check.push(
                    code::UNKNOWN_NAME,
                    format!("{list}[{idx}].phase"),
                    format!("`phase` must be TRAIN or TEST, found {number}"),
                );
            }
        }
    }
}

/// The parameters of a layer, whichever syntax it came in.
struct Params<'a> {
    conv: Option<&'a proto::ConvolutionParameter>,
    pool: Option<&'a proto::PoolingParameter>,
    inner_product: Option<&'a proto::InnerProductParameter>,
    relu: Option<&'a proto::ReLuParameter>,
    dropout: Option<&'a proto::DropoutParameter>,
    batch_norm: Option<&'a proto::BatchNormParameter>,
    scale: Option<&'a proto::ScaleParameter>,
}

/// Lowers a whole net; every issue of every layer is reported.
pub(crate) fn lower(net: &proto::NetParameter) -> Result<CaffeNet, Vec<Issue>> {
    let mut issues = Vec::new();
    let mut out = CaffeNet {
        name: net.name.clone().unwrap_or_default(),
        ..CaffeNet::default()
    };
    if !net.layer.is_empty() && !net.layers.is_empty() {
        issues.push(Issue {
            code: code::NET_SHAPE,
            layer: None,
            field: "layers".into(),
            message: "the net has both V2 `layer` and V1 `layers` blocks".into(),
            hint: Some("write every layer in one syntax (Caffe's upgrade_net_proto_text converts V1 files)".into()),
        });
        return Err(issues);
    }
    out.input = net_input(net, &mut issues);
    for (idx, layer) in net.layer.iter().enumerate() {
        let mut check = Checker {
            issues: &mut issues,
            layer: Some(idx),
        };
        let kind = match &layer.r#type {
            Some(kind) if !kind.is_empty() => kind.clone(),
            _ => {
                check.push_hint(
                    code::MISSING,
                    "",
                    "the layer has no `type`",
                    "add e.g. `type: \"Convolution\"`",
                );
                String::new()
            }
        };
        check_rules(&mut check, &layer.include, "include");
        check_rules(&mut check, &layer.exclude, "exclude");
        let params = Params {
            conv: layer.convolution_param.as_ref(),
            pool: layer.pooling_param.as_ref(),
            inner_product: layer.inner_product_param.as_ref(),
            relu: layer.relu_param.as_ref(),
            dropout: layer.dropout_param.as_ref(),
            batch_norm: layer.batch_norm_param.as_ref(),
            scale: layer.scale_param.as_ref(),
        };
        let lowered = lower_layer(
            &mut check,
            layer.name.clone().unwrap_or_default(),
            kind,
            &layer.bottom,
            &layer.top,
            phase_of(&layer.include, &layer.exclude),
            &params,
        );
        if lowered.kind == "Input" {
            let decl = input_layer(&mut check, &lowered, layer.input_param.as_ref());
            if let Some(decl) = decl {
                if out.input.is_some() {
                    check.push_hint(
                        code::NET_SHAPE,
                        "",
                        "the net declares more than one input",
                        "only nets with one input can be imported",
                    );
                } else {
                    out.input = Some(decl);
                }
            }
        }
        out.layers.push(lowered);
    }
    for (idx, layer) in net.layers.iter().enumerate() {
        let mut check = Checker {
            issues: &mut issues,
            layer: Some(idx),
        };
        let kind = match layer.r#type {
            Some(number) => v1_kind(number),
            None => {
                check.push_hint(
                    code::MISSING,
                    "",
                    "the layer has no `type`",
                    "add e.g. `type: CONVOLUTION`",
                );
                String::new()
            }
        };
        check_rules(&mut check, &layer.include, "include");
        check_rules(&mut check, &layer.exclude, "exclude");
        let params = Params {
            conv: layer.convolution_param.as_ref(),
            pool: layer.pooling_param.as_ref(),
            inner_product: layer.inner_product_param.as_ref(),
            relu: layer.relu_param.as_ref(),
            dropout: layer.dropout_param.as_ref(),
            batch_norm: None,
            scale: None,
        };
        out.layers.push(lower_layer(
            &mut check,
            layer.name.clone().unwrap_or_default(),
            kind,
            &layer.bottom,
            &layer.top,
            phase_of(&layer.include, &layer.exclude),
            &params,
        ));
    }
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(issues)
    }
}

/// Dimensions that must each be at least 1 (and fit a `usize`).
fn dims(check: &mut Checker<'_>, field: &str, values: &[i64]) -> Option<Vec<usize>> {
    let mut out = Vec::with_capacity(values.len());
    let mut ok = true;
    for (idx, &value) in values.iter().enumerate() {
        match usize::try_from(value) {
            Ok(dim) if dim >= 1 => out.push(dim),
            _ => {
                check.push(
                    code::OUT_OF_RANGE,
                    format!("{field}[{idx}]"),
                    format!("`dim` must be a positive whole number, found {value}"),
                );
                ok = false;
            }
        }
    }
    if values.is_empty() {
        check.push(code::MISSING, field, "the shape has no `dim` values");
        ok = false;
    }
    ok.then_some(out)
}

/// The net-level (deprecated) input declaration.
fn net_input(net: &proto::NetParameter, issues: &mut Vec<Issue>) -> Option<InputDecl> {
    let mut check = Checker {
        issues,
        layer: None,
    };
    let name = match net.input.as_slice() {
        [] => {
            if !net.input_shape.is_empty() || !net.input_dim.is_empty() {
                check.push_hint(
                    code::NET_SHAPE,
                    if net.input_shape.is_empty() {
                        "input_dim"
                    } else {
                        "input_shape"
                    },
                    "an input shape is given without an `input:` name",
                    "add `input: \"data\"` before it",
                );
            }
            return None;
        }
        [name] => name.clone(),
        [_, ..] => {
            check.push_hint(
                code::NET_SHAPE,
                "input[1]",
                "the net declares more than one input",
                "only nets with one input can be imported",
            );
            return None;
        }
    };
    let dims = if let Some(shape) = net.input_shape.first() {
        if net.input_shape.len() > 1 {
            check.push(
                code::NET_SHAPE,
                "input_shape[1]",
                "more than one `input_shape` for one input",
            );
            return None;
        }
        if !net.input_dim.is_empty() {
            check.push(
                code::TWICE,
                "input_dim",
                "both `input_shape` and `input_dim` are given",
            );
            return None;
        }
        dims(&mut check, "input_shape[0].dim", &shape.dim)?
    } else if !net.input_dim.is_empty() {
        if net.input_dim.len() != 4 {
            check.push_hint(
                code::NET_SHAPE,
                "input_dim",
                format!(
                    "`input_dim` needs 4 values (num, channels, height, width), found {}",
                    net.input_dim.len()
                ),
                "or give `input_shape { dim: 1 dim: 3 dim: 32 dim: 32 }`",
            );
            return None;
        }
        let wide: Vec<i64> = net.input_dim.iter().map(|&d| i64::from(d)).collect();
        dims(&mut check, "input_dim", &wide)?
    } else {
        check.push_hint(
            code::MISSING,
            "input[0]",
            format!("the input `{name}` has no shape"),
            "add `input_shape { dim: 1 dim: 3 dim: 32 dim: 32 }`",
        );
        return None;
    };
    Some(InputDecl {
        name,
        dims,
        span: None,
    })
}

/// The input an `Input` layer declares.
fn input_layer(
    check: &mut Checker<'_>,
    layer: &CaffeLayer,
    param: Option<&proto::InputParameter>,
) -> Option<InputDecl> {
    let Some(name) = layer.tops.first() else {
        check.push(code::MISSING, "", "the `Input` layer has no `top`");
        return None;
    };
    if layer.tops.len() > 1 {
        check.push_hint(
            code::NET_SHAPE,
            "top[1]",
            "the `Input` layer declares more than one input",
            "only nets with one input can be imported",
        );
        return None;
    }
    let Some(shape) = param.and_then(|p| p.shape.first()) else {
        check.push_hint(
            code::MISSING,
            "input_param",
            "the `Input` layer has no shape",
            "add `input_param { shape { dim: 1 dim: 3 dim: 32 dim: 32 } }`",
        );
        return None;
    };
    let dims = dims(check, "input_param.shape[0].dim", &shape.dim)?;
    Some(InputDecl {
        name: name.clone(),
        dims,
        span: None,
    })
}

#[allow(clippy::too_many_arguments)]
fn lower_layer(
    check: &mut Checker<'_>,
    name: String,
    kind: String,
    bottoms: &[String],
    tops: &[String],
    phase: Option<Phase>,
    params: &Params<'_>,
) -> CaffeLayer {
    let mut layer = CaffeLayer {
        name,
        kind,
        bottoms: bottoms.to_vec(),
        tops: tops.to_vec(),
        phase,
        conv: None,
        pool: None,
        inner_product: None,
        relu: None,
        dropout: None,
        batch_norm: None,
        scale: None,
        span: None,
        blobs: Vec::new(),
    };
    match layer.kind.as_str() {
        "Convolution" => layer.conv = conv(check, params.conv),
        "Pooling" => layer.pool = pool(check, params.pool),
        "InnerProduct" => layer.inner_product = inner_product(check, params.inner_product),
        "ReLU" => {
            let slope = params.relu.and_then(|p| p.negative_slope).unwrap_or(0.0);
            layer.relu = Some(check.finite("relu_param.negative_slope", "negative_slope", slope));
        }
        "Dropout" => {
            let ratio = params.dropout.and_then(|p| p.dropout_ratio).unwrap_or(0.5);
            if !(0.0..1.0).contains(&ratio) {
                check.push(
                    code::OUT_OF_RANGE,
                    "dropout_param.dropout_ratio",
                    format!("`dropout_ratio` must be at least 0 and below 1, found {ratio}"),
                );
            }
            layer.dropout = Some(ratio);
        }
        "BatchNorm" => {
            let param = params.batch_norm;
            let eps = param.and_then(|p| p.eps).unwrap_or(1e-5);
            if !(eps.is_finite() && eps >= 0.0) {
                check.push(
                    code::OUT_OF_RANGE,
                    "batch_norm_param.eps",
                    format!("`eps` must be a finite number, 0 or more, found {eps}"),
                );
            }
            layer.batch_norm = Some(BatchNormParams {
                use_global_stats: param.and_then(|p| p.use_global_stats),
                eps,
            });
        }
        "Scale" => {
            let param = params.scale;
            let num_axes = param.and_then(|p| p.num_axes).unwrap_or(1);
            if num_axes < -1 {
                check.push(
                    code::OUT_OF_RANGE,
                    "scale_param.num_axes",
                    format!("`num_axes` must be -1 or more, found {num_axes}"),
                );
            }
            layer.scale = Some(ScaleParams {
                bias_term: param.and_then(|p| p.bias_term).unwrap_or(false),
                axis: param.and_then(|p| p.axis).unwrap_or(1),
                num_axes,
            });
        }
        _ => {}
    }
    layer
}

fn conv(
    check: &mut Checker<'_>,
    param: Option<&proto::ConvolutionParameter>,
) -> Option<ConvParams> {
    let Some(p) = param else {
        check.push_hint(
            code::MISSING,
            "convolution_param",
            "the convolution has no `convolution_param`",
            "add `convolution_param { num_output: 32 kernel_size: 3 }`",
        );
        return None;
    };
    const PREFIX: &str = "convolution_param";
    let num_output = match p.num_output {
        Some(n) => Some(check.positive("convolution_param.num_output", "num_output", n)),
        None => {
            check.push_hint(
                code::MISSING,
                "convolution_param.num_output",
                "`convolution_param` has no `num_output`",
                "add `num_output: 32` (the number of output channels)",
            );
            None
        }
    };
    let kernel = if p.kernel_size.is_empty() && p.kernel_h.is_none() && p.kernel_w.is_none() {
        check.push_hint(
            code::MISSING,
            "convolution_param.kernel_size",
            "`convolution_param` has no `kernel_size`",
            "add `kernel_size: 3`, or `kernel_h` and `kernel_w`",
        );
        None
    } else {
        let names = ("kernel_size", "kernel", true);
        check.pair(PREFIX, names, &p.kernel_size, p.kernel_h, p.kernel_w, 1, 1)
    };
    let names = ("stride", "stride", true);
    let stride = check.pair(PREFIX, names, &p.stride, p.stride_h, p.stride_w, 1, 1);
    let pad = check.pair(PREFIX, ("pad", "pad", true), &p.pad, p.pad_h, p.pad_w, 0, 0);
    let names = ("dilation", "dilation", true);
    let dilation = check.pair(PREFIX, names, &p.dilation, None, None, 1, 1);
    let group = check.positive("convolution_param.group", "group", p.group.unwrap_or(1));
    Some(ConvParams {
        num_output: num_output?,
        kernel: kernel?,
        stride: stride?,
        pad: pad?,
        group,
        bias_term: p.bias_term.unwrap_or(true),
        dilation: dilation?,
    })
}

fn pool(check: &mut Checker<'_>, param: Option<&proto::PoolingParameter>) -> Option<PoolParams> {
    let Some(p) = param else {
        check.push_hint(
            code::MISSING,
            "pooling_param",
            "the pooling has no `pooling_param`",
            "add `pooling_param { pool: MAX kernel_size: 2 stride: 2 }`",
        );
        return None;
    };
    let method = match p.pool.unwrap_or(0) {
        0 => Some(PoolMethod::Max),
        1 => Some(PoolMethod::Ave),
        2 => Some(PoolMethod::Stochastic),
        other => {
            check.push(
                code::UNKNOWN_NAME,
                "pooling_param.pool",
                format!("`pool` must be MAX, AVE or STOCHASTIC, found {other}"),
            );
            None
        }
    };
    let round_mode = match p.round_mode.unwrap_or(0) {
        0 => Some(RoundMode::Ceil),
        1 => Some(RoundMode::Floor),
        other => {
            check.push(
                code::UNKNOWN_NAME,
                "pooling_param.round_mode",
                format!("`round_mode` must be CEIL or FLOOR, found {other}"),
            );
            None
        }
    };
    let global_pooling = p.global_pooling.unwrap_or(false);
    let has_kernel = p.kernel_size.is_some() || p.kernel_h.is_some() || p.kernel_w.is_some();
    let kernel = if global_pooling {
        if has_kernel {
            check.push_hint(
                code::TWICE,
                "pooling_param.kernel_size",
                "a global pooling also gives a kernel size",
                "remove the kernel size: a global pooling's window is the whole map",
            );
            return None;
        }
        None
    } else if !has_kernel {
        check.push_hint(
            code::MISSING,
            "pooling_param.kernel_size",
            "`pooling_param` has no `kernel_size`",
            "add `kernel_size: 2`, or `global_pooling: true`",
        );
        return None;
    } else {
        let names = ("kernel_size", "kernel");
        Some(check.pool_pair(names, p.kernel_size, (p.kernel_h, p.kernel_w), 1, 1)?)
    };
    let stride = check.pool_pair(
        ("stride", "stride"),
        p.stride,
        (p.stride_h, p.stride_w),
        1,
        1,
    );
    let pad = check.pool_pair(("pad", "pad"), p.pad, (p.pad_h, p.pad_w), 0, 0);
    Some(PoolParams {
        method: method?,
        kernel,
        stride: stride?,
        pad: pad?,
        global_pooling,
        round_mode: round_mode?,
    })
}

fn inner_product(
    check: &mut Checker<'_>,
    param: Option<&proto::InnerProductParameter>,
) -> Option<InnerProductParams> {
    let Some(num_output) = param.and_then(|p| p.num_output) else {
        check.push_hint(
            code::MISSING,
            if param.is_some() {
                "inner_product_param.num_output"
            } else {
                "inner_product_param"
            },
            "the inner product has no `num_output`",
            "add `inner_product_param { num_output: 10 }`",
        );
        return None;
    };
    let num_output = check.positive("inner_product_param.num_output", "num_output", num_output);
    Some(InnerProductParams {
        num_output,
        bias_term: param.and_then(|p| p.bias_term).unwrap_or(true),
        transpose: param.and_then(|p| p.transpose).unwrap_or(false),
        axis: param.and_then(|p| p.axis).unwrap_or(1),
    })
}

/// The messages of a net written back in the V2 syntax, for
/// [`super::encode_caffemodel`]; lowering the result gives the same net.
pub(crate) fn raise(net: &CaffeNet) -> proto::NetParameter {
    let has_input_layer = net.layers.iter().any(|layer| layer.kind == "Input");
    let mut out = proto::NetParameter {
        name: Some(net.name.clone()),
        ..Default::default()
    };
    if let (Some(input), false) = (&net.input, has_input_layer) {
        out.input.push(input.name.clone());
        out.input_shape.push(shape_of(&input.dims));
    }
    for layer in &net.layers {
        let rule = |phase: Phase| proto::NetStateRule {
            phase: Some(match phase {
                Phase::Train => proto::Phase::Train as i32,
                Phase::Test => proto::Phase::Test as i32,
            }),
        };
        let input_param = match (&net.input, layer.kind.as_str()) {
            (Some(input), "Input") if layer.tops.first() == Some(&input.name) => {
                Some(proto::InputParameter {
                    shape: vec![shape_of(&input.dims)],
                })
            }
            _ => None,
        };
        out.layer.push(proto::LayerParameter {
            name: Some(layer.name.clone()),
            r#type: Some(layer.kind.clone()),
            bottom: layer.bottoms.clone(),
            top: layer.tops.clone(),
            blobs: layer.blobs.iter().map(blob_proto).collect(),
            include: layer.phase.map(rule).into_iter().collect(),
            exclude: Vec::new(),
            convolution_param: layer.conv.as_ref().map(conv_proto),
            dropout_param: layer.dropout.map(|ratio| proto::DropoutParameter {
                dropout_ratio: Some(ratio),
            }),
            inner_product_param: layer.inner_product.map(|p| proto::InnerProductParameter {
                num_output: Some(to_u32(p.num_output)),
                bias_term: Some(p.bias_term),
                axis: Some(p.axis),
                transpose: Some(p.transpose),
            }),
            pooling_param: layer.pool.as_ref().map(pool_proto),
            relu_param: layer.relu.map(|slope| proto::ReLuParameter {
                negative_slope: Some(slope),
            }),
            batch_norm_param: layer.batch_norm.map(|p| proto::BatchNormParameter {
                use_global_stats: p.use_global_stats,
                eps: Some(p.eps),
            }),
            scale_param: layer.scale.map(|p| proto::ScaleParameter {
                axis: Some(p.axis),
                num_axes: Some(p.num_axes),
                bias_term: Some(p.bias_term),
            }),
            input_param,
        });
    }
    out
}

/// Saturating: a lowered value always fits, a hand-built one may not.
fn to_u32(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

fn shape_of(dims: &[usize]) -> proto::BlobShape {
    proto::BlobShape {
        dim: dims
            .iter()
            .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
            .collect(),
    }
}

fn conv_proto(p: &ConvParams) -> proto::ConvolutionParameter {
    // A pair is written as one value when square, else as `_h` and `_w`
    // (dilation has no `_h`/`_w` form: two values).
    let split = |(h, w): (usize, usize)| -> (Vec<u32>, Option<u32>, Option<u32>) {
        if h == w {
            (vec![to_u32(h)], None, None)
        } else {
            (Vec::new(), Some(to_u32(h)), Some(to_u32(w)))
        }
    };
    let (kernel_size, kernel_h, kernel_w) = split(p.kernel);
    let (stride, stride_h, stride_w) = split(p.stride);
    let (pad, pad_h, pad_w) = split(p.pad);
    let dilation = if p.dilation.0 == p.dilation.1 {
        vec![to_u32(p.dilation.0)]
    } else {
        vec![to_u32(p.dilation.0), to_u32(p.dilation.1)]
    };
    proto::ConvolutionParameter {
        num_output: Some(to_u32(p.num_output)),
        bias_term: Some(p.bias_term),
        pad,
        kernel_size,
        stride,
        dilation,
        pad_h,
        pad_w,
        kernel_h,
        kernel_w,
        stride_h,
        stride_w,
        group: Some(to_u32(p.group)),
    }
}

fn pool_proto(p: &PoolParams) -> proto::PoolingParameter {
    let split = |(h, w): (usize, usize)| -> (Option<u32>, Option<u32>, Option<u32>) {
        if h == w {
            (Some(to_u32(h)), None, None)
        } else {
            (None, Some(to_u32(h)), Some(to_u32(w)))
        }
    };
    let (kernel_size, kernel_h, kernel_w) = p.kernel.map(split).unwrap_or((None, None, None));
    let (stride, stride_h, stride_w) = split(p.stride);
    let (pad, pad_h, pad_w) = split(p.pad);
    proto::PoolingParameter {
        pool: Some(match p.method {
            PoolMethod::Max => proto::PoolMethod::Max,
            PoolMethod::Ave => proto::PoolMethod::Ave,
            PoolMethod::Stochastic => proto::PoolMethod::Stochastic,
        } as i32),
        pad,
        pad_h,
        pad_w,
        kernel_size,
        kernel_h,
        kernel_w,
        stride,
        stride_h,
        stride_w,
        global_pooling: Some(p.global_pooling),
        round_mode: Some(match p.round_mode {
            RoundMode::Ceil => proto::RoundMode::Ceil,
            RoundMode::Floor => proto::RoundMode::Floor,
        } as i32),
    }
}

/// A blob as Caffe writes it: a `BlobShape` and packed floats, or for a
/// legacy blob the four num/channels/height/width values.
fn blob_proto(blob: &Blob) -> proto::BlobProto {
    let mut out = proto::BlobProto {
        data: blob.data.clone(),
        ..Default::default()
    };
    if blob.legacy && blob.shape.len() <= 4 {
        let [num, channels, height, width] = legacy_padded(&blob.shape);
        let narrow = |v: usize| i32::try_from(v).unwrap_or(i32::MAX);
        out.num = Some(narrow(num));
        out.channels = Some(narrow(channels));
        out.height = Some(narrow(height));
        out.width = Some(narrow(width));
    } else {
        out.shape = Some(shape_of(&blob.shape));
    }
    out
}
