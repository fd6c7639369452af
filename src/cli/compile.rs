//! The compiler's subcommands: `check`, `summary`, `convert`, `graph` and
//! `compile` (the IR, the summary, the runtime plan and the CUDA program).

use super::{load, CliResult, Failure};
use crate::back;
use crate::diagnostic::{emit_stderr, Source};
use crate::ir::Graph;
use crate::passes::{self, PassManager};
use clap::ValueEnum;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Variant {
    Strided,
    Allconv,
    Convpool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Json,
}

pub fn check(files: &[PathBuf]) -> CliResult {
    let mut failed = false;
    for file in files {
        match load(file) {
            Ok((_, graph)) => eprintln!(
                "{}: ok ({} layers, {} parameters)",
                file.display(),
                graph.len(),
                back::summary::thousands(graph.total_params())
            ),
            Err(Failure::Message(message)) => {
                eprintln!("error: {message}");
                failed = true;
            }
            Err(Failure::Reported) => failed = true,
        }
    }
    if failed {
        Err(Failure::Reported)
    } else {
        Ok(())
    }
}

pub fn summary(file: &Path, json: bool) -> CliResult {
    let (_, graph) = load(file)?;
    let summary = back::summary::summarize(&graph);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).expect("summary serialises")
        );
    } else {
        print!("{}", back::summary::render_text(&summary));
    }
    Ok(())
}

/// Applies a paper variant to a loaded graph (shapes and counts refreshed).
pub fn derive(source: &Source, graph: &Graph, to: Variant) -> Result<Graph, Failure> {
    let pass: Box<dyn passes::Pass> = match to {
        Variant::Strided => Box::new(passes::strided::Strided),
        Variant::Allconv => Box::new(passes::allconv::AllConv),
        Variant::Convpool => Box::new(passes::convpool::ConvPool),
    };
    let mut derived = graph.clone();
    if let Err(diags) = PassManager::derive(pass).run(&mut derived) {
        emit_stderr(source, &diags);
        return Err(Failure::Reported);
    }
    derived.name = match to {
        Variant::Strided => variant_name(&graph.name, "strided_cnn"),
        Variant::Allconv => variant_name(&graph.name, "all_cnn"),
        Variant::Convpool => variant_name(&graph.name, "convpool_cnn"),
    };
    Ok(derived.compacted())
}

/// `model_c` -> `all_cnn_c`; other names get the variant as a prefix.
fn variant_name(name: &str, variant: &str) -> String {
    match name.strip_prefix("model_") {
        Some(letter) => format!("{variant}_{letter}"),
        None => format!("{variant}_{name}"),
    }
}

pub fn convert(file: &Path, to: Variant, output: Option<&Path>) -> CliResult {
    let (source, graph) = load(file)?;
    let derived = derive(&source, &graph, to)?;
    let text = derived_text(file, &derived, to);
    match output {
        Some(path) => std::fs::write(path, &text)
            .map_err(|err| format!("cannot write {}: {err}", path.display()))?,
        None => print!("{text}"),
    }
    eprintln!(
        "parameters: {} ({}) -> {} ({})",
        back::summary::thousands(graph.total_params()),
        graph.name,
        back::summary::thousands(derived.total_params()),
        derived.name
    );
    Ok(())
}

/// The `.net` text of a model [`derive`]d from `file`, headed by a comment
/// saying how.
pub fn derived_text(file: &Path, derived: &Graph, to: Variant) -> String {
    let what = match to {
        Variant::Strided => {
            "strided: each max-pool deleted, its stride moved to the conv before it"
        }
        Variant::Allconv => {
            "allconv: each max-pool replaced by a conv of its kernel, stride and width"
        }
        Variant::Convpool => {
            "convpool: a dense 3x3 conv of the same width inserted before each max-pool"
        }
    };
    let header = vec![
        format!(
            "Derived by `allcnnc convert --to {}` from {}",
            to.word(),
            file.display()
        ),
        format!("({what}; Springenberg et al. 2015, Table 2)."),
    ];
    back::net::print(derived, &header)
}

impl Variant {
    /// The variant's name on the command line.
    pub fn word(self) -> &'static str {
        match self {
            Variant::Strided => "strided",
            Variant::Allconv => "allconv",
            Variant::Convpool => "convpool",
        }
    }
}

/// The name `graph --after` accepts for the CUDA back end's grouping, listed
/// after the passes.
const FUSE: &str = "fuse";

