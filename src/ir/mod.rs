//! The IR: a petgraph graph of a closed enum of ops, behind typed ids.
//!
//! Passes read and rewrite the network through [`Graph`]'s own API
//! ([`Graph::layers`], [`Graph::insert_after`], [`Graph::remove`], ...) and never
//! touch petgraph directly. Every node keeps the byte span of the `.net` text
//! it came from, so any later error can point at the line that caused it.
//!
//! Invariant: the layers form one chain from the input to the last layer (the
//! language has no branches yet); [`Graph::layers`] returns them in order.

pub mod training;

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::ops::Range;

pub use plan::{Activation, Padding, Shape};
pub use training::Training;

/// A byte range of the `.net` source a node came from.
pub type Span = Range<usize>;

/// A typed id of a layer in the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(NodeIndex);

/// Padding as written. [`Pad::resolve`] is the one place its rules become
/// explicit amounts (shape inference, lowering to the plan and receptive
/// fields all call it); the runtime only ever sees [`Padding`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pad {
    /// `k - 1` zeros in total on each axis, the extra one at the bottom/right:
    /// stride 1 keeps the size, stride s gives `ceil(in / s)`.
    Same,
    /// No padding.
    Valid,
    Explicit(Padding),
}

impl Pad {
    /// Resolves to explicit amounts for a kernel `kh x kw`.
    pub fn resolve(&self, kh: usize, kw: usize) -> Padding {
        match *self {
            Pad::Same => Padding {
                top: (kh - 1) / 2,
                left: (kw - 1) / 2,
                bottom: kh - 1 - (kh - 1) / 2,
                right: kw - 1 - (kw - 1) / 2,
            },
            Pad::Valid => Padding::default(),
            Pad::Explicit(padding) => padding,
        }
    }
}

/// How a pooling layer rounds its output size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rounding {
    /// Caffe's rule (the paper's models): `ceil((in + pad - k) / s) + 1`,
    /// minus one if the last window would start in the padding.
    Up,
    /// PyTorch's default: `floor((in + pad - k) / s) + 1`.
    Down,
}

/// The ops of the language. A closed set: passes match on it exhaustively.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    Conv {
        out_channels: usize,
        kernel: (usize, usize),
        stride: (usize, usize),
        pad: Pad,
        act: Activation,
        bias: bool,
    },
    MaxPool {
        kernel: (usize, usize),
        stride: (usize, usize),
        pad: Pad,
        round: Rounding,
    },
    AvgPool {
        kernel: (usize, usize),
        stride: (usize, usize),
        pad: Pad,
        round: Rounding,
    },
    GlobalAvgPool,
    Dropout {
        p: f64,
    },
    Softmax,
}

/// The window of a max or average pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolWindow {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub pad: Pad,
    pub round: Rounding,
}

impl Op {
    /// The window of a pooling op (max or average), `None` for other ops.
    pub fn pool_window(&self) -> Option<PoolWindow> {
        match *self {
            Op::MaxPool {
                kernel,
                stride,
                pad,
                round,
            }
            | Op::AvgPool {
                kernel,
                stride,
                pad,
                round,
            } => Some(PoolWindow {
                kernel,
                stride,
                pad,
                round,
            }),
            _ => None,
        }
    }

    /// The keyword of the op in `.net` text.
    pub fn keyword(&self) -> &'static str {
        match self {
            Op::Conv { .. } => "conv",
            Op::MaxPool { .. } => "maxpool",
            Op::AvgPool { .. } => "avgpool",
            Op::GlobalAvgPool => "gap",
            Op::Dropout { .. } => "dropout",
            Op::Softmax => "softmax",
        }
    }

    /// The prefix of default layer names (`conv1`, `pool2`, ...).
    pub fn name_prefix(&self) -> &'static str {
        match self {
            Op::Conv { .. } => "conv",
            Op::MaxPool { .. } | Op::AvgPool { .. } => "pool",
            Op::GlobalAvgPool => "gap",
            Op::Dropout { .. } => "drop",
            Op::Softmax => "softmax",
        }
    }
}

/// Per-layer figures computed by the `stats` pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LayerStats {
    pub params: u64,
    /// Multiply-accumulates of one image's forward pass.
    pub macs: u64,
    /// Bytes of the layer's output for one image (f32).
    pub activation_bytes: u64,
    /// Receptive field size (pixels of the input along one axis).
    pub receptive_field: u64,
    /// Distance in input pixels between neighbouring outputs.
    pub jump: u64,
}

