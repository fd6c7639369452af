//! Text for every labelled PNG allcnnc writes: the training curves
//! ([`crate::train::curves`], plotters charts) and the visualisation figures
//! (`allcnnc visualize`, drawn on the compiler's own canvas).
//!
//! One font for both: DejaVu Sans from the system (Debian's
//! fonts-dejavu-core), loaded once here. It is registered with plotters as
//! [`FAMILY`], which charts name in their styles (plotters' default family for
//! axis and legend text is the same name). A canvas that is not a plotters
//! backend measures text with [`text_width`] and [`line_height`] and
//! rasterises it with [`draw_text`], through ab_glyph, the rasteriser under
//! plotters' own text; it is called directly because plotters' glyph
//! placement drops each glyph's left side bearing, which unevens the spacing
//! of letters ("Backpropa gation") at figure sizes.
//!
//! Invariant: without the font nothing fails; text is not drawn, its width
//! and height are 0 and [`font_available`] says so, so that callers can
//! warn.

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use plotters::style::FontStyle;
use std::sync::OnceLock;

/// The family every label is drawn in.
pub const FAMILY: &str = "sans-serif";

/// Where Debian, Arch and Fedora put DejaVu Sans.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// The font, loaded and registered with plotters on first use.
fn font() -> Option<&'static FontRef<'static>> {
    static FONT: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FONT.get_or_init(|| {
        FONT_PATHS.iter().find_map(|path| {
            let bytes = std::fs::read(path).ok()?;
            // Both ab_glyph and plotters borrow the bytes for the whole
            // process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            let font = FontRef::try_from_slice(bytes).ok()?;
            plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).ok()?;
            Some(font)
        })
    })
    .as_ref()
}

/// Loads the font once; returns whether one is available.
pub fn font_available() -> bool {
    font().is_some()
}

/// Height in pixels of one line of text `size_px` tall: ascent to descent
/// (which is what ab_glyph's pixel size measures) plus the font's line gap;
/// 0 without the font.
pub fn line_height(size_px: f32) -> usize {
    font().map_or(0, |font| {
        let scaled = font.as_scaled(PxScale::from(size_px));
        (scaled.height() + scaled.line_gap()).ceil() as usize
    })
}

/// Width in pixels of `text` at `size_px` (its advances and kerning); 0
/// without the font.
pub fn text_width(text: &str, size_px: f32) -> usize {
    font().map_or(0, |font| {
        let scaled = font.as_scaled(PxScale::from(size_px));
        let mut width = 0.0;
        let mut previous = None;
        for c in text.chars() {
            let id = scaled.glyph_id(c);
            if let Some(previous) = previous {
                width += scaled.kern(previous, id);
            }
            width += scaled.h_advance(id);
            previous = Some(id);
        }
        width.ceil() as usize
    })
}

/// Rasterises `text` `size_px` tall with the top of its line (the font's
/// ascent) at `(x, y)`: calls `put(x, y, coverage)` for every pixel the
/// glyphs touch, coverage in (0, 1]. A glyph may reach left of `x`
/// (negative side bearing); the caller clips. Without the font nothing is
/// drawn.
pub fn draw_text(x: i32, y: i32, text: &str, size_px: f32, mut put: impl FnMut(i32, i32, f32)) {
    let Some(font) = font() else {
        return;
    };
    let scaled = font.as_scaled(PxScale::from(size_px));
    let baseline = y as f32 + scaled.ascent();
    let mut pen = x as f32;
    let mut previous = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(previous) = previous {
            pen += scaled.kern(previous, id);
        }
        let glyph = id.with_scale_and_position(scaled.scale(), point(pen, baseline));
        if let Some(outline) = font.outline_glyph(glyph) {
            let bounds = outline.px_bounds();
            let (left, top) = (bounds.min.x as i32, bounds.min.y as i32);
            outline.draw(|gx, gy, coverage| {
                if coverage > 0.0 {
                    put(left + gx as i32, top + gy as i32, coverage.min(1.0));
                }
            });
        }
        pen += scaled.h_advance(id);
        previous = Some(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_drawn_inside_its_line_and_width() {
        if !font_available() {
            eprintln!("no DejaVu Sans on this machine; skipped");
            return;
        }
        let (size, text) = (20.0, "Guided backpropagation");
        let width = text_width(text, size);
        let height = line_height(size);
        assert!(width > 150 && width < 300, "width {width}");
        assert!(height > 15 && height < 30, "height {height}");
        let (mut n, mut min_y, mut max_y, mut max_x) = (0, i32::MAX, i32::MIN, i32::MIN);
        draw_text(10, 5, text, size, |x, y, _| {
            n += 1;
            min_y = min_y.min(y);
            max_y = max_y.max(y);
            max_x = max_x.max(x);
            assert!(x >= 10, "pixel left of the origin: {x}");
        });
        assert!(n > 200, "{n} pixels of ink");
        assert!(
            min_y >= 5 && max_y < 5 + height as i32,
            "rows {min_y}..={max_y}"
        );
        assert!(
            max_x <= 10 + width as i32 + 1,
            "ink at x {max_x}, width {width}"
        );
    }

    #[test]
    fn upper_and_lower_case_differ() {
        if !font_available() {
            return;
        }
        let ink = |text: &str| {
            let mut pixels = Vec::new();
            draw_text(0, 0, text, 20.0, |x, y, c| pixels.push((x, y, c.to_bits())));
            pixels
        };
        assert_ne!(ink("A"), ink("a"));
        assert!(text_width("W", 20.0) > text_width("i", 20.0));
    }
}
