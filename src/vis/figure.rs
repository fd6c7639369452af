//! The labelled grid every figure is drawn as: a title, column groups with
//! a header each, and rows with a label on the left; each cell a tile with
//! an optional caption underneath.
//!
//! All tiles of a grid are enlarged by one factor ([`scale_for`] of the
//! largest tile side and the grid's `min_side_px`), so cells line up and the
//! same input pixel has the same size everywhere.

use super::canvas::{line_height, Canvas, Rgb, BLACK, WHITE};
use super::display::{scale_for, Tile, OUTSIDE, OUTSIDE_SQUARE_PX};
use super::font::text_width;

/// Text is drawn with font pixels this size.
const TEXT_SCALE: usize = 2;
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

/// The scale of the text that fits `width` pixels (2, else 1).
fn caption_scale(lines: &[String], width: usize) -> usize {
    let widest = lines.iter().map(|l| text_width(l)).max().unwrap_or(0);
    if widest * TEXT_SCALE <= width {
        TEXT_SCALE
    } else {
        1
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
    let text_line = line_height(TEXT_SCALE);
    let caption_lines = grid
        .rows
        .iter()
        .flat_map(|r| r.cells.iter().map(|c| c.caption.len()))
        .max()
        .unwrap_or(0);
    let label_w = grid
        .rows
        .iter()
        .flat_map(|r| r.label.iter().map(|l| text_width(l) * TEXT_SCALE))
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
        let end = (x - CELL_GAP).max(start + text_width(&group.header) * TEXT_SCALE);
        group_spans.push((start, end));
        x = end + GROUP_GAP;
    }
    let title_w = grid
        .title
        .iter()
        .map(|t| MARGIN + text_width(t) * TEXT_SCALE);
    let width = (x - GROUP_GAP + MARGIN).max(title_w.max().unwrap_or(0) + MARGIN);
    let row_label_h = grid.rows.iter().map(|r| r.label.len()).max().unwrap_or(0) * text_line;
    let row_h = (cell_h + caption_lines * text_line).max(row_label_h) + ROW_GAP;
    let top = MARGIN + grid.title.len() * text_line + ROW_GAP + text_line;
    let height = top + grid.rows.len() * row_h + MARGIN;

    let mut canvas = Canvas::new(width, height, WHITE);
    for (i, line) in grid.title.iter().enumerate() {
        canvas.text(MARGIN, MARGIN + i * text_line, line, TEXT_SCALE, BLACK);
    }
    let header_y = top - text_line;
    for (group, (start, end)) in grid.groups.iter().zip(&group_spans) {
        canvas.text(*start, header_y, &group.header, TEXT_SCALE, BLACK);
        canvas.fill_rect(*start, header_y + text_line - 4, end - start, 2, BLACK);
    }
    for (r, row) in grid.rows.iter().enumerate() {
        let y = top + r * row_h;
        for (i, line) in row.label.iter().enumerate() {
            canvas.text(MARGIN, y + i * text_line, line, TEXT_SCALE, BLACK);
        }
        for (cell, &x) in row.cells.iter().zip(&columns) {
            draw_tile(&mut canvas, x, y, &cell.tile, scale);
            let scale_text = caption_scale(&cell.caption, cell_w);
            for (i, line) in cell.caption.iter().enumerate() {
                let line_y = y + cell.tile.h * scale + 3 + i * line_height(scale_text);
                canvas.text(x, line_y, line, scale_text, CAPTION_COLOR);
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

    #[test]
    fn cells_are_enlarged_and_laid_out_in_groups() {
        let grid = Grid {
            min_side_px: MIN_SIDE_PX,
            title: vec!["t".into()],
            groups: vec![
                Group {
                    header: "a".into(),
                    columns: 1,
                },
                Group {
                    header: "b".into(),
                    columns: 1,
                },
            ],
            rows: vec![Row {
                label: vec!["unit 0".into()],
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
        };
        let canvas = render(&grid);
        // 2x2 tiles are enlarged 42 times; the second group starts a group
        // gap after the first.
        let scale = scale_for(2, MIN_SIDE_PX);
        assert_eq!(scale, 42);
        let x0 = MARGIN + text_width("unit 0") * TEXT_SCALE + GROUP_GAP;
        let y0 = MARGIN + line_height(TEXT_SCALE) + ROW_GAP + line_height(TEXT_SCALE);
        assert_eq!(canvas.get(x0, y0), [0; 3]);
        assert_eq!(canvas.get(x0 + 2 * scale - 1, y0 + 2 * scale - 1), [0; 3]);
        let x1 = x0 + 2 * scale + GROUP_GAP;
        assert_eq!(canvas.get(x1, y0), [128; 3]);
        assert_eq!(canvas.get(x1 - 1, y0), WHITE);
    }
}