/// One layer of the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub op: Op,
    /// Where in the `.net` text the layer was written (for a layer a pass
    /// created: the layer it was derived from).
    pub span: Span,
    /// Whether the name was written in the source (`name: conv ...`); other
    /// layers get default names (`conv1`, `pool1`, ...) by [`Graph::renumber`].
    pub labelled: bool,
    /// Set by shape inference.
    pub in_shape: Option<Shape>,
    pub out_shape: Option<Shape>,
    /// Set by the `stats` pass.
    pub stats: Option<LayerStats>,
}

impl Node {
    pub fn new(name: impl Into<String>, op: Op, span: Span) -> Self {
        Self {
            name: name.into(),
            op,
            span,
            labelled: false,
            in_shape: None,
            out_shape: None,
            stats: None,
        }
    }
}

/// A network: its input, classes, layers and optional training recipe.
#[derive(Debug, Clone)]
pub struct Graph {
    pub name: String,
    pub name_span: Span,
    pub input: Shape,
    pub input_span: Span,
    pub classes: usize,
    pub classes_span: Span,
    pub training: Option<Training>,
    graph: StableDiGraph<Node, ()>,
    first: Option<NodeIndex>,
}

impl Graph {
    pub fn new(name: impl Into<String>, input: Shape, classes: usize) -> Self {
        Self {
            name: name.into(),
            name_span: 0..0,
            input,
            input_span: 0..0,
            classes,
            classes_span: 0..0,
            training: None,
            graph: StableDiGraph::new(),
            first: None,
        }
    }

    /// Appends a layer at the end of the chain.
    pub fn push(&mut self, node: Node) -> NodeId {
        match self.layers().last().copied() {
            Some(last) => self.insert_after(last, node),
            None => {
                let idx = self.graph.add_node(node);
                self.first = Some(idx);
                NodeId(idx)
            }
        }
    }

