//! Emitter of conv groups (`[dropout] conv [+ bias] [+ activation]`): three
//! implicit-GEMM kernels sharing one struct of constants.
//!
//! - `NAME_forward`: the conv with bias and activation as its epilogue and
//!   the input dropout applied where it loads its input;
//! - `NAME_backward_data`: the gradient at the group's input, with the
//!   activation's mask (ReLU rule as an argument) applied on load and the
//!   dropout's mask in the epilogue; where the group below is a conv group
//!   too, its activation's rule follows in the epilogue ([`ConvLinks`]), and
//!   that group's kernels load their gradient as it is;
//! - `NAME_backward_weights`: the weight and bias gradients as a split-K
//!   GEMM whose last block per output tile adds the splits' partial sums in
//!   split order (one launch, deterministic).
//!
//! Invariant: the three kernels see the same [`ConvGroup`], so their
//! buffers, tiles and dropout arguments agree by construction.

use super::fuse::{FusedGroup, Fusion, GroupKind};
use super::generator::Gen;
use super::text::{act_code, act_text, c_float, window_text};
use super::tiling::{
    elementwise, shared_bytes, tile, weight_gradient_shared_bytes, weight_split_k, weights_tile,
    NOMINAL_BATCH, TILE_K,
};
use super::{param, Constants, Item, KernelDef, Param, Precision};
use plan::device::{
    Arg, DType, Extent, GemmPart, GemmShape, Grid, KernelRole, Launch, SplitK,
    NOMINAL_MULTIPROCESSORS,
};
use plan::{Activation, Op, Shape, Window};

/// Whether a conv's backward pass needs its pre-activation (a negative
/// slope flips signs; see runtime::cpu::activation).
fn keeps_pre(act: Activation) -> bool {
    matches!(act, Activation::LeakyRelu { slope } if slope < 0.0)
}

/// What a conv group does for the conv groups beside it, so that their
/// gathers load values as stored.
///
/// The activation's rule: where a conv group's input is the output of another conv group (with
/// an activation that needs no pre-activation), the upper group's
/// backward-data kernel applies the lower group's activation rule in its
/// epilogue, to the gradient it writes; the lower group's backward-data and
/// weight-gradient kernels then load that gradient as it is (`DY_MASKED`):
/// one value per gathered element instead of two, and no arithmetic on the
/// loaded values before the tile step. The rule is applied once per value
/// either way, to the same operands, so the results are bit for bit those
/// of applying it on load.
///
/// The input dropout: where a conv group's fused input dropout follows
/// another conv group, the lower group's forward epilogue applies it in
/// training (the same draw per value, `v * scale` or 0), once per value
/// instead of once per gathered element, and the upper group's forward and
/// weight-gradient gathers load the input as stored (`IN_DROPPED`). The
/// stored activation is then the dropped one; the lower group's rule,
/// applied in the upper backward-data epilogue after the dropout's mask,
/// sees the same sign wherever the gradient is not already zero.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConvLinks {
    /// The activation of the conv group below, whose rule this group's
    /// backward-data epilogue applies.
    pub in_act: Option<Activation>,
    /// Whether the group above applies this group's activation rule.
    pub dy_masked: bool,
    /// The input dropout of the conv group above (its drop probability and
    /// layer), which this group's forward epilogue applies in training, so
    /// that the group above gathers its input as stored.
    pub out_dropout: Option<(f32, usize)>,
    /// Whether the group below applies this group's input dropout
    /// (`IN_DROPPED`): the forward and weight-gradient gathers load the
    /// input as stored; the backward-data epilogue still applies the mask to
    /// the gradient it writes.
    pub in_dropped: bool,
    /// The layers at whose output a visualisation signal is this group's
    /// gradient (its conv, and a dropout the group above absorbed): such a
    /// signal gets the rule first (`NAME_mask_signal`), since no kernel
    /// above wrote it.
    pub signal_layers: Vec<usize>,
}

