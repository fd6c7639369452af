//! [`CpuExecutor`]: a [`Plan`] with its parameters, optimizer state and
//! activation buffers, executed by the CPU kernels.
//!
//! Layer `l` reads activation buffer `l` and writes buffer `l + 1` (buffer 0
//! is the input batch). Buffers are sized for the largest batch seen so far
//! and reused; a smaller batch uses a prefix. Gradients with respect to
//! activations flow through two ping-pong buffers.
//!
//! Invariant: for a given seed and call sequence, every number the executor
//! produces (initial parameters, dropout masks, gradients, updates) is the
//! same for any rayon thread count; see the [`conv`](super::conv) module doc
//! for how the weight-gradient sums are kept in a fixed order.

use rayon::prelude::*;

use super::activation;
use super::conv::{ConvAlgorithm, ConvBackward, ConvForward, ConvGeometry};
use super::dropout::{dropout_backward, dropout_forward};
use super::matmul::Operands;
use super::pool::{
    avg_pool_backward, avg_pool_forward, global_avg_pool_backward, global_avg_pool_forward,
    max_pool_backward, max_pool_forward, PoolGeometry,
};
use super::softmax::{cross_entropy, softmax_backward, softmax_forward};
use crate::backend::{
    check_batch, check_batch_memory, check_images, BackendError, Batch, Executor, Forwarded,
    Result, SgdStep, StepStats,
};
use crate::plan::{Activation, Op, ParamSpec, Plan, ReluRule, Shape};
use crate::rng::derive_key;
use crate::train::init;

/// Images per forward pass of [`Executor::infer`] when no larger batch has
/// been seen (bounds the activation memory of a large inference call).
const INFER_BATCH: usize = 128;

/// Values per parallel task of the SGD update.
const UPDATE_CHUNK: usize = 1 << 14;

/// What one layer runs, with the indices of its parameters.
#[derive(Debug, Clone)]
enum Kernel {
    Conv {
        geom: ConvGeometry,
        act: Activation,
        weight: usize,
        bias: Option<usize>,
    },
    MaxPool(PoolGeometry),
    AvgPool(PoolGeometry),
    GlobalAvgPool,
    Dropout {
        p: f32,
    },
    Softmax,
}

/// Whether a forward pass trains (dropout active, seeded) or infers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Train { seed: u64 },
    Infer,
}

/// Activation-sized memory, for `capacity` images.
#[derive(Debug, Default)]
struct Buffers {
    capacity: usize,
    /// `acts[l]` is the input of layer `l`; `acts[layers]` the probabilities.
    acts: Vec<Vec<f32>>,
    /// Per layer: a conv's pre-activation values when its backward pass
    /// needs them ([`activation::needs_input`]); empty otherwise.
    pre: Vec<Vec<f32>>,
    /// Per layer: max-pool switches; empty for other layers.
    switches: Vec<Vec<u32>>,
    /// Per layer: dropout masks; empty for other layers.
    masks: Vec<Vec<u8>>,
    /// Ping-pong buffers of the backward pass (signal at the current layer's
    /// output and at its input).
    grad_out: Vec<f32>,
    grad_in: Vec<f32>,
    /// The convolutions' scratch: per-group partial weight gradients,
    /// Winograd transformed weights and tiles.
    workspace: Vec<f32>,
}

/// A model on the CPU: parameters, momentum, gradients and activations.
#[derive(Debug)]
pub struct CpuExecutor {
    plan: Plan,
    specs: Vec<ParamSpec>,
    kernels: Vec<Kernel>,
    /// `shapes[l]` is the shape of `acts[l]`.
    shapes: Vec<Shape>,
    params: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
    momentum: Vec<Vec<f32>>,
    buffers: Buffers,
    forwarded: Forwarded,
    has_grads: bool,
    /// Loss and hits of the training steps since the last `take_stats`.
    stats: StepStats,
    /// The convolutions' operand format.
    operands: Operands,
}

fn invalid_plan(layer: &str, msg: impl std::fmt::Display) -> BackendError {
    BackendError::Device(format!("invalid plan: layer `{layer}`: {msg}"))
}

