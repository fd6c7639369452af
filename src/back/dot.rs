//! The graph in Graphviz DOT, one box per layer with its output shape.

use crate::ir::Graph;
use std::fmt::Write;

pub fn to_dot(graph: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", graph.name);
    let _ = writeln!(out, "    rankdir=TB;");
    let _ = writeln!(out, "    node [shape=box, fontname=\"monospace\"];");
    let input = graph.input;
    let _ = writeln!(out, "    input [label=\"input\\n{input}\", shape=oval];");
    let mut prev = "input".to_string();
    for (layer_idx, node) in graph.nodes().enumerate() {
        let id = format!("n{layer_idx}");
        let shape = node
            .out_shape
            .map(|s| s.to_string())
            .unwrap_or_else(|| "?".into());
        let text = crate::back::net::op_text(&node.op).replace('"', "'");
        let _ = writeln!(
            out,
            "    {id} [label=\"{}\\n{text}\\n{shape}\"];",
            node.name
        );
        let _ = writeln!(out, "    {prev} -> {id};");
        prev = id;
    }
    // Keep petgraph's edge count honest: one edge per layer boundary.
    debug_assert_eq!(graph.petgraph().edge_count() + 1, graph.len().max(1));
    out.push_str("}\n");
    out
}