/// Per group of `fusion`, its [`ConvLinks`] (the default for other groups).
pub fn conv_links(fusion: &Fusion) -> Vec<ConvLinks> {
    let mut links = vec![ConvLinks::default(); fusion.groups.len()];
    for (upper, pair) in fusion
        .groups
        .windows(2)
        .enumerate()
        .map(|(i, p)| (i + 1, p))
    {
        let (GroupKind::Conv { act, .. }, GroupKind::Conv { input_dropout, .. }) =
            (pair[0].kind, pair[1].kind)
        else {
            continue;
        };
        if let Some(p) = input_dropout {
            links[upper - 1].out_dropout = Some((p, pair[1].layers[0]));
            links[upper].in_dropped = true;
        }
        if act == Activation::None || keeps_pre(act) {
            continue;
        }
        let conv_idx = *pair[0].layers.last().expect("groups are not empty");
        links[upper].in_act = Some(act);
        let lower = &mut links[upper - 1];
        lower.dy_masked = true;
        lower.signal_layers.push(conv_idx);
        if input_dropout.is_some() {
            lower.signal_layers.push(pair[1].layers[0]);
        }
    }
    links
}

/// The phases of a convolution's backward-data GEMM (the prelude's
/// `DataPhase`; blockIdx.z = `py * SW + px`): per phase, the input pixels
/// it holds and the window taps that reach them. Stride 1: one phase, every
/// pixel and every tap.
fn phases(i: Shape, window: Window) -> Vec<(u64, u64)> {
    let count = |size: usize, first: usize, stride: usize| {
        size.saturating_sub(first).div_ceil(stride.max(1)) as u64
    };
    let (sh, sw) = (window.stride_h.max(1), window.stride_w.max(1));
    let mut out = Vec::with_capacity(sh * sw);
    for py in 0..sh {
        for px in 0..sw {
            let (rh, rw) = ((py + window.pad.top) % sh, (px + window.pad.left) % sw);
            out.push((
                count(i.h, py, sh) * count(i.w, px, sw),
                count(window.kh, rh, sh) * count(window.kw, rw, sw),
            ));
        }
    }
    out
}

/// What a conv group's kernels share: shapes, tiles, buffers and arguments.
struct ConvGroup<'a> {
    id: &'a str,
    layers: &'a [usize],
    refs: String,
    conv_idx: usize,
    /// The layer index of the input dropout, if the group has one.
    dropout_idx: Option<usize>,
    input_dropout: Option<f32>,
    layer_name: String,
    i: Shape,
    o: Shape,
    window: Window,
    act: Activation,
    bias: bool,
    keep_pre: bool,
    geometry: String,
    /// Per-thread tiles of the forward, backward-data and backward-weights
    /// GEMMs.
    forward_tile: (u64, u64),
    data_tile: (u64, u64),
    weights_tile: (u64, u64),
    /// The weight gradient's split-K rule and its tile grid (x, y).
    split_k: SplitK,
    weight_grid: (u64, u64),
    /// Rows of the weight matrix: window taps times input channels.
    rows_w: u64,
    weight_len: u64,
    macs: u64,
    in_len: u64,
    out_len: u64,
    links: ConvLinks,
    /// The group's input (before the dropout), its output, and the buffer
    /// the backward kernels read the activation's mask from.
    x: Arg,
    y_name: String,
    pre_name: String,
    f_name: String,
    weight: Arg,
    bias_arg: Arg,
}