impl CpuExecutor {
    /// Instantiates `plan` with freshly initialised parameters
    /// ([`init::he_normal`]: convolution weights He-normal, biases zero) and
    /// zero momentum. The values depend only on `seed` and the plan.
    pub fn new(plan: Plan, seed: u64) -> Result<Self> {
        Self::with_operands(plan, seed, Operands::F32)
    }

    /// [`new`](Self::new) with the convolutions' products in `operands`;
    /// bf16 needs AVX512-BF16 and is refused, saying so, without it.
    pub fn with_operands(plan: Plan, seed: u64, operands: Operands) -> Result<Self> {
        if operands == Operands::Bf16 && !super::bf16::supported() {
            return Err(BackendError::Device(
                "bf16 on the CPU needs AVX512-BF16 (Intel Cooper Lake or Sapphire Rapids and later, AMD Zen 4 and later), which this CPU lacks; use --precision fp32".into(),
            ));
        }
        let specs = plan.params();
        let kernels = build_kernels(&plan, &specs)?;
        let mut shapes = vec![plan.input];
        shapes.extend(plan.layers.iter().map(|l| l.out_shape));
        let params = init::he_normal(&plan, seed);
        let zeros: Vec<Vec<f32>> = specs.iter().map(|s| vec![0.0; s.len()]).collect();
        Ok(Self {
            plan,
            specs,
            kernels,
            shapes,
            params,
            grads: zeros.clone(),
            momentum: zeros,
            buffers: Buffers::default(),
            forwarded: Forwarded::Nothing,
            has_grads: false,
            stats: StepStats::default(),
            operands,
        })
    }

    /// Bytes of the per-image buffers [`CpuExecutor::reserve`] allocates
    /// for one image: every layer's activation, the two gradient buffers,
    /// and the ReLU inputs, switches and masks of the layers that keep them.
    /// (The convolutions' workspace does not grow with the batch.)
    fn bytes_per_image(&self) -> u64 {
        let f32_len = |len: usize| 4 * len as u64;
        let acts: u64 = self.shapes.iter().map(|s| f32_len(s.len())).sum();
        let max_len = self.shapes.iter().map(Shape::len).max().unwrap_or(0);
        let kept: u64 = self
            .kernels
            .iter()
            .zip(&self.plan.layers)
            .map(|(kernel, layer)| {
                let out_len = layer.out_shape.len();
                match kernel {
                    Kernel::Conv { act, .. } if activation::needs_input(*act) => f32_len(out_len),
                    Kernel::MaxPool(_) => f32_len(out_len),
                    Kernel::Dropout { .. } => out_len as u64,
                    _ => 0,
                }
            })
            .sum();
        acts + 2 * f32_len(max_len) + kept
    }

    /// Grows the buffers to hold `n` images (never shrinks them), after
    /// checking them against the memory budget.
    fn reserve(&mut self, n: usize) -> Result<()> {
        if n <= self.buffers.capacity {
            return Ok(());
        }
        self.fits_batch(n)?;
        let b = &mut self.buffers;
        b.capacity = n;
        b.acts = self.shapes.iter().map(|s| vec![0.0; n * s.len()]).collect();
        let max_len = self.shapes.iter().map(Shape::len).max().unwrap_or(0);
        b.grad_out = vec![0.0; n * max_len];
        b.grad_in = vec![0.0; n * max_len];
        b.pre = Vec::with_capacity(self.kernels.len());
        b.switches = Vec::with_capacity(self.kernels.len());
        b.masks = Vec::with_capacity(self.kernels.len());
        for (kernel, layer) in self.kernels.iter().zip(&self.plan.layers) {
            let out_len = n * layer.out_shape.len();
            let keep_input =
                matches!(kernel, Kernel::Conv { act, .. } if activation::needs_input(*act));
            b.pre.push(if keep_input {
                vec![0.0; out_len]
            } else {
                Vec::new()
            });
            let is_max = matches!(kernel, Kernel::MaxPool(_));
            b.switches
                .push(if is_max { vec![0; out_len] } else { Vec::new() });
            let is_dropout = matches!(kernel, Kernel::Dropout { .. });
            b.masks.push(if is_dropout {
                vec![0; out_len]
            } else {
                Vec::new()
            });
        }
        Ok(())
    }

