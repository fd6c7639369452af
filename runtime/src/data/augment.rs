//! Training-time augmentation: horizontal flips and translations.
//!
//! The paper's augmented runs use "horizontal flips and random translations
//! of up to 5 pixels" ([`Augment::PAPER`]). Each image of a batch is, with
//! probability 1/2, mirrored left-right and then shifted by `(dx, dy)`, each
//! uniform in `-max_shift..=max_shift`; pixels shifted in from outside are 0.
//! Augmentation runs on preprocessed images, so 0 is the data mean after
//! mean-std or ZCA (the usual zero padding of whitened data).
//!
//! Invariant: the result depends only on the images, the seed and each
//! image's position in the batch; a seed derived from `(seed, epoch, batch)`
//! ([`Augment::batch_seed`]) makes a resumed run see the same images.

use serde::{Deserialize, Serialize};

use crate::plan::Shape;
use crate::rng::SplitMix64;

/// Which augmentations to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Augment {
    /// Mirror left-right with probability 1/2.
    pub flip: bool,
    /// Largest shift in pixels along each axis (0: no translation).
    pub max_shift: usize,
}

/// The augmentation of a recipe's training batches.
impl From<&crate::train::Recipe> for Augment {
    fn from(recipe: &crate::train::Recipe) -> Self {
        Augment {
            flip: recipe.flip,
            max_shift: recipe.translate as usize,
        }
    }
}

/// Stream tag of augmentation seeds (see `SplitMix64::derive`).
const AUGMENT_STREAM: u64 = 0x4155_4731;

impl Augment {
    /// No augmentation (evaluation, and training "without augmentation").
    pub const NONE: Augment = Augment {
        flip: false,
        max_shift: 0,
    };
    /// The paper's: flips and translations of up to 5 pixels.
    pub const PAPER: Augment = Augment {
        flip: true,
        max_shift: 5,
    };

    pub fn is_none(&self) -> bool {
        !self.flip && self.max_shift == 0
    }

    /// The augmentation seed of batch `batch` of epoch `epoch`.
    pub fn batch_seed(seed: u64, epoch: u64, batch: u64) -> u64 {
        SplitMix64::derive(seed, &[AUGMENT_STREAM, epoch, batch]).next_u64()
    }

    /// The `(flip, dx, dy)` drawn for image `index` of a batch with `seed`.
    pub fn draw(&self, seed: u64, index: usize) -> (bool, isize, isize) {
        let mut rng = SplitMix64::derive(seed, &[index as u64]);
        let flip = self.flip && rng.coin();
        let span = 2 * self.max_shift + 1;
        let shift = self.max_shift as isize;
        let dx = rng.below(span) as isize - shift;
        let dy = rng.below(span) as isize - shift;
        (flip, dx, dy)
    }

    /// Augments the channels-last images of `images` (`shape.len()` values
    /// each) in place.
    pub fn apply(&self, images: &mut [f32], shape: Shape, seed: u64) {
        if self.is_none() || shape.is_empty() {
            return;
        }
        let mut source = vec![0.0f32; shape.len()];
        for (index, image) in images.chunks_exact_mut(shape.len()).enumerate() {
            let (flip, dx, dy) = self.draw(seed, index);
            source.copy_from_slice(image);
            transform(&source, image, shape, flip, dx, dy);
        }
    }
}

/// Writes into `out` the image `source`, mirrored when `flip`, then moved
/// `dx` pixels right and `dy` pixels down, with zeros shifted in.
pub fn transform(source: &[f32], out: &mut [f32], shape: Shape, flip: bool, dx: isize, dy: isize) {
    let (h, w, c) = (shape.h as isize, shape.w as isize, shape.c);
    for y in 0..h {
        let src_y = y - dy;
        for x in 0..w {
            let dst = ((y * w + x) as usize) * c;
            let src_x = x - dx;
            if src_y < 0 || src_y >= h || src_x < 0 || src_x >= w {
                out[dst..dst + c].fill(0.0);
                continue;
            }
            let src_x = if flip { w - 1 - src_x } else { src_x };
            let src = ((src_y * w + src_x) as usize) * c;
            out[dst..dst + c].copy_from_slice(&source[src..src + c]);
        }
    }
}