impl ConvGroup<'_> {
    /// Whether the forward and backward-data kernels load weights four
    /// output channels at a time (`W_VEC`): `C_out` a multiple of 4 and the
    /// weight 16-byte aligned in the parameter buffer (its offset a
    /// multiple of 4 values).
    fn weight_vec(&self) -> bool {
        let Arg::Buffer { offset, .. } = &self.weight else {
            return false;
        };
        self.o.c.is_multiple_of(4) && offset.is_multiple_of(4)
    }

    /// The dropout's key and mode, for kernels of a group with a dropout.
    fn dropout_params(&self, params: &mut Vec<Param>) {
        if let Some(d) = self.dropout_idx {
            params.push(param("u64", "drop_key", Arg::DropoutKey { layer: d }));
            params.push(param("int", "training", Arg::Training));
        }
    }

    /// The forward kernel's dropout parameters: the group's own input
    /// dropout's, and the key of the dropout it applies for the group above.
    fn forward_dropout_params(&self, params: &mut Vec<Param>) {
        self.dropout_params(params);
        if let Some((_, d)) = self.links.out_dropout {
            params.push(param("u64", "out_drop_key", Arg::DropoutKey { layer: d }));
            if self.dropout_idx.is_none() {
                params.push(param("int", "training", Arg::Training));
            }
        }
    }

    /// The forward call's dropout arguments (`drop_key, training,
    /// out_drop_key`).
    fn forward_dropout_call(&self) -> String {
        let own = if self.dropout_idx.is_some() {
            "drop_key"
        } else {
            "0ULL"
        };
        let (training, out) = match (self.dropout_idx, self.links.out_dropout) {
            (_, Some(_)) => ("training", "out_drop_key"),
            (Some(_), None) => ("training", "0ULL"),
            (None, None) => ("0", "0ULL"),
        };
        format!("{own}, {training}, {out}")
    }

    /// The implicit GEMM of the group's kernel of `role` in tiles of
    /// `16 tm x 16 tn`: forward rows are output pixels, weight-gradient rows
    /// the weights' (kh, kw, c_in) over the batch's output pixels, and
    /// backward data one GEMM per phase ([`phases`]) of the input pixels
    /// over the taps that reach them.
    fn gemm(&self, role: KernelRole, (tm, tn): (u64, u64)) -> GemmShape {
        let (i, o) = (self.i, self.o);
        let (parts, cols) = match role {
            KernelRole::Forward => (
                vec![GemmPart {
                    rows: Extent::per_image((o.h * o.w) as u64),
                    depth: Extent::fixed(self.rows_w),
                }],
                o.c,
            ),
            KernelRole::BackwardData => (
                phases(i, self.window)
                    .into_iter()
                    .map(|(pixels, taps)| GemmPart {
                        rows: Extent::per_image(pixels),
                        depth: Extent::fixed(taps * o.c as u64),
                    })
                    .collect(),
                i.c,
            ),
            _ => (
                vec![GemmPart {
                    rows: Extent::fixed(self.rows_w),
                    depth: Extent::per_image((o.h * o.w) as u64),
                }],
                o.c,
            ),
        };
        GemmShape {
            parts,
            cols: cols as u64,
            tile_rows: 16 * tm,
            tile_cols: 16 * tn,
            tile_depth: TILE_K,
            useful_flops: Extent::per_image(2 * self.macs),
        }
    }

    /// The backward kernels' `f` parameter (the activation whose mask they
    /// apply on load), unless their gradient arrives masked.
    fn f_param(&self) -> Option<Param> {
        (!self.links.dy_masked).then(|| {
            param(
                "const float* __restrict__",
                "f",
                Arg::buffer(self.f_name.clone()),
            )
        })
    }

    fn f_arg(&self) -> &'static str {
        if self.links.dy_masked {
            "nullptr"
        } else {
            "f"
        }
    }

    /// Values the backward kernels read per output value: the gradient, and
    /// the activation unless the gradient arrives masked.
    fn dy_reads(&self) -> u64 {
        if self.links.dy_masked {
            1
        } else {
            2
        }
    }

    /// How a backward kernel takes the gradient at the output (`rule`:
    /// whether it applies the pass's ReLU rule or backprop's).
    fn dy_text(&self, act: Activation, rule: bool) -> String {
        if self.links.dy_masked {
            format!(
                "the gradient loaded as stored (the conv above applied the {} mask)",
                act_text(act)
            )
        } else {
            format!(
                "{} mask applied on load{}",
                act_text(act),
                if rule {
                    " with the ReLU rule `rule`"
                } else {
                    ""
                }
            )
        }
    }

    fn dropout_call(&self) -> &'static str {
        if self.dropout_idx.is_some() {
            "drop_key, training"
        } else {
            "0ULL, 0"
        }
    }
}

