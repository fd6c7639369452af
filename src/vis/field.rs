//! Receptive fields: the input pixels one unit of a layer depends on.
//!
//! Size and jump come from the compiler's `stats` pass
//! ([`LayerStats::receptive_field`](crate::ir::LayerStats), `jump`). The
//! `stats` pass does not track where the field starts, so this module adds
//! the offset along each axis: with `j_in` the jump before a layer and `p` its
//! top (left) padding, `offset_out = offset_in + p * j_in`. Output position
//! `y` of a layer then sees input rows `y * jump - offset ..
//! y * jump - offset + size` (before clipping to the image), and likewise for
//! columns.
//!
//! The `stats` pass reports one size for both axes (the larger kernel side);
//! for the square kernels of every model in `models/` that is exact, for a
//! non-square kernel it is a superset of the true field.

use crate::ir::{Graph, Op, Shape};

/// Where the units of one layer look in the input image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ReceptiveField {
    /// Side of the field in input pixels.
    pub size: usize,
    /// Input pixels between neighbouring units.
    pub jump: usize,
    /// How far before `y * jump` (rows) the field of row `y` starts.
    pub offset_h: usize,
    /// How far before `x * jump` (columns) the field of column `x` starts.
    pub offset_w: usize,
}

/// A window of the input image: possibly reaching outside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Window {
    pub top: isize,
    pub left: isize,
    pub h: usize,
    pub w: usize,
}

/// The part of a [`Window`] inside an image: rows `y0..y1`, columns `x0..x1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Clipped {
    pub y0: usize,
    pub y1: usize,
    pub x0: usize,
    pub x1: usize,
}

impl Clipped {
    pub fn contains(&self, y: usize, x: usize) -> bool {
        (self.y0..self.y1).contains(&y) && (self.x0..self.x1).contains(&x)
    }

    pub fn is_empty(&self) -> bool {
        self.y0 >= self.y1 || self.x0 >= self.x1
    }
}

impl ReceptiveField {
    /// The field of the unit at output row `y`, column `x`.
    pub fn window(&self, y: usize, x: usize) -> Window {
        Window {
            top: (y * self.jump) as isize - self.offset_h as isize,
            left: (x * self.jump) as isize - self.offset_w as isize,
            h: self.size,
            w: self.size,
        }
    }
}

impl Window {
    /// The part inside an image of `shape` (empty when none is).
    pub fn clip(&self, shape: Shape) -> Clipped {
        let clamp = |v: isize, max: usize| v.clamp(0, max as isize) as usize;
        let y0 = clamp(self.top, shape.h);
        let x0 = clamp(self.left, shape.w);
        let y1 = clamp(self.top + self.h as isize, shape.h).max(y0);
        let x1 = clamp(self.left + self.w as isize, shape.w).max(x0);
        Clipped { y0, y1, x0, x1 }
    }
}

/// The receptive field of every layer, in layer order (the order of
/// [`Graph::layers`] and of the lowered plan's layers).
///
/// Returns `None` when the `stats` pass has not run (as after
/// [`crate::front::load`], it always has).
pub fn receptive_fields(graph: &Graph) -> Option<Vec<ReceptiveField>> {
    let mut fields = Vec::with_capacity(graph.len());
    let (mut offset_h, mut offset_w, mut jump_in) = (0usize, 0usize, 1usize);
    for node in graph.nodes() {
        let stats = node.stats?;
        let pad = match &node.op {
            Op::Conv { kernel, pad, .. }
            | Op::MaxPool { kernel, pad, .. }
            | Op::AvgPool { kernel, pad, .. } => Some(pad.resolve(kernel.0, kernel.1)),
            Op::GlobalAvgPool | Op::Dropout { .. } | Op::Softmax => None,
        };
        if let Some(pad) = pad {
            offset_h += pad.top * jump_in;
            offset_w += pad.left * jump_in;
        }
        let field = ReceptiveField {
            size: stats.receptive_field as usize,
            jump: stats.jump as usize,
            offset_h,
            offset_w,
        };
        jump_in = field.jump;
        fields.push(field);
    }
    Some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields_of(text: &str) -> Vec<ReceptiveField> {
        let source = crate::diagnostic::Source::new("m.net", text.to_string());
        let graph = crate::front::load(&source).expect("valid model");
        receptive_fields(&graph).expect("stats ran")
    }

    #[test]
    fn fashion_all_cnn_fields() {
        let fields = fields_of(
            "network m {
                input 1x28x28
                classes 10
                conv 8 3x3
                conv 8 3x3 stride=2
                conv 8 3x3
                conv 8 3x3 stride=2
                conv 8 3x3 pad=valid
                conv 10 1x1
                gap
                softmax
            }",
        );
        let sizes: Vec<_> = fields
            .iter()
            .map(|f| (f.size, f.jump, f.offset_h))
            .collect();
        // size r += (k-1) j; offset += pad_top * j_in (pad_top 1 for "same" 3x3).
        assert_eq!(
            sizes[..6],
            [
                (3, 1, 1),
                (5, 2, 2),
                (9, 2, 4),
                (13, 4, 6),
                (21, 4, 6),
                (21, 4, 6)
            ]
        );
        // The global average sees the whole 5x5 map of conv6: 21 + 4 * 4.
        assert_eq!(fields[6].size, 37);
    }

    #[test]
    fn windows_clip_to_the_image() {
        let field = ReceptiveField {
            size: 9,
            jump: 2,
            offset_h: 4,
            offset_w: 4,
        };
        let shape = Shape::new(1, 28, 28);
        let window = field.window(0, 13);
        assert_eq!((window.top, window.left), (-4, 22));
        assert_eq!(
            window.clip(shape),
            Clipped {
                y0: 0,
                y1: 5,
                x0: 22,
                x1: 28
            }
        );
        let outside = Window {
            top: 40,
            left: -20,
            h: 3,
            w: 3,
        };
        assert!(outside.clip(shape).is_empty());
    }
}