    /// The layers in order from the input.
    pub fn layers(&self) -> Vec<NodeId> {
        let mut order = Vec::with_capacity(self.graph.node_count());
        let mut current = self.first;
        while let Some(idx) = current {
            order.push(NodeId(idx));
            current = self
                .graph
                .edges_directed(idx, Direction::Outgoing)
                .next()
                .map(|edge| edge.target());
        }
        order
    }

    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.graph[id.0]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.graph[id.0]
    }

    /// The nodes in order, borrowed.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> + '_ {
        self.layers().into_iter().map(move |id| &self.graph[id.0])
    }

    pub fn next(&self, id: NodeId) -> Option<NodeId> {
        self.graph
            .edges_directed(id.0, Direction::Outgoing)
            .next()
            .map(|edge| NodeId(edge.target()))
    }

    pub fn prev(&self, id: NodeId) -> Option<NodeId> {
        self.graph
            .edges_directed(id.0, Direction::Incoming)
            .next()
            .map(|edge| NodeId(edge.source()))
    }

    /// Inserts `node` right after `id` in the chain.
    pub fn insert_after(&mut self, id: NodeId, node: Node) -> NodeId {
        let new = self.graph.add_node(node);
        if let Some(next) = self.next(id) {
            if let Some(edge) = self.graph.find_edge(id.0, next.0) {
                self.graph.remove_edge(edge);
            }
            self.graph.add_edge(new, next.0, ());
        }
        self.graph.add_edge(id.0, new, ());
        NodeId(new)
    }

    /// Inserts `node` right before `id` in the chain.
    pub fn insert_before(&mut self, id: NodeId, node: Node) -> NodeId {
        match self.prev(id) {
            Some(prev) => self.insert_after(prev, node),
            None => {
                let new = self.graph.add_node(node);
                self.graph.add_edge(new, id.0, ());
                self.first = Some(new);
                NodeId(new)
            }
        }
    }

    /// Removes a layer, joining its neighbours.
    pub fn remove(&mut self, id: NodeId) -> Node {
        let prev = self.prev(id);
        let next = self.next(id);
        if self.first == Some(id.0) {
            self.first = next.map(|n| n.0);
        }
        let node = self.graph.remove_node(id.0).expect("NodeId of this graph");
        if let (Some(prev), Some(next)) = (prev, next) {
            self.graph.add_edge(prev.0, next.0, ());
        }
        node
    }

    /// A copy with nodes renumbered in chain order, so two graphs with the
    /// same layers compare equal whatever rewrites built them.
    pub fn compacted(&self) -> Graph {
        let mut out = Graph {
            graph: StableDiGraph::new(),
            first: None,
            ..self.clone()
        };
        for node in self.nodes() {
            out.push(node.clone());
        }
        out
    }

    /// Gives every unlabelled layer its default name: the op's prefix and its
    /// 1-based count among the layers of that prefix (`conv1`, `pool2`). Called
    /// after parsing and after every rewrite, so names are deterministic.
    pub fn renumber(&mut self) {
        let mut counts: std::collections::HashMap<&'static str, usize> = Default::default();
        for id in self.layers() {
            let node = self.node_mut(id);
            let prefix = node.op.name_prefix();
            let count = counts.entry(prefix).or_default();
            *count += 1;
            if !node.labelled {
                node.name = if prefix == "softmax" && *count == 1 {
                    prefix.to_string()
                } else {
                    format!("{prefix}{count}")
                };
            }
        }
    }

    /// After a rewrite and [`Graph::renumber`]: where an unlabelled layer's
    /// default name is a labelled layer's (a source that labels `conv2` and
    /// a derived conv that is now the second), labels every unlabelled layer
    /// whose name the renumbering changed with its name from before it
    /// (`suggested`): its old default name, or for a layer the rewrite
    /// added the name the pass suggested (e.g. `pool1_conv` for the conv
    /// that replaces `pool1`), made unique with a `_2`, `_3` ... suffix.
    /// Derived models so never repeat a name (E0210); a model without
    /// clashes (the paper's, unlabelled) keeps its default names.
    ///
    /// Node ids cannot tell added layers: the graph reuses a removed
    /// layer's index.
    pub fn label_clashes(&mut self, suggested: &HashMap<NodeId, String>) {
        let labelled: HashSet<String> = self
            .nodes()
            .filter(|node| node.labelled)
            .map(|node| node.name.clone())
            .collect();
        if !self
            .nodes()
            .any(|node| !node.labelled && labelled.contains(&node.name))
        {
            return;
        }
        let relabel: Vec<NodeId> = self
            .layers()
            .into_iter()
            .filter(|&id| {
                let node = self.node(id);
                !node.labelled
                    && suggested
                        .get(&id)
                        .is_some_and(|old| !old.is_empty() && *old != node.name)
            })
            .collect();
        // Labelled names, and the default names that stay, are taken.
        let mut used: HashSet<String> = self
            .layers()
            .into_iter()
            .filter(|id| !relabel.contains(id))
            .map(|id| self.node(id).name.clone())
            .collect();
        for id in relabel {
            let base = suggested[&id].clone();
            let mut name = base.clone();
            let mut k = 2;
            while used.contains(&name) {
                name = format!("{base}_{k}");
                k += 1;
            }
            used.insert(name.clone());
            let node = self.node_mut(id);
            node.name = name;
            node.labelled = true;
        }
    }

    /// Total parameters (after the `stats` pass).
    pub fn total_params(&self) -> u64 {
        self.nodes()
            .filter_map(|node| node.stats)
            .map(|stats| stats.params)
            .sum()
    }

    /// Total forward MACs per image (after the `stats` pass).
    pub fn total_macs(&self) -> u64 {
        self.nodes()
            .filter_map(|node| node.stats)
            .map(|stats| stats.macs)
            .sum()
    }

    /// Petgraph's view, for the DOT writer only.
    pub(crate) fn petgraph(&self) -> &StableDiGraph<Node, ()> {
        &self.graph
    }
}

/// What makes two models the same, spans aside: compared by the round-trip
/// and conversion tests, and hashed to tie checkpoints to a model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signature {
    pub input: Shape,
    pub classes: usize,
    pub layers: Vec<LayerSignature>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerSignature {
    pub name: String,
    pub op: Op,
    pub in_shape: Option<Shape>,
    pub out_shape: Option<Shape>,
    pub stats: Option<LayerStats>,
}

impl Graph {
    pub fn signature(&self) -> Signature {
        Signature {
            input: self.input,
            classes: self.classes,
            layers: self
                .nodes()
                .map(|node| LayerSignature {
                    name: node.name.clone(),
                    op: node.op.clone(),
                    in_shape: node.in_shape,
                    out_shape: node.out_shape,
                    stats: node.stats,
                })
                .collect(),
        }
    }

    /// A hex SHA-256 of the model's structure (layer names, ops, shapes).
    pub fn model_hash(&self) -> String {
        use sha2::Digest;
        let json = serde_json::to_string(&self.signature()).expect("signature serialises");
        let digest = sha2::Sha256::digest(json.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}
