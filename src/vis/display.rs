//! From values to pixels: one mapping, the same in every figure.
//!
//! - An input image or patch is shown as read, before any preprocessing:
//!   a value `v` in `0..=1` becomes `round(255 v)`.
//! - A reconstruction is divided by its largest absolute value over the whole
//!   image, then `x` in `-1..=1` becomes `round(128 + 127 x)`: grey (128) is
//!   zero, white the largest positive value, black (1) the most negative. An
//!   all-zero reconstruction is uniformly grey. A crop of it uses the same
//!   divisor (a reconstruction is zero outside the unit's receptive field, so
//!   the largest value lies inside the crop anyway).
//! - One channel is drawn grey, three channels RGB (one divisor for all
//!   three); any other count shows its first channel in grey.
//! - The part of a receptive-field window that lies outside the image has no
//!   pixels; figures draw it as a blue checkerboard ([`OUTSIDE`]).
//! - Figures enlarge tiles by nearest neighbour with the integer factor
//!   [`scale_for`]: `ceil(min_side / side)`, at least 1, where `min_side` is
//!   [`MIN_SIDE_PX`] (84) for grids of patches, so a 28x28 image is 84
//!   pixels wide and a 9x9 patch 90, and [`MIN_SIDE_ONE_IMAGE_PX`] (168)
//!   for the one-image figure, which has only four tiles a row.

use super::canvas::Rgb;
use super::field::{Clipped, Window};
use runtime::plan::Shape;

/// The side in pixels a tile is enlarged to at least.
pub const MIN_SIDE_PX: usize = 84;
/// The same for the one-image figure.
pub const MIN_SIDE_ONE_IMAGE_PX: usize = 168;

/// The two colours of the checkerboard outside the image, and its square size.
pub const OUTSIDE: [Rgb; 2] = [[190, 205, 230], [215, 225, 242]];
pub const OUTSIDE_SQUARE_PX: usize = 4;

/// A picture at the resolution of the input: `None` marks a pixel of a
/// window outside the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tile {
    pub h: usize,
    pub w: usize,
    pub pixels: Vec<Option<Rgb>>,
    /// Rectangles (in tile pixels, end-exclusive) outlined in red.
    pub boxes: Vec<Clipped>,
}

/// The enlargement factor of a tile whose larger side is `side`.
pub fn scale_for(side: usize, min_side_px: usize) -> usize {
    min_side_px.div_ceil(side.max(1)).max(1)
}

/// `round(255 v)` of an image value in `0..=1` (clamped).
pub fn image_level(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// The largest absolute value (0 for an empty or all-zero slice; NaN is
/// ignored).
pub fn max_abs(values: &[f32]) -> f32 {
    values
        .iter()
        .map(|v| v.abs())
        .filter(|v| v.is_finite())
        .fold(0.0, f32::max)
}

/// `round(128 + 127 v / max_abs)` (128 when `max_abs` is 0).
pub fn signal_level(v: f32, max_abs: f32) -> u8 {
    if max_abs <= 0.0 || !v.is_finite() {
        return 128;
    }
    (128.0 + 127.0 * (v / max_abs).clamp(-1.0, 1.0)).round() as u8
}

/// A tile of `values` (`H x W x C` of `shape`) over `window` (the whole
/// image when `None`), each channel value mapped by `level`.
fn tile(values: &[f32], shape: Shape, window: Option<Window>, level: impl Fn(f32) -> u8) -> Tile {
    let window = window.unwrap_or(Window {
        top: 0,
        left: 0,
        h: shape.h,
        w: shape.w,
    });
    let mut pixels = Vec::with_capacity(window.h * window.w);
    for ty in 0..window.h {
        for tx in 0..window.w {
            let (y, x) = (window.top + ty as isize, window.left + tx as isize);
            let inside = (0..shape.h as isize).contains(&y) && (0..shape.w as isize).contains(&x);
            pixels.push(inside.then(|| {
                let at = (y as usize * shape.w + x as usize) * shape.c;
                if shape.c == 3 {
                    [
                        level(values[at]),
                        level(values[at + 1]),
                        level(values[at + 2]),
                    ]
                } else {
                    let v = level(values[at]);
                    [v, v, v]
                }
            }));
        }
    }
    Tile {
        h: window.h,
        w: window.w,
        pixels,
        boxes: Vec::new(),
    }
}

/// An input image (values `0..=1`) over `window`.
pub fn image_tile(values: &[f32], shape: Shape, window: Option<Window>) -> Tile {
    tile(values, shape, window, image_level)
}

/// A reconstruction over `window`, scaled by its largest absolute value over
/// the whole image.
pub fn signal_tile(values: &[f32], shape: Shape, window: Option<Window>) -> Tile {
    let max = max_abs(values);
    tile(values, shape, window, |v| signal_level(v, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_map_zero_to_grey() {
        assert_eq!(signal_level(0.0, 2.0), 128);
        assert_eq!(signal_level(2.0, 2.0), 255);
        assert_eq!(signal_level(-2.0, 2.0), 1);
        assert_eq!(signal_level(1.0, 0.0), 128);
        assert_eq!(image_level(1.0), 255);
        assert_eq!(image_level(-0.5), 0);
    }

    #[test]
    fn a_28_pixel_image_is_at_least_84_wide() {
        assert_eq!(scale_for(28, MIN_SIDE_PX), 3);
        assert_eq!(scale_for(9, MIN_SIDE_PX), 10);
        assert_eq!(scale_for(21, MIN_SIDE_PX), 4);
        assert_eq!(scale_for(32, MIN_SIDE_PX), 3);
        assert_eq!(scale_for(200, MIN_SIDE_PX), 1);
        assert_eq!(scale_for(28, MIN_SIDE_ONE_IMAGE_PX), 6);
    }

    #[test]
    fn tiles_mark_pixels_outside_the_image() {
        let shape = Shape::new(1, 2, 2);
        let values = [0.0, -1.0, 0.5, 0.25];
        let window = Window {
            top: -1,
            left: 0,
            h: 2,
            w: 2,
        };
        let tile = signal_tile(&values, shape, Some(window));
        assert_eq!(tile.pixels[..2], [None, None]);
        assert_eq!(tile.pixels[2], Some([128; 3]));
        assert_eq!(tile.pixels[3], Some([1; 3]));
    }
}
