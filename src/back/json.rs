//! The IR as JSON (`graph --format json`, `compile`): name, input, classes,
//! the recipe and every layer with its op, shapes, figures and source line.

use crate::diagnostic::Source;
use crate::ir::Graph;
use serde_json::{json, Value};

pub fn to_json(graph: &Graph, source: Option<&Source>) -> Value {
    let layers: Vec<Value> = graph
        .nodes()
        .map(|node| {
            json!({
                "name": node.name,
                "op": node.op,
                "in_shape": node.in_shape.map(|s| [s.c, s.h, s.w]),
                "out_shape": node.out_shape.map(|s| [s.c, s.h, s.w]),
                "stats": node.stats,
                "line": source.map(|s| s.line_of(node.span.start)),
            })
        })
        .collect();
    json!({
        "name": graph.name,
        "input": [graph.input.c, graph.input.h, graph.input.w],
        "classes": graph.classes,
        "model_hash": graph.model_hash(),
        "training": graph.training,
        "layers": layers,
    })
}