impl Gen<'_> {
    /// The forward, backward and visualisation kernels of a conv group;
    /// returns its training backward launches.
    pub fn conv(
        &mut self,
        id: &str,
        group: &FusedGroup,
        first_param_layer: usize,
        links: ConvLinks,
    ) -> Vec<Launch> {
        let GroupKind::Conv {
            act,
            bias,
            input_dropout,
        } = group.kind
        else {
            unreachable!("conv is called for conv groups");
        };
        let conv = self.conv_group(id, group, act, bias, input_dropout, links);
        self.push_conv_constants(&conv);
        if conv.keep_pre {
            self.layout.add(
                &conv.pre_name,
                DType::F32,
                Extent::per_image(conv.o.len() as u64),
                format!("pre-activation of {}", conv.layer_name),
            );
        }
        self.conv_forward(&conv);
        let backward_data = self.conv_backward_data(&conv);
        self.add_visual(conv.conv_idx, backward_data);
        self.conv_mask_signal(&conv);
        let mut backward = self.conv_backward_weights(&conv);
        if conv.conv_idx > first_param_layer {
            backward.push(self.launch(backward_data));
        }
        backward
    }

    /// Shapes, tiles, split-K count and buffers of a conv group; grows the
    /// split-K buffer to hold its partial sums.
    fn conv_group<'a>(
        &mut self,
        id: &'a str,
        group: &'a FusedGroup,
        act: Activation,
        bias: bool,
        input_dropout: Option<f32>,
        links: ConvLinks,
    ) -> ConvGroup<'a> {
        let plan = self.plan;
        let conv_idx = *group
            .layers
            .last()
            .expect("a conv group ends with its conv");
        let dropout_idx = input_dropout.map(|_| group.layers[0]);
        let layer = &plan.layers[conv_idx];
        let Op::Conv { window, .. } = layer.op else {
            unreachable!("the last layer of a conv group is a conv");
        };
        let (i, o) = (layer.in_shape, layer.out_shape);
        let taps = (window.kh * window.kw) as u64;
        let rows_w = taps * i.c as u64;
        let weights_tile = weights_tile(self.precision, rows_w, o.c as u64);
        let (wtm, wtn) = weights_tile;
        let weight_grid = (rows_w.div_ceil(16 * wtm), (o.c as u64).div_ceil(16 * wtn));
        let split_k = weight_split_k(weight_grid.0 * weight_grid.1, (o.h * o.w) as u64);
        let weight_len = rows_w * o.c as u64;
        self.partials_len = self
            .partials_len
            .max(u64::from(split_k.max) * (weight_len + o.c as u64));
        self.tile_counters = self.tile_counters.max(weight_grid.0 * weight_grid.1);
        let keep_pre = keeps_pre(act);
        let y_name = self.layout.act[conv_idx + 1].clone();
        let pre_name = format!("{}.pre", layer.name);
        let f_name = if keep_pre {
            pre_name.clone()
        } else {
            y_name.clone()
        };
        let (_, _, refs) = self.layer_refs(&group.layers);
        ConvGroup {
            id,
            layers: &group.layers,
            refs,
            conv_idx,
            dropout_idx,
            input_dropout,
            layer_name: layer.name.clone(),
            i,
            o,
            window,
            act,
            bias,
            keep_pre,
            links,
            geometry: format!("{id}_geometry"),
            forward_tile: tile(NOMINAL_BATCH * (o.h * o.w) as u64, o.c as u64),
            data_tile: tile(NOMINAL_BATCH * (i.h * i.w) as u64, i.c as u64),
            weights_tile,
            split_k,
            weight_grid,
            rows_w,
            weight_len,
            macs: o.len() as u64 * rows_w,
            in_len: i.len() as u64,
            out_len: o.len() as u64,
            x: Arg::buffer(self.layout.act[dropout_idx.unwrap_or(conv_idx)].clone()),
            y_name,
            pre_name,
            f_name,
            weight: Arg::Buffer {
                name: "params".into(),
                offset: self.layout.param_offset(&format!("{}.weight", layer.name)),
            },
            bias_arg: Arg::Buffer {
                name: "params".into(),
                offset: self.layout.param_offset(&format!("{}.bias", layer.name)),
            },
        }
    }

    /// The struct of compile-time constants the three kernels instantiate.
    fn push_conv_constants(&mut self, conv: &ConvGroup) {
        let ConvGroup {
            id, i, o, window, ..
        } = *conv;
        let (act_name, slope) = act_code(conv.act);
        let (in_act_name, in_slope) = act_code(conv.links.in_act.unwrap_or(Activation::None));
        let int = |v: usize| v.to_string();
        let [(tm, tn), (btm, btn), (wtm, wtn)] =
            [conv.forward_tile, conv.data_tile, conv.weights_tile];
        self.items.push(Item::Constants(Constants {
            name: conv.geometry.clone(),
            comment: vec![format!(
                "{id}: conv {} -> {}, window {}, {}{}",
                i,
                o,
                window_text(&window),
                if conv.bias { "bias, " } else { "" },
                act_text(conv.act),
            )],
            fields: vec![
                ("int", "IH", int(i.h)),
                ("int", "IW", int(i.w)),
                ("int", "IC", int(i.c)),
                ("int", "OH", int(o.h)),
                ("int", "OW", int(o.w)),
                ("int", "OC", int(o.c)),
                ("int", "KH", int(window.kh)),
                ("int", "KW", int(window.kw)),
                ("int", "SH", int(window.stride_h)),
                ("int", "SW", int(window.stride_w)),
                ("int", "PT", int(window.pad.top)),
                ("int", "PL", int(window.pad.left)),
                ("int", "ACT", act_name.to_string()),
                ("float", "SLOPE", c_float(slope)),
                ("bool", "BIAS", conv.bias.to_string()),
                ("bool", "DROPOUT", conv.input_dropout.is_some().to_string()),
                (
                    "float",
                    "DROP_P",
                    c_float(conv.input_dropout.unwrap_or(0.0)),
                ),
                ("bool", "KEEP_PRE", conv.keep_pre.to_string()),
                ("bool", "DY_MASKED", conv.links.dy_masked.to_string()),
                ("bool", "IN_DROPPED", conv.links.in_dropped.to_string()),
                (
                    "bool",
                    "OUT_DROPOUT",
                    conv.links.out_dropout.is_some().to_string(),
                ),
                (
                    "float",
                    "OUT_DROP_P",
                    c_float(conv.links.out_dropout.map_or(0.0, |(p, _)| p)),
                ),
                ("int", "IN_ACT", in_act_name.to_string()),
                ("float", "IN_SLOPE", c_float(in_slope)),
                ("bool", "W_VEC", conv.weight_vec().to_string()),
                ("int", "TM", tm.to_string()),
                ("int", "TN", tn.to_string()),
                ("int", "BTM", btm.to_string()),
                ("int", "BTN", btn.to_string()),
                ("int", "WTM", wtm.to_string()),
                ("int", "WTN", wtn.to_string()),
            ],
        }));
    }

    /// `NAME_forward`, launched by training and inference.
    fn conv_forward(&mut self, conv: &ConvGroup) {
        let ConvGroup {
            id,
            i,
            o,
            window,
            act,
            bias,
            keep_pre,
            in_len,
            out_len,
            ..
        } = *conv;
        let (tm, tn) = conv.forward_tile;
        let mut params = vec![
            param("const float* __restrict__", "x", conv.x.clone()),
            param("const float* __restrict__", "w", conv.weight.clone()),
        ];
        if bias {
            params.push(param(
                "const float* __restrict__",
                "b",
                conv.bias_arg.clone(),
            ));
        }
        params.push(param(
            "float* __restrict__",
            "y",
            Arg::buffer(conv.y_name.clone()),
        ));
        if keep_pre {
            params.push(param(
                "float* __restrict__",
                "pre",
                Arg::buffer(conv.pre_name.clone()),
            ));
        }
        params.push(param("int", "n", Arg::Batch));
        conv.forward_dropout_params(&mut params);
        let epilogue = u64::from(bias) + u64::from(!matches!(act, Activation::None));
        let weight_bytes = 4 * (conv.weight_len + if bias { o.c as u64 } else { 0 });
        let mut dropout_text = conv
            .input_dropout
            .map(|p| {
                if conv.links.in_dropped {
                    format!("; input dropout p={p:?} applied by the conv below (training)")
                } else {
                    format!("; input dropout p={p:?} applied on load")
                }
            })
            .unwrap_or_default();
        if let Some((p, _)) = conv.links.out_dropout {
            dropout_text.push_str(&format!(
                "; the dropout p={p:?} of the conv above applied in the epilogue (training)"
            ));
        }
        let forward = self.add_kernel(KernelDef {
            spec: self.spec(
                &format!("{id}_forward"),
                KernelRole::Forward,
                id,
                conv.layers,
                Grid {
                    x_items: Extent::per_image((o.h * o.w) as u64),
                    x_items_per_block: 16 * tm,
                    y: (o.c as u64).div_ceil(16 * tn) as u32,
                    z: 1,
                    split_k: None,
                },
                shared_bytes(self.precision, tm, tn),
                0,
                Extent::per_image(2 * conv.macs + epilogue * out_len),
                Extent {
                    per_image: 4 * (in_len + out_len * (1 + u64::from(keep_pre))),
                    fixed: weight_bytes,
                },
            ),
            comment: vec![
                format!("{id}_forward: {}", conv.refs),
                format!(
                    "conv {} -> {}, window {}, + {}{}{dropout_text}",
                    i,
                    o,
                    window_text(&window),
                    if bias { "bias + " } else { "" },
                    act_text(act)
                ),
                self.gemm_text(tm, tn),
            ],
            body: self.gemm_call(
                "conv_forward",
                &conv.geometry,
                &format!(
                    "x, w, {}, y, {}, n, {}",
                    if bias { "b" } else { "nullptr" },
                    if keep_pre { "pre" } else { "nullptr" },
                    conv.forward_dropout_call()
                ),
            ),
            params,
            min_blocks: 2,
        });
        self.kernels[forward].spec.gemm = Some(conv.gemm(KernelRole::Forward, conv.forward_tile));
        self.schedule
            .forward_and_infer(conv.conv_idx, self.launch(forward));
        if let Some(d) = conv.dropout_idx {
            // At inference the dropout is the identity: its output is its input.
            self.schedule.infer_launches[d] = self.schedule.infer.len() - 1;
        }
    }

    /// `NAME_backward_data` (training and visualisation); returns its index.
    fn conv_backward_data(&mut self, conv: &ConvGroup) -> usize {
        let ConvGroup {
            id,
            i,
            window,
            act,
            in_len,
            out_len,
            ..
        } = *conv;
        let (btm, btn) = conv.data_tile;
        let grad_out = self.layout.grad[conv.conv_idx + 1].clone();
        let grad_in = self.layout.grad[conv.dropout_idx.unwrap_or(conv.conv_idx)].clone();
        let mut params = vec![param(
            "const float* __restrict__",
            "dy",
            Arg::buffer(grad_out),
        )];
        params.extend(conv.f_param());
        params.push(param("const float* __restrict__", "w", conv.weight.clone()));
        let below = conv.links.in_act;
        if below.is_some() {
            params.push(param("const float* __restrict__", "x", conv.x.clone()));
        }
        params.push(param("float* __restrict__", "dx", Arg::buffer(grad_in)));
        params.push(param("int", "n", Arg::Batch));
        conv.dropout_params(&mut params);
        params.push(param("int", "rule", Arg::Rule));
        let kernel = self.add_kernel(KernelDef {
            spec: self.spec(
                &format!("{id}_backward_data"),
                KernelRole::BackwardData,
                id,
                conv.layers,
                Grid {
                    // The largest phase's pixels (phase 0 has the most).
                    x_items: Extent::per_image(
                        (i.h.div_ceil(window.stride_h.max(1))
                            * i.w.div_ceil(window.stride_w.max(1))) as u64,
                    ),
                    x_items_per_block: 16 * btm,
                    y: (i.c as u64).div_ceil(16 * btn) as u32,
                    z: (window.stride_h.max(1) * window.stride_w.max(1)) as u32,
                    split_k: None,
                },
                shared_bytes(self.precision, btm, btn),
                0,
                Extent::per_image(2 * conv.macs),
                Extent {
                    per_image: 4
                        * (out_len * conv.dy_reads() + in_len * (1 + u64::from(below.is_some()))),
                    fixed: 4 * conv.weight_len,
                },
            ),
            comment: vec![
                format!("{id}_backward_data: {}", conv.refs),
                format!(
                    "gradient at the input; {}{}{}",
                    conv.dy_text(act, true),
                    if conv.dropout_idx.is_some() {
                        "; the input dropout's mask applied in the epilogue (training)"
                    } else {
                        ""
                    },
                    below
                        .map(|a| format!(
                            "; the {} mask of the conv below applied in the epilogue with `rule`",
                            act_text(a)
                        ))
                        .unwrap_or_default()
                ),
                self.gemm_text(btm, btn),
            ],
            body: self.gemm_call(
                "conv_backward_data",
                &conv.geometry,
                &format!(
                    "dy, {}, w, {}, dx, n, {}, rule",
                    conv.f_arg(),
                    if below.is_some() { "x" } else { "nullptr" },
                    conv.dropout_call()
                ),
            ),
            params,
            min_blocks: 2,
        });
        self.kernels[kernel].spec.gemm = Some(conv.gemm(KernelRole::BackwardData, conv.data_tile));
        kernel
    }

    /// `NAME_mask_signal`, where the group's gradient arrives masked and
    /// its activation has a rule: the launch a visualisation runs first when
    /// its signal starts at one of [`ConvLinks::signal_layers`].
    fn conv_mask_signal(&mut self, conv: &ConvGroup) {
        if conv.links.signal_layers.is_empty() {
            return;
        }
        let id = conv.id;
        let out_len = conv.out_len;
        let grad_out = self.layout.grad[conv.conv_idx + 1].clone();
        let kernel = self.add_kernel(KernelDef {
            spec: self.spec(
                &format!("{id}_mask_signal"),
                KernelRole::BackwardData,
                id,
                conv.layers,
                elementwise((conv.o.h * conv.o.w) as u64),
                0,
                0,
                Extent::per_image(out_len),
                Extent::per_image(4 * 3 * out_len),
            ),
            comment: vec![
                format!("{id}_mask_signal: {}", conv.refs),
                format!(
                    "a visualisation's signal at the output through the {} mask with the ReLU rule `rule`, in place (the conv above applies it in training)",
                    act_text(conv.act)
                ),
            ],
            body: format!(
                "allcnnc::mask_signal<{}>(g, f, n, rule);",
                conv.geometry
            ),
            params: vec![
                param("float* __restrict__", "g", Arg::buffer(grad_out)),
                param(
                    "const float* __restrict__",
                    "f",
                    Arg::buffer(conv.f_name.clone()),
                ),
                param("int", "n", Arg::Batch),
                param("int", "rule", Arg::Rule),
            ],
            min_blocks: 0,
        });
        for &layer in &conv.links.signal_layers {
            let launch = self.launch(kernel);
            self.schedule.signal_masks[layer].push(launch);
        }
    }

    /// `NAME_backward_weights`: the group's first training backward launch,
    /// which leaves the weight and bias gradients in `grads`.
    fn conv_backward_weights(&mut self, conv: &ConvGroup) -> Vec<Launch> {
        let ConvGroup {
            id,
            o,
            act,
            bias,
            split_k,
            weight_grid,
            weight_len,
            in_len,
            out_len,
            ..
        } = *conv;
        let (wtm, wtn) = conv.weights_tile;
        let grad_out = self.layout.grad[conv.conv_idx + 1].clone();
        let grad_param = |name: &str| Arg::Buffer {
            name: "grads".into(),
            offset: self
                .layout
                .param_offset(&format!("{}.{name}", conv.layer_name)),
        };
        let mut params = vec![
            param("const float* __restrict__", "x", conv.x.clone()),
            param("const float* __restrict__", "dy", Arg::buffer(grad_out)),
        ];
        params.extend(conv.f_param());
        params.extend([
            param("float* __restrict__", "grad_w", grad_param("weight")),
            param(
                "float* __restrict__",
                "grad_b",
                if bias {
                    grad_param("bias")
                } else {
                    grad_param("weight")
                },
            ),
            param("float*", "partials", Arg::buffer("wgrad.partials")),
            param("unsigned*", "tile_counters", Arg::buffer("wgrad.counters")),
            param("int", "n", Arg::Batch),
        ]);
        conv.dropout_params(&mut params);
        let nominal = split_k.splits(NOMINAL_BATCH, NOMINAL_MULTIPROCESSORS);
        let backward_weights = self.add_kernel(KernelDef {
            spec: self.spec(
                &format!("{id}_backward_weights"),
                KernelRole::BackwardWeights,
                id,
                conv.layers,
                Grid {
                    x_items: Extent::fixed(conv.rows_w),
                    x_items_per_block: 16 * wtm,
                    y: weight_grid.1 as u32,
                    z: nominal,
                    split_k: Some(split_k),
                },
                weight_gradient_shared_bytes(self.precision, wtm, wtn, bias),
                0,
                Extent::per_image(2 * conv.macs + if bias { out_len } else { 0 }),
                Extent {
                    per_image: 4 * (in_len + conv.dy_reads() * out_len),
                    // The gradient written; with several splits, each
                    // split's partial sums written and read once too.
                    fixed: 4 * (weight_len + o.c as u64) * match nominal {
                        1 => 1,
                        splits => 2 * u64::from(splits) + 1,
                    },
                },
            ),
            comment: vec![
                format!("{id}_backward_weights: {}", conv.refs),
                format!(
                    "gradient of the weights{}; {}; split-K over the batch's output pixels (gridDim.z splits, from the batch and the SM count, at most {}), the last block of each output tile adds the splits in order",
                    if bias { " and the bias" } else { "" },
                    conv.dy_text(act, false),
                    split_k.max
                ),
                self.gemm_text(wtm, wtn),
            ],
            body: self.gemm_call(
                "conv_backward_weights",
                &conv.geometry,
                &format!(
                    "x, dy, {}, allcnnc::WeightGradient{{grad_w, grad_b, partials, tile_counters}}, n, {}",
                    conv.f_arg(),
                    conv.dropout_call()
                ),
            ),
            params,
            min_blocks: 2,
        });
        self.kernels[backward_weights].spec.gemm =
            Some(conv.gemm(KernelRole::BackwardWeights, conv.weights_tile));
        vec![self.launch(backward_weights)]
    }

    /// The comment line describing a GEMM kernel of `16 tm x 16 tn` tiles.
    fn gemm_text(&self, tm: u64, tn: u64) -> String {
        match self.precision {
            Precision::Fp32 => format!(
                "implicit GEMM, fp32, {}x{}x{TILE_K} shared-memory tiles, {tm}x{tn} outputs per thread",
                16 * tm,
                16 * tn
            ),
            p => format!(
                "implicit GEMM on tensor cores (mma.sync {}, fp32 accumulation), {}x{}x{TILE_K} shared-memory tiles, 8 warps of {}x{}",
                if p == Precision::Tf32 { "m16n8k8 tf32" } else { "m16n8k16 bf16" },
                16 * tm,
                16 * tn,
                4 * tm,
                8 * tn
            ),
        }
    }

    /// The call of prelude GEMM template `name` (fp32) or `name_mma`.
    fn gemm_call(&self, name: &str, geometry: &str, args: &str) -> String {
        match self.precision {
            Precision::Fp32 => format!("allcnnc::{name}<{geometry}>({args});"),
            p => format!(
                "allcnnc::{name}_mma<{geometry}, allcnnc::PREC_{}>({args});",
                p.name().to_uppercase()
            ),
        }
    }
}
