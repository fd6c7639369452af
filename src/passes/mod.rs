//! Passes over the IR and the manager that runs them.
//!
//! Each pass lives in its own file with a `///` contract saying what it
//! preserves. Analysis passes ([`shapes`], [`stats`]) fill in fields; rewrite
//! passes ([`strided`], [`allconv`], [`convpool`]) change the model (they are
//! not output-preserving: they derive another network, as the paper does).
//!
//! Invariant: nothing here imports `crate::back`. Grouping layers into
//! kernels is the CUDA back end's business (`back::cuda::fuse`); the command
//! line accepts `graph --after fuse` and runs that grouping as a check.

pub mod allconv;
pub mod convpool;
pub mod shapes;
pub mod stats;
pub mod strided;

use crate::diagnostic::Diagnostic;
use crate::ir::{Graph, NodeId};

/// One pass over the graph.
pub trait Pass {
    /// The name used on the command line (`--after shapes`).
    fn name(&self) -> &'static str;
    /// Runs the pass; returns whether it changed the graph.
    fn run(&self, graph: &mut Graph) -> Result<bool, Vec<Diagnostic>>;
}

/// Every pass by name, in the order they are listed in `--help`.
pub const PASS_NAMES: &[&str] = &["shapes", "stats", "strided", "allconv", "convpool"];

/// Looks a pass up by name.
pub fn by_name(name: &str) -> Option<Box<dyn Pass>> {
    Some(match name {
        "shapes" => Box::new(shapes::InferShapes),
        "stats" => Box::new(stats::Stats),
        "strided" => Box::new(strided::Strided),
        "allconv" => Box::new(allconv::AllConv),
        "convpool" => Box::new(convpool::ConvPool),
        _ => return None,
    })
}

/// Runs named passes in order and can snapshot the graph after any of them.
pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
    dump_after: Option<String>,
    dumped: Option<Graph>,
}

impl PassManager {
    pub fn new() -> Self {
        Self {
            passes: Vec::new(),
            dump_after: None,
            dumped: None,
        }
    }

    /// The analysis pipeline every command runs: shapes, then counts.
    pub fn analysis() -> Self {
        let mut pm = Self::new();
        pm.add(Box::new(shapes::InferShapes));
        pm.add(Box::new(stats::Stats));
        pm
    }

    /// A rewrite followed by the analysis of the derived model.
    pub fn derive(rewrite: Box<dyn Pass>) -> Self {
        let mut pm = Self::new();
        pm.add(Box::new(shapes::InferShapes));
        pm.add(rewrite);
        pm.add(Box::new(shapes::InferShapes));
        pm.add(Box::new(stats::Stats));
        pm
    }

    pub fn add(&mut self, pass: Box<dyn Pass>) {
        self.passes.push(pass);
    }

    /// Keeps a copy of the graph right after the (last run of the) named pass.
    pub fn dump_after(&mut self, name: impl Into<String>) {
        self.dump_after = Some(name.into());
    }

    /// The copy kept by [`PassManager::dump_after`].
    pub fn dumped(&self) -> Option<&Graph> {
        self.dumped.as_ref()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|pass| pass.name()).collect()
    }

    /// Runs every pass in order; an error names the pass it came from.
    pub fn run(&mut self, graph: &mut Graph) -> Result<(), Vec<Diagnostic>> {
        for pass in &self.passes {
            let changed = pass.run(graph).map_err(|diags| {
                diags
                    .into_iter()
                    .map(|diag| diag.note(format!("found by the `{}` pass", pass.name())))
                    .collect::<Vec<_>>()
            })?;
            if changed {
                // Names before renumbering: what a pass suggests for the
                // layers it adds, the old names of the others.
                let suggested: std::collections::HashMap<NodeId, String> = graph
                    .layers()
                    .into_iter()
                    .map(|id| (id, graph.node(id).name.clone()))
                    .collect();
                graph.renumber();
                graph.label_clashes(&suggested);
            }
            if self.dump_after.as_deref() == Some(pass.name()) {
                self.dumped = Some(graph.compacted());
            }
        }
        Ok(())
    }
}

impl Default for PassManager {
    fn default() -> Self {
        Self::new()
    }
}
