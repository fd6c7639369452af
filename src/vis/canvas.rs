//! An RGB canvas: rectangles, nearest-neighbour tiles, text in the built-in
//! [`font`](super::font), and PNG output (greyscale when every pixel is grey).

use super::font::{glyph, ADVANCE, GLYPH_H, GLYPH_W};
use std::path::Path;

pub type Rgb = [u8; 3];

pub const WHITE: Rgb = [255, 255, 255];
pub const BLACK: Rgb = [0, 0, 0];

/// A `width x height` RGB picture, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<Rgb>,
}

impl Canvas {
    pub fn new(width: usize, height: usize, background: Rgb) -> Self {
        Self {
            width,
            height,
            pixels: vec![background; width * height],
        }
    }

    /// Sets one pixel; outside the canvas nothing happens.
    pub fn put(&mut self, x: usize, y: usize, color: Rgb) {
        if x < self.width && y < self.height {
            self.pixels[y * self.width + x] = color;
        }
    }

    pub fn get(&self, x: usize, y: usize) -> Rgb {
        self.pixels[y * self.width + x]
    }

    pub fn fill_rect(&mut self, x: usize, y: usize, w: usize, h: usize, color: Rgb) {
        for yy in y..(y + h).min(self.height) {
            for xx in x..(x + w).min(self.width) {
                self.pixels[yy * self.width + xx] = color;
            }
        }
    }

    /// The outline of a rectangle, `thickness` pixels inside its bounds.
    pub fn outline(&mut self, x: usize, y: usize, w: usize, h: usize, thickness: usize, c: Rgb) {
        let t = thickness.min(w).min(h);
        self.fill_rect(x, y, w, t, c);
        self.fill_rect(x, (y + h).saturating_sub(t), w, t, c);
        self.fill_rect(x, y, t, h, c);
        self.fill_rect((x + w).saturating_sub(t), y, t, h, c);
    }

    /// Draws `text` with its top-left corner at `(x, y)`, each font pixel a
    /// `scale x scale` square.
    pub fn text(&mut self, x: usize, y: usize, text: &str, scale: usize, color: Rgb) {
        for (i, c) in text.chars().enumerate() {
            let rows = glyph(c);
            let left = x + i * ADVANCE * scale;
            for (row, bits) in rows.iter().enumerate() {
                for col in 0..GLYPH_W {
                    if bits >> (GLYPH_W - 1 - col) & 1 == 1 {
                        self.fill_rect(left + col * scale, y + row * scale, scale, scale, color);
                    }
                }
            }
        }
    }

    /// Whether every pixel has `r == g == b`.
    pub fn is_grey(&self) -> bool {
        self.pixels.iter().all(|p| p[0] == p[1] && p[1] == p[2])
    }

    /// Writes a PNG: 8-bit greyscale when [`Canvas::is_grey`], else RGB.
    pub fn save_png(&self, path: &Path) -> Result<(), String> {
        let (w, h) = (self.width as u32, self.height as u32);
        let result = if self.is_grey() {
            let bytes = self.pixels.iter().map(|p| p[0]).collect();
            image::GrayImage::from_raw(w, h, bytes)
                .expect("size matches")
                .save_with_format(path, image::ImageFormat::Png)
        } else {
            let bytes = self.pixels.iter().flatten().copied().collect();
            image::RgbImage::from_raw(w, h, bytes)
                .expect("size matches")
                .save_with_format(path, image::ImageFormat::Png)
        };
        result.map_err(|err| format!("cannot write {}: {err}", path.display()))
    }
}

/// Height in canvas pixels of one line of text at `scale`.
pub const fn line_height(scale: usize) -> usize {
    (GLYPH_H + 2) * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_draws_the_glyph_bits() {
        let mut canvas = Canvas::new(12, 16, WHITE);
        canvas.text(0, 0, "1", 2, BLACK);
        // `1`: row 0 is `..#..`, so font column 2 -> canvas columns 4 and 5.
        assert_eq!(canvas.get(4, 0), BLACK);
        assert_eq!(canvas.get(5, 1), BLACK);
        assert_eq!(canvas.get(3, 0), WHITE);
        assert!(canvas.is_grey());
    }
}
