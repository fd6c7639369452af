//! The interpreter of a [`DevicePlan`], generic over where kernels run.
//!
//! [`PlanExecutor`] allocates the plan's buffers (per-image sizes times the
//! largest batch seen), resolves each launch's [`Arg`]s and hands the
//! launches to a [`Device`]: the CUDA driver ([`super::CudaExecutor`]) or
//! the host emulator ([`super::emulator`]), which runs the same generated
//! kernels on CPU threads so the plan, the schedules and the kernels'
//! indexing can be tested on machines without a GPU.
//!
//! Everything of one training step is enqueued without synchronisation: the
//! batch upload, the forward pass, the head, the backward pass, the update.
//! Nothing is read back per step: the head adds each image's loss and top-1
//! hit to its batch slot's running sums on the device, and
//! [`Executor::take_stats`] (called by the trainer every few steps) reads and
//! clears them.

use std::collections::HashMap;

use super::program;
use super::program::{
    Arg, DType, DevicePlan, Launch, Program, RULE_BACKPROP, RULE_DECONVNET, RULE_GUIDED,
};
use crate::backend::{
    check_batch, check_batch_memory, check_images, BackendError, Batch, Executor, Forwarded,
    KernelTime, Result, SgdStep, StepStats,
};
use crate::plan::{Plan, ReluRule};
use crate::rng::derive_key;
use crate::train::init;

/// Images per forward pass of [`Executor::infer`] when no larger batch has
/// been seen.
const INFER_BATCH: usize = 256;

/// A resolved kernel argument.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    U64(u64),
    I32(i32),
    F32(f32),
}

/// Grid, block and dynamic shared memory of one launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchDims {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_bytes: u32,
}

/// Where kernels run: memory and launches, addressed by device addresses.
pub trait Device {
    /// For logs (`cuda:0 NVIDIA H100 (sm_90)`).
    fn name(&self) -> String;
    /// Streaming multiprocessors, which split-K grids fill
    /// ([`program::SplitK`]); a host device reports the nominal GPU's, so
    /// that it runs the grids that GPU would.
    fn multiprocessors(&self) -> u32 {
        program::NOMINAL_MULTIPROCESSORS
    }
    /// Allocates `bytes` zeroed bytes; returns the buffer's address.
    fn alloc(&mut self, bytes: usize) -> Result<u64>;
    /// The most bytes a batch's buffers may take on this device: the host's
    /// budget ([`crate::budget`]) unless the device has memory of its own.
    fn memory_budget(&self) -> Result<crate::budget::Budget> {
        Ok(crate::budget::Budget::current()?)
    }
    /// Frees a buffer [`Device::alloc`] returned.
    fn free(&mut self, address: u64);
    /// Copies `data` to the start of the buffer at `address` (ordered
    /// after every launch enqueued before).
    fn upload(&mut self, address: u64, data: &[u8]) -> Result<()>;
    /// Copies the start of the buffer at `address` into `out`, after every
    /// launch enqueued before has finished.
    fn download(&self, address: u64, out: &mut [u8]) -> Result<()>;
    /// Enqueues kernel `kernel` (index into the plan's kernels).
    fn launch(&mut self, kernel: usize, dims: LaunchDims, args: &[Value]) -> Result<()>;
    /// Waits until every launch enqueued before has finished.
    fn synchronize(&self) -> Result<()>;
}

/// The bytes of a slice of plain numbers.
pub fn as_bytes<T: Copy>(values: &[T]) -> &[u8] {
    // SAFETY: only used with f32, f64, i32 and the emulator's words of two
    // u64, which have no padding; the length is the slice's size in bytes.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), std::mem::size_of_val(values)) }
}

/// The bytes of a mutable slice of plain numbers.
pub fn as_bytes_mut<T: Copy>(values: &mut [T]) -> &mut [u8] {
    // SAFETY: only used with f32, f64, i32 and the emulator's words of two
    // u64, for which every bit pattern is a valid value.
    unsafe {
        std::slice::from_raw_parts_mut(values.as_mut_ptr().cast(), std::mem::size_of_val(values))
    }
}