    /// Copies `images` into the input buffer and runs layers `0..=last_layer`.
    fn forward(&mut self, images: &[f32], n: usize, last_layer: usize, mode: Mode) -> Result<()> {
        self.reserve(n)?;
        self.buffers.acts[0][..images.len()].copy_from_slice(images);
        for layer_idx in 0..=last_layer {
            self.forward_layer(layer_idx, n, mode);
        }
        Ok(())
    }

    fn forward_layer(&mut self, layer_idx: usize, n: usize, mode: Mode) {
        let in_len = n * self.shapes[layer_idx].len();
        let out_len = n * self.shapes[layer_idx + 1].len();
        let b = &mut self.buffers;
        let (before, after) = b.acts.split_at_mut(layer_idx + 1);
        let input = &before[layer_idx][..in_len];
        let output = &mut after[0][..out_len];
        match &self.kernels[layer_idx] {
            Kernel::Conv {
                geom,
                act,
                weight,
                bias,
            } => {
                let weight = &self.params[*weight];
                let bias = bias.map(|idx| &self.params[idx][..]);
                let keep_input = activation::needs_input(*act);
                ConvForward {
                    geom: *geom,
                    n,
                    input,
                    weight,
                    bias,
                    act: if keep_input { Activation::None } else { *act },
                    output: &mut *output,
                    algorithm: ConvAlgorithm::Auto,
                    operands: self.operands,
                }
                .run(&mut b.workspace);
                if keep_input {
                    b.pre[layer_idx][..out_len].copy_from_slice(output);
                    activation::forward(*act, output);
                }
            }
            Kernel::MaxPool(geom) => {
                max_pool_forward(
                    geom,
                    n,
                    input,
                    output,
                    &mut b.switches[layer_idx][..out_len],
                );
            }
            Kernel::AvgPool(geom) => avg_pool_forward(geom, n, input, output),
            Kernel::GlobalAvgPool => {
                global_avg_pool_forward(self.shapes[layer_idx], n, input, output);
            }
            Kernel::Dropout { p } => match mode {
                Mode::Train { seed } => {
                    let layer_seed = derive_key(seed, layer_idx as u64);
                    let image_len = self.shapes[layer_idx].len();
                    let mask = &mut b.masks[layer_idx][..out_len];
                    dropout_forward(*p, layer_seed, image_len, input, output, mask);
                }
                Mode::Infer => output.copy_from_slice(input),
            },
            Kernel::Softmax => softmax_forward(self.shapes[layer_idx].c, input, output),
        }
    }

    /// Turns the signal at the output of `layer_idx` (in `grad_out`) into the
    /// signal at its input (in `grad_out` again, after a swap) when
    /// `want_input`, and writes the layer's parameter gradients when
    /// `want_params`.
    fn backward_layer(
        &mut self,
        layer_idx: usize,
        n: usize,
        rule: ReluRule,
        want_input: bool,
        want_params: bool,
    ) {
        let in_len = n * self.shapes[layer_idx].len();
        let out_len = n * self.shapes[layer_idx + 1].len();
        let b = &mut self.buffers;
        let input = &b.acts[layer_idx][..in_len];
        let output = &b.acts[layer_idx + 1][..out_len];
        let grad_out = &mut b.grad_out[..out_len];
        let grad_in = &mut b.grad_in[..in_len];
        match &self.kernels[layer_idx] {
            Kernel::Conv {
                geom,
                act,
                weight,
                bias,
            } => {
                let act_forward = if activation::needs_input(*act) {
                    &b.pre[layer_idx][..out_len]
                } else {
                    output
                };
                let (grad_weight, grad_bias) = if want_params {
                    let (w, bias_grad) = split_two(&mut self.grads, *weight, *bias);
                    (Some(w), bias_grad)
                } else {
                    (None, None)
                };
                ConvBackward {
                    geom: *geom,
                    n,
                    input,
                    weight: &self.params[*weight],
                    grad_out,
                    act: *act,
                    rule,
                    act_forward,
                    grad_input: want_input.then_some(grad_in),
                    grad_weight,
                    grad_bias,
                    // Visualisation (no parameter gradients) uses im2col:
                    // Winograd's transforms leave rounding noise (~1e-6 of
                    // the peak) outside a unit's receptive field, where the
                    // reconstruction must be exactly zero.
                    algorithm: if want_params {
                        ConvAlgorithm::Auto
                    } else {
                        ConvAlgorithm::Im2col
                    },
                    operands: self.operands,
                }
                .run(&mut b.workspace);
            }
            Kernel::MaxPool(geom) => {
                if want_input {
                    max_pool_backward(
                        geom,
                        n,
                        grad_out,
                        &b.switches[layer_idx][..out_len],
                        grad_in,
                    );
                }
            }
            Kernel::AvgPool(geom) => {
                if want_input {
                    avg_pool_backward(geom, n, grad_out, grad_in);
                }
            }
            Kernel::GlobalAvgPool => {
                if want_input {
                    global_avg_pool_backward(self.shapes[layer_idx], n, grad_out, grad_in);
                }
            }
            Kernel::Dropout { p } => {
                if want_input {
                    match self.forwarded {
                        Forwarded::Train { .. } => {
                            dropout_backward(*p, &b.masks[layer_idx][..out_len], grad_out, grad_in);
                        }
                        _ => grad_in.copy_from_slice(grad_out),
                    }
                }
            }
            Kernel::Softmax => {
                if want_input {
                    softmax_backward(self.shapes[layer_idx].c, output, grad_out, grad_in);
                }
            }
        }
        if want_input {
            std::mem::swap(&mut b.grad_out, &mut b.grad_in);
        }
    }

