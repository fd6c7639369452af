//! The labelled grid every figure is drawn as: a title, column groups with
//! a header each, and rows with a label on the left; each cell a tile with
//! an optional caption underneath.
//!
//! All tiles of a grid are enlarged by one factor ([`scale_for`] of the
//! largest tile side and the grid's `min_side_px`), so cells line up and the
//! same input pixel has the same size everywhere.
//!
//! Text is set in the font of [`runtime::draw`], case and all, as the caller
//! wrote it.

use super::canvas::{Canvas, Rgb, BLACK, WHITE};
use super::display::{scale_for, Tile, OUTSIDE, OUTSIDE_SQUARE_PX};
use runtime::draw::{line_height, text_width};

/// Size in pixels of titles, headers, row labels and captions.
const TEXT_PX: f32 = 20.0;
/// Size of captions wider than their cell at [`TEXT_PX`].
const SMALL_TEXT_PX: f32 = 13.0;
/// Space under a group header: its rule and a gap to the tiles.
const HEADER_RULE: usize = 4;
const MARGIN: usize = 12;
const CELL_GAP: usize = 3;
const GROUP_GAP: usize = 18;
const ROW_GAP: usize = 10;
const BOX_COLOR: Rgb = [230, 30, 30];
const CAPTION_COLOR: Rgb = [60, 60, 60];

/// One cell: a tile and the caption lines under it.
#[derive(Debug, Clone)]
pub struct Cell {
    pub tile: Tile,
    pub caption: Vec<String>,
}

/// One row: label lines on the left, then one cell per column.
#[derive(Debug, Clone)]
pub struct Row {
    pub label: Vec<String>,
    pub cells: Vec<Cell>,
}

/// A column group: a header over `columns` neighbouring columns.
#[derive(Debug, Clone)]
pub struct Group {
    pub header: String,
    pub columns: usize,
}

#[derive(Debug, Clone)]
pub struct Grid {
    /// The larger tile side is enlarged to at least this many pixels (see
    /// [`scale_for`]).
    pub min_side_px: usize,
    pub title: Vec<String>,
    pub groups: Vec<Group>,
    pub rows: Vec<Row>,
}

/// The size of caption text that fits `width` pixels ([`TEXT_PX`], else
/// [`SMALL_TEXT_PX`]).
fn caption_size(lines: &[String], width: usize) -> f32 {
    let widest = lines.iter().map(|l| text_width(l, TEXT_PX)).max();
    if widest.unwrap_or(0) <= width {
        TEXT_PX
    } else {
        SMALL_TEXT_PX
    }
}

/// Draws `tile` enlarged `scale` times with its top-left corner at `(x, y)`.
fn draw_tile(canvas: &mut Canvas, x: usize, y: usize, tile: &Tile, scale: usize) {
    for ty in 0..tile.h {
        for tx in 0..tile.w {
            for dy in 0..scale {
                for dx in 0..scale {
                    let (px, py) = (tx * scale + dx, ty * scale + dy);
                    let color = tile.pixels[ty * tile.w + tx].unwrap_or_else(|| {
                        OUTSIDE[(px / OUTSIDE_SQUARE_PX + py / OUTSIDE_SQUARE_PX) % 2]
                    });
                    canvas.put(x + px, y + py, color);
                }
            }
        }
    }
    let thickness = (scale / 3).max(1);
    for b in &tile.boxes {
        canvas.outline(
            x + b.x0 * scale,
            y + b.y0 * scale,
            (b.x1 - b.x0) * scale,
            (b.y1 - b.y0) * scale,
            thickness,
            BOX_COLOR,
        );
    }
}