/// What one pass passes for the plan's run-time arguments.
#[derive(Debug, Clone, Copy)]
struct PassArgs {
    n: usize,
    training: bool,
    rule: i32,
    seed: u64,
    sgd: Option<SgdStep>,
}

impl PassArgs {
    fn infer(n: usize) -> Self {
        PassArgs {
            n,
            training: false,
            rule: RULE_BACKPROP,
            seed: 0,
            sgd: None,
        }
    }
}

/// A model on a [`Device`]: an interpreter of its [`DevicePlan`].
pub struct PlanExecutor<D: Device> {
    plan: Plan,
    device_plan: DevicePlan,
    device: D,
    /// Buffer name -> (address, element type).
    buffers: HashMap<String, (u64, DType)>,
    capacity: usize,
    forwarded: Forwarded,
    has_grads: bool,
    /// Training steps whose statistics still sit in the device's sums.
    pending: bool,
    /// Statistics read back early (before the per-image buffers grew).
    carried: StepStats,
    /// Timed launches, while profiling.
    profile: Option<Vec<KernelTime>>,
}

impl<D: Device> std::fmt::Debug for PlanExecutor<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanExecutor")
            .field("model", &self.plan.name)
            .field("device", &self.device.name())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl<D: Device> PlanExecutor<D> {
    /// Instantiates `program` (generated from `plan`) on `device` with the
    /// parameters [`init::he_normal`] gives for `seed` (the CPU executor's
    /// too, so a run on the device and one on the CPU start from the same
    /// weights) and zero momentum.
    pub fn with_device(plan: Plan, program: &Program, device: D, seed: u64) -> Result<Self> {
        if program.plan.model_hash != plan.model_hash {
            return Err(BackendError::Device(format!(
                "the device program was generated for another model than `{}`",
                plan.name
            )));
        }
        let initial = init::he_normal(&plan, seed);
        let mut exec = Self {
            plan,
            device_plan: program.plan.clone(),
            device,
            buffers: HashMap::new(),
            capacity: 0,
            forwarded: Forwarded::Nothing,
            has_grads: false,
            pending: false,
            carried: StepStats::default(),
            profile: None,
        };
        exec.allocate(0, true)?;
        exec.write_params(&initial)?;
        let zeros: Vec<Vec<f32>> = initial.iter().map(|p| vec![0.0; p.len()]).collect();
        exec.write_momentum(&zeros)?;
        Ok(exec)
    }

    /// The device plan it runs.
    pub fn device_plan(&self) -> &DevicePlan {
        &self.device_plan
    }

    /// (Re)allocates the fixed buffers (`fixed`) or the per-image ones for
    /// `n` images.
    fn allocate(&mut self, n: usize, fixed: bool) -> Result<()> {
        for spec in &self.device_plan.buffers {
            let per_image = spec.len.per_image > 0;
            if per_image == fixed {
                continue;
            }
            if let Some((old, _)) = self.buffers.remove(&spec.name) {
                self.device.free(old);
            }
            let len = (spec.len.at(n as u64) as usize).max(1);
            let address = self.device.alloc(len * spec.dtype.size())?;
            self.buffers
                .insert(spec.name.clone(), (address, spec.dtype));
        }
        Ok(())
    }

    /// Bytes of the per-image buffers of one image.
    fn bytes_per_image(&self) -> u64 {
        self.device_plan
            .buffers
            .iter()
            .map(|spec| spec.len.per_image.saturating_mul(spec.dtype.size() as u64))
            .fold(0, u64::saturating_add)
    }

    fn reserve(&mut self, n: usize) -> Result<()> {
        if n > self.capacity {
            self.fits_batch(n)?;
            if let (max, Some(kernel)) = self.device_plan.max_batch() {
                if n as u64 > max {
                    return Err(BackendError::Device(format!(
                        "a batch of {n} is more than this model's kernels can index: {} ({}) takes at most {max} images (32-bit indices)",
                        kernel.name,
                        kernel.layers.join(", ")
                    )));
                }
            }
            // The running sums live in per-image buffers: keep them.
            let sums = self.read_sums()?;
            self.carried.loss_sum += sums.loss_sum;
            self.carried.correct += sums.correct;
            self.allocate(n, false)?;
            self.capacity = n;
            self.clear_sums()?;
        }
        Ok(())
    }

    /// The device's running loss and hit sums over all batch slots.
    fn read_sums(&self) -> Result<StepStats> {
        if !self.pending || self.capacity == 0 {
            return Ok(StepStats::default());
        }
        let loss: Vec<f64> = self.download(&self.device_plan.loss, self.capacity)?;
        let correct: Vec<i32> = self.download(&self.device_plan.correct, self.capacity)?;
        Ok(StepStats {
            loss_sum: loss.iter().sum(),
            correct: correct.iter().map(|&c| c.max(0) as usize).sum(),
        })
    }

    fn clear_sums(&mut self) -> Result<()> {
        let (loss, correct) = (
            self.device_plan.loss.clone(),
            self.device_plan.correct.clone(),
        );
        self.upload(&loss, &vec![0.0f64; self.capacity])?;
        self.upload(&correct, &vec![0i32; self.capacity])?;
        self.pending = false;
        Ok(())
    }

    fn address(&self, name: &str) -> Result<(u64, DType)> {
        self.buffers
            .get(name)
            .copied()
            .ok_or_else(|| BackendError::Device(format!("the device plan has no buffer `{name}`")))
    }

    fn upload<T: Copy>(&mut self, name: &str, values: &[T]) -> Result<()> {
        let (address, _) = self.address(name)?;
        self.device.upload(address, as_bytes(values))
    }

    fn download<T: Copy + Default>(&self, name: &str, len: usize) -> Result<Vec<T>> {
        let (address, _) = self.address(name)?;
        let mut out = vec![T::default(); len];
        self.device.download(address, as_bytes_mut(&mut out))?;
        Ok(out)
    }

    fn resolve(&self, arg: &Arg, pass: &PassArgs) -> Result<Value> {
        let sgd = || {
            pass.sgd
                .ok_or_else(|| BackendError::Device("an SGD argument outside the update".into()))
        };
        Ok(match arg {
            Arg::Buffer { name, offset } => {
                let (base, dtype) = self.address(name)?;
                Value::U64(base + (offset * dtype.size()) as u64)
            }
            Arg::Batch => Value::I32(pass.n as i32),
            Arg::DropoutKey { layer } => Value::U64(derive_key(pass.seed, *layer as u64)),
            Arg::Training => Value::I32(i32::from(pass.training)),
            Arg::Rule => Value::I32(pass.rule),
            Arg::Int(v) => Value::I32(*v),
            Arg::LearningRate => Value::F32(sgd()?.lr),
            Arg::Momentum => Value::F32(sgd()?.momentum),
            Arg::Nesterov => Value::I32(i32::from(sgd()?.nesterov)),
            Arg::WeightDecay => Value::F32(sgd()?.weight_decay),
        })
    }

    /// Enqueues `launches` (no synchronisation).
    fn run(&mut self, launches: &[Launch], pass: PassArgs) -> Result<()> {
        for launch in launches {
            let spec = &self.device_plan.kernels[launch.kernel];
            let values = launch
                .args
                .iter()
                .map(|arg| self.resolve(arg, &pass))
                .collect::<Result<Vec<_>>>()?;
            let [bx, by, bz] = spec.block;
            let dims = LaunchDims {
                grid: spec
                    .grid
                    .dims_on(pass.n as u64, self.device.multiprocessors()),
                block: (bx, by, bz),
                shared_bytes: spec.dynamic_shared_bytes,
            };
            if self.profile.is_some() {
                self.device.synchronize()?;
            }
            let started = std::time::Instant::now();
            self.device.launch(launch.kernel, dims, &values)?;
            if let Some(profile) = &mut self.profile {
                self.device.synchronize()?;
                let n = pass.n as u64;
                profile.push(KernelTime {
                    kernel: spec.name.clone(),
                    role: spec.role.name().to_string(),
                    layers: spec.layers.clone(),
                    seconds: started.elapsed().as_secs_f64(),
                    flops: spec.flops.at(n),
                    bytes: spec.bytes.at(n),
                });
            }
        }
        Ok(())
    }

    fn run_schedule(&mut self, which: Schedule, pass: PassArgs) -> Result<()> {
        let launches = match which {
            Schedule::Forward => std::mem::take(&mut self.device_plan.forward),
            Schedule::Backward => std::mem::take(&mut self.device_plan.backward),
            Schedule::Update => std::mem::take(&mut self.device_plan.update),
        };
        let result = self.run(&launches, pass);
        match which {
            Schedule::Forward => self.device_plan.forward = launches,
            Schedule::Backward => self.device_plan.backward = launches,
            Schedule::Update => self.device_plan.update = launches,
        }
        result
    }

    fn check_params(&self, values: &[Vec<f32>]) -> Result<()> {
        let slots = &self.device_plan.params;
        if values.len() != slots.len() {
            return Err(BackendError::ParamCount {
                expected: slots.len(),
                got: values.len(),
            });
        }
        for (slot, value) in slots.iter().zip(values) {
            if value.len() != slot.len {
                return Err(BackendError::ParamSize {
                    name: slot.name.clone(),
                    got: value.len(),
                    expected: slot.len,
                });
            }
        }
        Ok(())
    }

    fn write_flat(&mut self, buffer: &str, values: &[Vec<f32>]) -> Result<()> {
        self.check_params(values)?;
        let mut flat = vec![0.0f32; self.device_plan.n_params.max(1)];
        for (slot, value) in self.device_plan.params.iter().zip(values) {
            flat[slot.offset..slot.offset + slot.len].copy_from_slice(value);
        }
        self.upload(buffer, &flat)
    }

    fn check_layer(&self, layer_idx: usize) -> Result<()> {
        if layer_idx >= self.plan.layers.len() {
            return Err(BackendError::UnknownLayer(format!(
                "#{layer_idx} (the plan has {} layers)",
                self.plan.layers.len()
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Schedule {
    Forward,
    Backward,
    Update,
}

impl<D: Device> PlanExecutor<D> {
    /// The `read_*` methods of [`Executor`] take `&self`.
    fn read_flat(&self, buffer: &str) -> Result<Vec<Vec<f32>>> {
        let (address, _) = self.address(buffer)?;
        let mut flat = vec![0.0f32; self.device_plan.n_params.max(1)];
        self.device.download(address, as_bytes_mut(&mut flat))?;
        Ok(self
            .device_plan
            .params
            .iter()
            .map(|slot| flat[slot.offset..slot.offset + slot.len].to_vec())
            .collect())
    }
}

impl<D: Device> Executor for PlanExecutor<D> {
    fn plan(&self) -> &Plan {
        &self.plan
    }

    fn device_name(&self) -> String {
        self.device.name()
    }

    fn fits_batch(&self, n: usize) -> Result<()> {
        let budget = self.device.memory_budget()?;
        check_batch_memory(&self.plan, n, self.bytes_per_image(), &budget)
    }

    fn forward_backward(&mut self, batch: &Batch<'_>, seed: u64) -> Result<()> {
        let n = batch.n;
        check_batch(&self.plan, batch)?;
        if n == 0 {
            return Ok(());
        }
        self.reserve(n)?;
        let input = self.device_plan.input.clone();
        self.upload(&input, batch.images)?;
        let labels: Vec<i32> = batch.labels.iter().map(|&l| l as i32).collect();
        let label_buffer = self.device_plan.labels.clone();
        self.upload(&label_buffer, &labels)?;
        let pass = PassArgs {
            n,
            training: true,
            rule: RULE_BACKPROP,
            seed,
            sgd: None,
        };
        self.run_schedule(Schedule::Forward, pass)?;
        self.run_schedule(Schedule::Backward, pass)?;
        self.forwarded = Forwarded::Train { n };
        self.has_grads = true;
        self.pending = true;
        Ok(())
    }

    fn set_profiling(&mut self, on: bool) -> bool {
        self.profile = on.then(Vec::new);
        true
    }

    fn take_profile(&mut self) -> Vec<KernelTime> {
        self.profile
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn take_stats(&mut self) -> Result<StepStats> {
        let sums = self.read_sums()?;
        if self.pending {
            self.clear_sums()?;
        }
        let carried = std::mem::take(&mut self.carried);
        Ok(StepStats {
            loss_sum: carried.loss_sum + sums.loss_sum,
            correct: carried.correct + sums.correct,
        })
    }

    fn sgd_update(&mut self, step: &SgdStep) -> Result<()> {
        if !self.has_grads {
            return Err(BackendError::Device(
                "sgd_update before any forward_backward".into(),
            ));
        }
        let pass = PassArgs {
            sgd: Some(*step),
            ..PassArgs::infer(0)
        };
        self.run_schedule(Schedule::Update, pass)
    }

    fn infer(&mut self, images: &[f32], n: usize) -> Result<Vec<f32>> {
        check_images(&self.plan, images, n)?;
        let classes = self.plan.classes;
        let image_len = self.plan.input.len();
        let chunk = self.capacity.max(INFER_BATCH);
        self.forwarded = Forwarded::Nothing;
        let mut probs = Vec::with_capacity(n * classes);
        let infer = std::mem::take(&mut self.device_plan.infer);
        let mut first = 0;
        let mut result = Ok(());
        while first < n && result.is_ok() {
            let count = chunk.min(n - first);
            result = (|| {
                self.reserve(count)?;
                let input = self.device_plan.input.clone();
                self.upload(
                    &input,
                    &images[first * image_len..(first + count) * image_len],
                )?;
                self.run(&infer, PassArgs::infer(count))?;
                let name = self.device_plan.probs.clone();
                probs.extend(self.download::<f32>(&name, count * classes)?);
                Ok(())
            })();
            first += count;
        }
        self.device_plan.infer = infer;
        result.map(|()| probs)
    }

    fn read_params(&self) -> Result<Vec<Vec<f32>>> {
        self.read_flat(&self.device_plan.param_buffer)
    }

    fn write_params(&mut self, values: &[Vec<f32>]) -> Result<()> {
        let name = self.device_plan.param_buffer.clone();
        self.write_flat(&name, values)
    }

    fn read_momentum(&self) -> Result<Vec<Vec<f32>>> {
        self.read_flat(&self.device_plan.momentum_buffer)
    }

    fn write_momentum(&mut self, values: &[Vec<f32>]) -> Result<()> {
        let name = self.device_plan.momentum_buffer.clone();
        self.write_flat(&name, values)
    }

    fn read_grads(&self) -> Result<Vec<Vec<f32>>> {
        self.read_flat(&self.device_plan.grad_buffer)
    }

    fn forward_to(&mut self, images: &[f32], n: usize, layer_idx: usize) -> Result<Vec<f32>> {
        self.check_layer(layer_idx)?;
        check_images(&self.plan, images, n)?;
        self.reserve(n.max(1))?;
        let input = self.device_plan.input.clone();
        self.upload(&input, images)?;
        let count = self.device_plan.layers[layer_idx].infer_launches;
        let launches = self.device_plan.infer[..count].to_vec();
        self.run(&launches, PassArgs::infer(n))?;
        self.forwarded = Forwarded::Infer {
            n,
            last_layer: layer_idx,
        };
        let output = self.device_plan.layers[layer_idx].output.clone();
        let len = n * self.plan.layers[layer_idx].out_shape.len();
        self.download(&output, len)
    }

    fn backward_to_input(
        &mut self,
        layer_idx: usize,
        signal: &[f32],
        rule: ReluRule,
    ) -> Result<Vec<f32>> {
        self.check_layer(layer_idx)?;
        let out_shape = self.plan.layers[layer_idx].out_shape;
        let n = self.forwarded.backward_from(layer_idx, out_shape, signal)?;
        let grad_output = self.device_plan.layers[layer_idx].grad_output.clone();
        self.upload(&grad_output, signal)?;
        let pass = PassArgs {
            rule: match rule {
                ReluRule::Backprop => RULE_BACKPROP,
                ReluRule::Deconvnet => RULE_DECONVNET,
                ReluRule::Guided => RULE_GUIDED,
            },
            ..PassArgs::infer(n)
        };
        let mask = self.device_plan.layers[layer_idx].signal_mask.clone();
        self.run(&mask, pass)?;
        for l in (0..=layer_idx).rev() {
            let launches = self.device_plan.layers[l].visual_backward.clone();
            self.run(&launches, pass)?;
        }
        let grad_input = self.device_plan.layers[0].grad_input.clone();
        self.download(&grad_input, n * self.plan.input.len())
    }
}