    fn check_params(&self, values: &[Vec<f32>]) -> Result<()> {
        if values.len() != self.specs.len() {
            return Err(BackendError::ParamCount {
                expected: self.specs.len(),
                got: values.len(),
            });
        }
        for (spec, value) in self.specs.iter().zip(values) {
            if value.len() != spec.len() {
                return Err(BackendError::ParamSize {
                    name: spec.name.clone(),
                    got: value.len(),
                    expected: spec.len(),
                });
            }
        }
        Ok(())
    }

    fn check_layer(&self, layer_idx: usize) -> Result<()> {
        if layer_idx >= self.kernels.len() {
            return Err(BackendError::UnknownLayer(format!(
                "#{layer_idx} (the plan has {} layers)",
                self.kernels.len()
            )));
        }
        Ok(())
    }
}

/// `&mut values[first]` and, when given, `&mut values[second]` (`second > first`).
fn split_two(
    values: &mut [Vec<f32>],
    first: usize,
    second: Option<usize>,
) -> (&mut [f32], Option<&mut [f32]>) {
    match second {
        None => (&mut values[first], None),
        Some(second) => {
            assert!(second > first, "bias follows its weight");
            let (head, tail) = values.split_at_mut(second);
            (&mut head[first], Some(&mut tail[0]))
        }
    }
}

