//! The images that excite a unit most, and the reconstruction of one unit.
//!
//! Both run through the [`Executor`] trait, so they work on every backend:
//! [`Executor::forward_to`] gives a layer's activations (keeping the ReLU
//! inputs and max-pool switches), [`Executor::backward_to_input`] propagates
//! a signal back to the image with a [`ReluRule`].

use runtime::backend::{BackendError, Executor, Result};
use runtime::plan::{ReluRule, Shape};
use serde::Serialize;

/// One unit of a layer: a channel at an output position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Unit {
    pub channel: usize,
    pub y: usize,
    pub x: usize,
}

/// One image's largest activation in a channel, and where it is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Hit {
    /// Index of the image in the searched set.
    pub image: usize,
    pub activation: f32,
    pub y: usize,
    pub x: usize,
}

/// What the kept unit of the signal is set to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedValue {
    /// Its activation in the forward pass (the paper's "set every other
    /// activation to zero").
    Activation,
    /// 1, for reconstructions not conditioned on an image.
    One,
}

/// The largest value of every channel of one image's activation
/// (`H x W x C`, channels-last) and its position; the first position in
/// row-major order wins ties.
pub fn channel_maxima(act: &[f32], shape: Shape) -> Vec<(f32, usize, usize)> {
    let mut best = vec![(f32::NEG_INFINITY, 0, 0); shape.c];
    for (pos, pixel) in act.chunks_exact(shape.c).enumerate() {
        for (b, &v) in best.iter_mut().zip(pixel) {
            if v > b.0 {
                *b = (v, pos / shape.w, pos % shape.w);
            }
        }
    }
    best
}

/// Orders hits best first: larger activation, then smaller image index.
fn better(a: &Hit, b: &Hit) -> std::cmp::Ordering {
    b.activation
        .total_cmp(&a.activation)
        .then(a.image.cmp(&b.image))
}

/// The best `top` hits of some channels, updated image by image.
#[derive(Debug, Clone)]
pub struct TopHits {
    top: usize,
    channels: Vec<usize>,
    hits: Vec<Vec<Hit>>,
}

impl TopHits {
    pub fn new(channels: &[usize], top: usize) -> Self {
        Self {
            top,
            channels: channels.to_vec(),
            // Grown as hits come: `top` may be far more than the images.
            hits: vec![Vec::new(); channels.len()],
        }
    }

    /// Records image `image`'s activation (`H x W x C` of `shape`).
    pub fn add(&mut self, image: usize, act: &[f32], shape: Shape) {
        let maxima = channel_maxima(act, shape);
        for (hits, &channel) in self.hits.iter_mut().zip(&self.channels) {
            let (activation, y, x) = maxima[channel];
            let hit = Hit {
                image,
                activation,
                y,
                x,
            };
            let at = hits
                .binary_search_by(|h| better(h, &hit))
                .unwrap_or_else(|at| at);
            if at < self.top {
                hits.insert(at, hit);
                hits.truncate(self.top);
            }
        }
    }

    /// Per channel (in the order given to [`TopHits::new`]), the best hits,
    /// best first.
    pub fn into_hits(self) -> Vec<Vec<Hit>> {
        self.hits
    }
}

/// A search for the images that excite some channels of a layer most.
#[derive(Debug, Clone, Copy)]
pub struct Search<'a> {
    pub layer_idx: usize,
    pub channels: &'a [usize],
    /// Images kept per channel.
    pub top: usize,
    /// Images per forward pass.
    pub batch: usize,
}

impl Search<'_> {
    /// Runs `n` images (channels-last, preprocessed) forward to the layer in
    /// batches and returns, per channel, the `top` images whose largest
    /// activation in that channel is highest, best first (ties: the smaller
    /// image index first). `progress` is called with the number of images
    /// done after each batch.
    pub fn run(
        &self,
        exec: &mut dyn Executor,
        images: &[f32],
        n: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<Vec<Hit>>> {
        let (in_shape, out_shape) = shapes(exec, self.layer_idx)?;
        let mut best = TopHits::new(self.channels, self.top);
        let batch = self.batch.max(1);
        let mut start = 0;
        while start < n {
            let count = batch.min(n - start);
            let chunk = &images[start * in_shape.len()..(start + count) * in_shape.len()];
            let acts = exec.forward_to(chunk, count, self.layer_idx)?;
            for (i, act) in acts.chunks_exact(out_shape.len()).enumerate() {
                best.add(start + i, act, out_shape);
            }
            start += count;
            progress(start);
        }
        Ok(best.into_hits())
    }
}

/// The input shape of the plan and the output shape of `layer_idx`.
fn shapes(exec: &dyn Executor, layer_idx: usize) -> Result<(Shape, Shape)> {
    let plan = exec.plan();
    let layer = plan
        .layers
        .get(layer_idx)
        .ok_or_else(|| BackendError::UnknownLayer(format!("#{layer_idx}")))?;
    Ok((plan.input, layer.out_shape))
}

/// Reconstructs one unit per image with each of `rules`.
///
/// Runs the `k = units.len()` images forward to `layer_idx`, sets every
/// activation of that layer to zero except image `i`'s `units[i]` (set to
/// its activation or to 1, see [`SeedValue`]) and propagates that signal
/// back to the image with each rule. Returns, per rule, `k` input-shaped
/// (`H x W x C`) signals.
pub fn reconstruct(
    exec: &mut dyn Executor,
    layer_idx: usize,
    images: &[f32],
    units: &[Unit],
    rules: &[ReluRule],
    value: SeedValue,
) -> Result<Vec<Vec<Vec<f32>>>> {
    let (in_shape, out_shape) = shapes(exec, layer_idx)?;
    let k = units.len();
    let acts = exec.forward_to(images, k, layer_idx)?;
    let mut signal = vec![0.0f32; acts.len()];
    for (i, unit) in units.iter().enumerate() {
        if unit.channel >= out_shape.c || unit.y >= out_shape.h || unit.x >= out_shape.w {
            return Err(BackendError::Device(format!(
                "unit (channel {}, y {}, x {}) is outside the layer's output {out_shape}",
                unit.channel, unit.y, unit.x
            )));
        }
        let at = i * out_shape.len() + (unit.y * out_shape.w + unit.x) * out_shape.c + unit.channel;
        signal[at] = match value {
            SeedValue::Activation => acts[at],
            SeedValue::One => 1.0,
        };
    }
    rules
        .iter()
        .map(|&rule| {
            let back = exec.backward_to_input(layer_idx, &signal, rule)?;
            Ok(back
                .chunks_exact(in_shape.len())
                .map(<[f32]>::to_vec)
                .collect())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_hits_keep_the_best_in_order() {
        let shape = Shape::new(2, 1, 3);
        let mut top = TopHits::new(&[1], 2);
        // Channel 1 of each image: (0.5 at x=2), (0.9 at x=0), (0.5 at x=1).
        top.add(0, &[9.0, 0.1, 9.0, 0.2, 9.0, 0.5], shape);
        top.add(1, &[0.0, 0.9, 0.0, 0.1, 0.0, 0.9], shape);
        top.add(2, &[0.0, 0.0, 0.0, 0.5, 0.0, 0.4], shape);
        let hits = top.into_hits();
        assert_eq!(
            hits[0],
            [
                Hit {
                    image: 1,
                    activation: 0.9,
                    y: 0,
                    x: 0
                },
                Hit {
                    image: 0,
                    activation: 0.5,
                    y: 0,
                    x: 2
                },
            ]
        );
    }
}
