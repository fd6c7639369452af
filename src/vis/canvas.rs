//! An RGB canvas: rectangles, nearest-neighbour tiles, text in the font of
//! [`runtime::draw`] (anti-aliased, blended over the canvas), and PNG output
//! (greyscale when every pixel is grey).

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

    /// Draws `text` `size_px` pixels tall with the top of its line at
    /// `(x, y)` (see [`runtime::draw::draw_text`]); each glyph pixel is
    /// blended over the canvas by its coverage. Text and background of grey
    /// colours stay grey.
    pub fn text(&mut self, x: usize, y: usize, text: &str, size_px: f32, color: Rgb) {
        runtime::draw::draw_text(x as i32, y as i32, text, size_px, |px, py, coverage| {
            if px < 0 || py < 0 || px as usize >= self.width || py as usize >= self.height {
                return;
            }
            let pixel = &mut self.pixels[py as usize * self.width + px as usize];
            for (channel, ink) in pixel.iter_mut().zip(color) {
                let blended = f32::from(*channel) * (1.0 - coverage) + f32::from(ink) * coverage;
                *channel = blended.round() as u8;
            }
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_blended_in_grey_inside_its_line() {
        if !runtime::draw::font_available() {
            return;
        }
        let (size, text) = (20.0, "Guided Backprop");
        let (width, height) = (
            runtime::draw::text_width(text, size),
            runtime::draw::line_height(size),
        );
        let mut canvas = Canvas::new(width + 20, height + 20, WHITE);
        canvas.text(10, 10, text, size, BLACK);
        assert!(canvas.is_grey());
        let inked = |x: usize, y: usize| canvas.get(x, y) != WHITE;
        let ink: Vec<(usize, usize)> = (0..canvas.height)
            .flat_map(|y| (0..canvas.width).map(move |x| (x, y)))
            .filter(|&(x, y)| inked(x, y))
            .collect();
        assert!(ink.len() > 100, "{} pixels of ink", ink.len());
        assert!(ink
            .iter()
            .all(|&(x, y)| x >= 10 && (10..10 + height).contains(&y)));
        // Anti-aliased: full ink and partial coverage both occur.
        assert!(ink.iter().any(|&(x, y)| canvas.get(x, y)[0] < 40));
        assert!(ink
            .iter()
            .any(|&(x, y)| (100..230).contains(&canvas.get(x, y)[0])));
    }
}