/// Checks that the layers chain and turns them into kernels.
fn build_kernels(plan: &Plan, specs: &[ParamSpec]) -> Result<Vec<Kernel>> {
    let Some(last) = plan.layers.last() else {
        return Err(BackendError::Device("invalid plan: no layers".into()));
    };
    if !matches!(last.op, Op::Softmax) {
        return Err(invalid_plan(&last.name, "the last layer must be a softmax"));
    }
    let mut prev = plan.input;
    let mut kernels = Vec::with_capacity(plan.layers.len());
    for (layer_idx, layer) in plan.layers.iter().enumerate() {
        let name = &layer.name;
        let (in_shape, out_shape) = (layer.in_shape, layer.out_shape);
        if in_shape != prev {
            return Err(invalid_plan(
                name,
                format!("input {in_shape} but the previous layer gives {prev}"),
            ));
        }
        prev = out_shape;
        let check_window = |w: &crate::plan::Window| {
            if w.kh == 0 || w.kw == 0 || w.stride_h == 0 || w.stride_w == 0 {
                Err(invalid_plan(name, "empty window or zero stride"))
            } else {
                Ok(())
            }
        };
        let kernel = match &layer.op {
            Op::Conv {
                out_channels,
                window,
                bias,
                act,
            } => {
                check_window(window)?;
                if out_shape.c != *out_channels {
                    return Err(invalid_plan(
                        name,
                        format!("output {out_shape} but {out_channels} channels"),
                    ));
                }
                let find = |suffix: &str| {
                    let wanted = format!("{name}.{suffix}");
                    specs
                        .iter()
                        .position(|s| s.layer == layer_idx && s.name == wanted)
                };
                let weight =
                    find("weight").ok_or_else(|| invalid_plan(name, "no weight parameter"))?;
                let bias = if *bias {
                    Some(find("bias").ok_or_else(|| invalid_plan(name, "no bias parameter"))?)
                } else {
                    None
                };
                Kernel::Conv {
                    geom: ConvGeometry {
                        in_shape,
                        out_shape,
                        window: *window,
                    },
                    act: *act,
                    weight,
                    bias,
                }
            }
            Op::MaxPool { window } | Op::AvgPool { window } => {
                check_window(window)?;
                if in_shape.c != out_shape.c {
                    return Err(invalid_plan(name, "pooling must keep the channel count"));
                }
                let geom = PoolGeometry {
                    in_shape,
                    out_shape,
                    window: *window,
                };
                if matches!(layer.op, Op::MaxPool { .. }) {
                    Kernel::MaxPool(geom)
                } else {
                    Kernel::AvgPool(geom)
                }
            }
            Op::GlobalAvgPool => {
                if out_shape != Shape::new(in_shape.c, 1, 1) {
                    return Err(invalid_plan(
                        name,
                        format!("global average pool of {in_shape} gives {out_shape}"),
                    ));
                }
                Kernel::GlobalAvgPool
            }
            Op::Dropout { p } => {
                if !(0.0..1.0).contains(p) {
                    return Err(invalid_plan(
                        name,
                        format!("dropout probability {p} outside [0, 1)"),
                    ));
                }
                if in_shape != out_shape {
                    return Err(invalid_plan(name, "dropout must keep the shape"));
                }
                Kernel::Dropout { p: *p }
            }
            Op::Softmax => {
                if layer_idx + 1 != plan.layers.len() {
                    return Err(invalid_plan(name, "softmax must be the last layer"));
                }
                if in_shape != out_shape
                    || in_shape.h != 1
                    || in_shape.w != 1
                    || in_shape.c != plan.classes
                {
                    return Err(invalid_plan(
                        name,
                        format!("softmax over {in_shape} for {} classes", plan.classes),
                    ));
                }
                Kernel::Softmax
            }
        };
        kernels.push(kernel);
    }
    Ok(kernels)
}

impl Executor for CpuExecutor {
    fn plan(&self) -> &Plan {
        &self.plan
    }

    fn device_name(&self) -> String {
        let threads = rayon::current_num_threads();
        match self.operands {
            Operands::F32 => format!("cpu ({threads} threads)"),
            Operands::Bf16 => format!("cpu ({threads} threads, bf16 products)"),
        }
    }

    fn fits_batch(&self, n: usize) -> Result<()> {
        let budget = crate::budget::Budget::current()?;
        check_batch_memory(&self.plan, n, self.bytes_per_image(), &budget)
    }

    fn forward_backward(&mut self, batch: &Batch<'_>, seed: u64) -> Result<()> {
        let n = batch.n;
        check_batch(&self.plan, batch)?;
        let classes = self.plan.classes;
        let layers = self.kernels.len();
        self.forwarded = Forwarded::Nothing;
        self.forward(batch.images, n, layers - 1, Mode::Train { seed })?;
        self.forwarded = Forwarded::Train { n };

        let b = &mut self.buffers;
        let logits = &b.acts[layers - 1][..n * classes];
        let probs = &b.acts[layers][..n * classes];
        let loss = cross_entropy(
            classes,
            logits,
            probs,
            batch.labels,
            &mut b.grad_out[..n * classes],
        );

        // Layers before the first one with parameters need no signal.
        let first_param_layer = self
            .kernels
            .iter()
            .position(|k| matches!(k, Kernel::Conv { .. }))
            .unwrap_or(layers);
        for layer_idx in (first_param_layer..layers - 1).rev() {
            let want_input = layer_idx > first_param_layer;
            self.backward_layer(layer_idx, n, ReluRule::Backprop, want_input, true);
        }
        self.has_grads = true;
        self.stats.loss_sum += loss.loss_sum;
        self.stats.correct += loss.correct;
        Ok(())
    }