pub fn graph(file: &Path, format: GraphFormat, after: Option<&str>) -> CliResult {
    let (source, mut graph) = load(file)?;
    match after {
        // `load` already ran the analysis passes: the graph is as it was
        // right after them.
        None | Some("shapes" | "stats") => {}
        // Grouping into kernels belongs to the CUDA back end and leaves the
        // graph as it is; it runs here as a check of the analysed graph.
        Some(FUSE) => {
            if let Err(diags) = back::cuda::fuse::fuse(&graph) {
                let diags: Vec<_> = diags
                    .into_iter()
                    .map(|diag| diag.note(format!("found by the `{FUSE}` pass")))
                    .collect();
                emit_stderr(&source, &diags);
                return Err(Failure::Reported);
            }
            graph = graph.compacted();
        }
        // A rewrite runs now, and the graph is shown as it was right after it.
        Some(name) => {
            let Some(pass) = passes::by_name(name) else {
                return Err(format!(
                    "unknown pass `{name}`; passes: {}, {FUSE}",
                    passes::PASS_NAMES.join(", ")
                )
                .into());
            };
            let mut pm = PassManager::derive(pass);
            pm.dump_after(name);
            if let Err(diags) = pm.run(&mut graph) {
                emit_stderr(&source, &diags);
                return Err(Failure::Reported);
            }
            if let Some(dumped) = pm.dumped() {
                graph = dumped.clone();
            }
        }
    }
    match format {
        GraphFormat::Dot => print!("{}", back::dot::to_dot(&graph)),
        GraphFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&back::json::to_json(&graph, Some(&source)))
                .expect("json")
        ),
    }
    Ok(())
}

/// What `compile` does besides writing its files.
pub struct CompileOptions {
    pub report: bool,
    pub verify: bool,
    pub arch: String,
    pub precision: back::cuda::Precision,
}

pub fn compile(file: &Path, output: &Path, options: &CompileOptions) -> CliResult {
    let (source, graph) = load(file)?;
    std::fs::create_dir_all(output)
        .map_err(|err| format!("cannot create {}: {err}", output.display()))?;
    let write = |name: String, text: String| -> Result<PathBuf, Failure> {
        let path = output.join(name);
        std::fs::write(&path, text)
            .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
        Ok(path)
    };
    let summary = back::summary::summarize(&graph);
    let plan = back::plan::lower(&graph, Some(&source));
    // One grouping serves both the program and the report.
    let fusion = back::cuda::fuse::fuse_plan(&plan);
    let program = back::cuda::generate_fused(&plan, &fusion, options.precision);
    let written = [
        write(
            format!("{}.ir.json", graph.name),
            serde_json::to_string_pretty(&back::json::to_json(&graph, Some(&source)))
                .expect("json"),
        )?,
        write(
            format!("{}.summary.json", graph.name),
            serde_json::to_string_pretty(&summary).expect("json"),
        )?,
        write(
            format!("{}.summary.txt", graph.name),
            back::summary::render_text(&summary),
        )?,
        write(
            format!("{}.runtime-plan.json", graph.name),
            serde_json::to_string_pretty(&plan).expect("json"),
        )?,
        write(format!("{}.cu", graph.name), program.source.clone())?,
        write(
            format!("{}.plan.json", graph.name),
            serde_json::to_string_pretty(&program.plan).expect("json"),
        )?,
    ];
    print!("{}", back::summary::render_text(&summary));
    // Compiled first when asked, so that the report shows registers too.
    let compiled = if options.verify {
        Some(
            back::cuda::report::compile(&program, &options.arch)
                .map_err(|err| Failure::Message(err.to_string()))?,
        )
    } else {
        None
    };
    if options.report {
        let batch = graph.training.as_ref().map_or(128, |t| t.batch as u64);
        let registers = compiled
            .as_ref()
            .map(back::cuda::report::registers)
            .unwrap_or_default();
        print!(
            "{}",
            back::cuda::report::render(&fusion, &program.plan, batch, &registers)
        );
    }
    for path in written {
        eprintln!("wrote {}", path.display());
    }
    if let Some(compiled) = &compiled {
        let path = output.join(format!("{}.cubin", graph.name));
        std::fs::write(&path, &compiled.cubin)
            .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(compiled) = &compiled {
        print!(
            "{}",
            back::cuda::report::render_verification(&program, &options.arch, compiled)
        );
    }
    Ok(())
}