/// Renders the grid on a white canvas.
pub fn render(grid: &Grid) -> Canvas {
    let tiles = || {
        grid.rows
            .iter()
            .flat_map(|r| r.cells.iter().map(|c| &c.tile))
    };
    let side = tiles().map(|t| t.h.max(t.w)).max().unwrap_or(1);
    let scale = scale_for(side, grid.min_side_px);
    let cell_w = tiles().map(|t| t.w).max().unwrap_or(1) * scale;
    let cell_h = tiles().map(|t| t.h).max().unwrap_or(1) * scale;
    let text_line = line_height(TEXT_PX);
    let caption_lines = grid
        .rows
        .iter()
        .flat_map(|r| r.cells.iter().map(|c| c.caption.len()))
        .max()
        .unwrap_or(0);
    let label_w = grid
        .rows
        .iter()
        .flat_map(|r| r.label.iter().map(|l| text_width(l, TEXT_PX)))
        .max()
        .unwrap_or(0);

    // Column x positions: groups separated by a wider gap.
    let mut columns = Vec::new();
    let mut group_spans = Vec::new();
    let mut x = MARGIN + label_w + if label_w > 0 { GROUP_GAP } else { 0 };
    for group in &grid.groups {
        let start = x;
        for _ in 0..group.columns {
            columns.push(x);
            x += cell_w + CELL_GAP;
        }
        // A group is at least as wide as its header.
        let end = (x - CELL_GAP).max(start + text_width(&group.header, TEXT_PX));
        group_spans.push((start, end));
        x = end + GROUP_GAP;
    }
    let title_w = grid.title.iter().map(|t| MARGIN + text_width(t, TEXT_PX));
    let width = (x - GROUP_GAP + MARGIN).max(title_w.max().unwrap_or(0) + MARGIN);
    let row_label_h = grid.rows.iter().map(|r| r.label.len()).max().unwrap_or(0) * text_line;
    let row_h = (cell_h + caption_lines * text_line).max(row_label_h) + ROW_GAP;
    let top = MARGIN + grid.title.len() * text_line + ROW_GAP + text_line + HEADER_RULE;
    let height = top + grid.rows.len() * row_h + MARGIN;

    let mut canvas = Canvas::new(width, height, WHITE);
    for (i, line) in grid.title.iter().enumerate() {
        canvas.text(MARGIN, MARGIN + i * text_line, line, TEXT_PX, BLACK);
    }
    let header_y = top - HEADER_RULE - text_line;
    for (group, (start, end)) in grid.groups.iter().zip(&group_spans) {
        canvas.text(*start, header_y, &group.header, TEXT_PX, BLACK);
        canvas.fill_rect(*start, header_y + text_line + 1, end - start, 2, BLACK);
    }
    for (r, row) in grid.rows.iter().enumerate() {
        let y = top + r * row_h;
        for (i, line) in row.label.iter().enumerate() {
            canvas.text(MARGIN, y + i * text_line, line, TEXT_PX, BLACK);
        }
        for (cell, &x) in row.cells.iter().zip(&columns) {
            draw_tile(&mut canvas, x, y, &cell.tile, scale);
            let size = caption_size(&cell.caption, cell_w);
            for (i, line) in cell.caption.iter().enumerate() {
                let line_y = y + cell.tile.h * scale + i * line_height(size);
                canvas.text(x, line_y, line, size, CAPTION_COLOR);
            }
        }
    }
    canvas
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vis::display::MIN_SIDE_PX;

    fn tile(v: u8) -> Tile {
        Tile {
            h: 2,
            w: 2,
            pixels: vec![Some([v; 3]); 4],
            boxes: Vec::new(),
        }
    }

    /// The second line of the row label, wider than the first.
    const WIDE: &str = "activation 12.34";

    /// A title, two groups of one column, one row labelled `label`, [`WIDE`].
    fn grid(label: &str) -> Grid {
        Grid {
            min_side_px: MIN_SIDE_PX,
            title: vec!["Title".into()],
            groups: vec![
                Group {
                    header: "Image".into(),
                    columns: 1,
                },
                Group {
                    header: "Guided backpropagation".into(),
                    columns: 1,
                },
            ],
            rows: vec![Row {
                label: vec![label.into(), WIDE.into()],
                cells: vec![
                    Cell {
                        tile: tile(0),
                        caption: vec!["#1".into()],
                    },
                    Cell {
                        tile: tile(128),
                        caption: Vec::new(),
                    },
                ],
            }],
        }
    }

    /// The top-left corner of the first tile.
    fn first_tile() -> (usize, usize) {
        let text_line = line_height(TEXT_PX);
        let x = MARGIN + text_width(WIDE, TEXT_PX) + GROUP_GAP;
        let y = MARGIN + text_line + ROW_GAP + text_line + HEADER_RULE;
        (x, y)
    }

    /// Whether any pixel of the rectangle differs from white.
    fn inked(canvas: &Canvas, x: usize, y: usize, w: usize, h: usize) -> bool {
        (y..y + h).any(|yy| (x..x + w).any(|xx| canvas.get(xx, yy) != WHITE))
    }

    #[test]
    fn cells_are_enlarged_and_laid_out_in_groups() {
        let canvas = render(&grid("unit 0"));
        // 2x2 tiles are enlarged 42 times; the second group starts a group
        // gap after the first, whose header is narrower than its tile.
        let scale = scale_for(2, MIN_SIDE_PX);
        assert_eq!(scale, 42);
        let (x0, y0) = first_tile();
        assert_eq!(canvas.get(x0, y0), [0; 3]);
        assert_eq!(canvas.get(x0 + 2 * scale - 1, y0 + 2 * scale - 1), [0; 3]);
        let x1 = x0 + 2 * scale + GROUP_GAP;
        assert_eq!(canvas.get(x1, y0), [128; 3]);
        assert_eq!(canvas.get(x1 - 1, y0), WHITE);
        // The second group is as wide as its header.
        let header = text_width("Guided backpropagation", TEXT_PX);
        assert!(header > 2 * scale, "header {header} px");
        assert_eq!(canvas.width, x1 + header + MARGIN);
    }

    #[test]
    fn labels_are_drawn_in_their_areas_with_their_case() {
        if !runtime::draw::font_available() {
            return;
        }
        let text_line = line_height(TEXT_PX);
        let canvas = render(&grid("Unit 0"));
        let (x0, y0) = first_tile();
        let label_w = text_width("Unit 0", TEXT_PX);
        // Title, headers and row label have ink; the gaps between them none.
        assert!(inked(
            &canvas,
            MARGIN,
            MARGIN,
            text_width("Title", TEXT_PX),
            text_line
        ));
        assert!(!inked(&canvas, 0, 0, canvas.width, MARGIN));
        let header_y = y0 - HEADER_RULE - text_line;
        assert!(inked(&canvas, x0, header_y, 84, text_line));
        assert!(!inked(&canvas, 0, header_y, x0, text_line));
        assert!(inked(&canvas, MARGIN, y0, label_w, text_line));
        assert!(!inked(
            &canvas,
            MARGIN + label_w + 1,
            y0,
            x0 - MARGIN - label_w - 1,
            text_line
        ));
        assert!(inked(&canvas, MARGIN, y0 + text_line, label_w, text_line));
        // The caption sits under its tile.
        assert!(inked(&canvas, x0, y0 + 84, 84, text_line));
        // Upper case is its own glyph: only the label area differs.
        let lower = render(&grid("unit 0"));
        assert_eq!((lower.width, lower.height), (canvas.width, canvas.height));
        let differs: Vec<(usize, usize)> = (0..canvas.height)
            .flat_map(|y| (0..canvas.width).map(move |x| (x, y)))
            .filter(|&(x, y)| canvas.get(x, y) != lower.get(x, y))
            .collect();
        assert!(!differs.is_empty());
        assert!(differs
            .iter()
            .all(|&(x, y)| x < MARGIN + label_w && (y0..y0 + text_line).contains(&y)));
    }
}