    fn take_stats(&mut self) -> Result<StepStats> {
        Ok(std::mem::take(&mut self.stats))
    }

    fn sgd_update(&mut self, step: &SgdStep) -> Result<()> {
        if !self.has_grads {
            return Err(BackendError::Device(
                "sgd_update before any forward_backward".into(),
            ));
        }
        let SgdStep {
            lr,
            momentum,
            nesterov,
            weight_decay,
        } = *step;
        for ((spec, w), (g, v)) in self
            .specs
            .iter()
            .zip(&mut self.params)
            .zip(self.grads.iter().zip(&mut self.momentum))
        {
            let decay = if spec.dims.len() == 4 {
                weight_decay
            } else {
                0.0
            };
            w.par_chunks_mut(UPDATE_CHUNK)
                .zip(g.par_chunks(UPDATE_CHUNK))
                .zip(v.par_chunks_mut(UPDATE_CHUNK))
                .for_each(|((w, g), v)| {
                    for ((w, &g), v) in w.iter_mut().zip(g).zip(v.iter_mut()) {
                        let d = g + decay * *w;
                        *v = momentum * *v + d;
                        *w -= if nesterov {
                            lr * (d + momentum * *v)
                        } else {
                            lr * *v
                        };
                    }
                });
        }
        Ok(())
    }

    fn infer(&mut self, images: &[f32], n: usize) -> Result<Vec<f32>> {
        check_images(&self.plan, images, n)?;
        let classes = self.plan.classes;
        let layers = self.kernels.len();
        let image_len = self.plan.input.len();
        // The buffers' size once a batch has set it (never growing them
        // beyond what the memory check admitted), else INFER_BATCH.
        let chunk = match self.buffers.capacity {
            0 => INFER_BATCH,
            capacity => capacity,
        };
        let mut probs = Vec::with_capacity(n * classes);
        self.forwarded = Forwarded::Nothing;
        let mut first = 0;
        while first < n {
            let count = chunk.min(n - first);
            let part = &images[first * image_len..(first + count) * image_len];
            self.forward(part, count, layers - 1, Mode::Infer)?;
            probs.extend_from_slice(&self.buffers.acts[layers][..count * classes]);
            first += count;
        }
        Ok(probs)
    }

    fn read_params(&self) -> Result<Vec<Vec<f32>>> {
        Ok(self.params.clone())
    }

    fn write_params(&mut self, values: &[Vec<f32>]) -> Result<()> {
        self.check_params(values)?;
        self.params.clone_from_slice(values);
        Ok(())
    }

    fn read_momentum(&self) -> Result<Vec<Vec<f32>>> {
        Ok(self.momentum.clone())
    }

    fn write_momentum(&mut self, values: &[Vec<f32>]) -> Result<()> {
        self.check_params(values)?;
        self.momentum.clone_from_slice(values);
        Ok(())
    }

    fn read_grads(&self) -> Result<Vec<Vec<f32>>> {
        Ok(self.grads.clone())
    }

    fn forward_to(&mut self, images: &[f32], n: usize, layer_idx: usize) -> Result<Vec<f32>> {
        self.check_layer(layer_idx)?;
        check_images(&self.plan, images, n)?;
        self.forwarded = Forwarded::Nothing;
        self.forward(images, n, layer_idx, Mode::Infer)?;
        self.forwarded = Forwarded::Infer {
            n,
            last_layer: layer_idx,
        };
        let len = n * self.shapes[layer_idx + 1].len();
        Ok(self.buffers.acts[layer_idx + 1][..len].to_vec())
    }

    fn backward_to_input(
        &mut self,
        layer_idx: usize,
        signal: &[f32],
        rule: ReluRule,
    ) -> Result<Vec<f32>> {
        self.check_layer(layer_idx)?;
        let n = self
            .forwarded
            .backward_from(layer_idx, self.shapes[layer_idx + 1], signal)?;
        let out_len = signal.len();
        self.buffers.grad_out[..out_len].copy_from_slice(signal);
        for l in (0..=layer_idx).rev() {
            self.backward_layer(l, n, rule, true, false);
        }
        Ok(self.buffers.grad_out[..n * self.plan.input.len()].to_vec())
    }
}
