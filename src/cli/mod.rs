//! The `allcnnc` command line: one function per subcommand.
//!
//! One file per group of subcommands: [`compile`] (check, summary, convert,
//! graph, compile), [`train`], [`ablate`] (the base model and its variants
//! trained side by side), [`evaluate`] (eval, predict), [`bench`],
//! [`visualize`]; [`args`] holds what the runtime commands share. Every
//! subcommand reads `.net` files through the [`driver`](crate::driver)
//! ([`model`]), whose diagnostics [`report`] renders to stderr; a failing
//! command exits with status 1 and never panics on bad input.

pub mod ablate;
pub mod args;
pub mod bench;
pub mod compile;
pub mod evaluate;
pub mod export;
pub mod flags;
pub mod import;
pub mod precision;
pub mod train;
pub mod visualize;

pub use compile::{derive, CompileOptions, GraphFormat, Variant};

use crate::diagnostic::{emit_stderr, escape_controls, Source};
use crate::driver::{DriverError, Model};
use crate::ir::Graph;
use clap::{Parser, Subcommand};
use precision::PrecisionArg;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "allcnnc",
    version,
    about = "Compiler for .net descriptions of convolutional networks (Springenberg et al., The All Convolutional Net)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Check .net files; exit 0 when all are valid, else print diagnostics and exit 1
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Per-layer table: output shape, parameters, MACs, receptive field, activation memory
    Summary {
        file: PathBuf,
        /// Print JSON for scripts
        #[arg(long)]
        json: bool,
    },
    /// Derive a variant of the paper (Strided-, All- or ConvPool-CNN) as .net text
    Convert {
        file: PathBuf,
        #[arg(long, value_enum)]
        to: Variant,
        /// Write here instead of stdout
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Print the IR graph as Graphviz DOT or JSON
    Graph {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "dot")]
        format: GraphFormat,
        /// Show the graph right after this pass (shapes, stats, strided, allconv, convpool)
        #[arg(long)]
        after: Option<String>,
    },
    /// Run the front end and write the IR, the summary, the runtime plan and the CUDA program (NAME.cu, NAME.plan.json) into a folder
    Compile {
        file: PathBuf,
        /// Output folder
        #[arg(short, long, default_value = "build")]
        output: PathBuf,
        /// Print the fused groups and each CUDA kernel's FLOPs and bytes moved
        #[arg(long)]
        report: bool,
        /// Compile every CUDA kernel with NVRTC, print registers, shared memory and spills, and write the module's cubin (NAME.cubin, for nvdisasm)
        #[arg(long)]
        verify: bool,
        /// GPU architecture for --verify
        #[arg(long, default_value = "sm_90")]
        arch: String,
        /// Arithmetic of the convolutions (forward and gradients): fp32 CUDA cores, or tensor cores with TF32 or BF16 inputs (fp32 accumulation)
        #[arg(long, value_enum, default_value = "fp32")]
        precision: PrecisionArg,
    },
    /// Train a model on a data set (recipe from the file's train section; flags override it)
    Train(train::TrainArgs),
    /// Train a max-pool model and its Strided-, ConvPool- and All-CNN variants under one recipe and seed, and compare them (table.md, table.json, curves.png beside the paper's Table 3); re-running continues where it stopped
    Ablate(ablate::AblateArgs),
    /// Evaluate a checkpoint: loss, accuracy, per-class accuracy, confusion matrix
    Eval(evaluate::EvalArgs),
    /// Class probabilities of images: the top classes, or every probability as JSON
    Predict(evaluate::PredictArgs),
    /// Training and inference throughput (images/s, GFLOP/s)
    Bench(bench::BenchArgs),
    /// What units respond to: top image patches and their backprop, deconvnet or guided-backprop reconstructions
    Visualize(visualize::VisualizeArgs),
    /// Write a checkpoint as an ONNX model (preprocessing included) or as PyTorch safetensors with a MODEL.py
    Export(export::ExportArgs),
    /// Read an ONNX model or a Caffe network (and its weights) as a .net file and a checkpoint
    Import(import::ImportArgs),
}

/// Runs the command line and returns the process status.
pub fn main() -> ExitCode {
    // Output piped into a reader that stops early (`| head`) ends the
    // process quietly, as for any Unix tool, instead of a panic in `println!`
    // (Rust ignores SIGPIPE by default, turning it into an error).
    // SAFETY: setting a signal's disposition to the default before any
    // thread is started has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { files } => compile::check(&files),
        Command::Summary { file, json } => compile::summary(&file, json),
        Command::Convert { file, to, output } => compile::convert(&file, to, output.as_deref()),
        Command::Graph {
            file,
            format,
            after,
        } => compile::graph(&file, format, after.as_deref()),
        Command::Compile {
            file,
            output,
            report,
            verify,
            arch,
            precision,
        } => compile::compile(
            &file,
            &output,
            &CompileOptions {
                report,
                verify,
                arch,
                precision: precision.into(),
            },
        ),
        Command::Train(args) => train::train(&args),
        Command::Ablate(args) => ablate::ablate(&args),
        Command::Eval(args) => evaluate::eval(&args),
        Command::Predict(args) => evaluate::predict(&args),
        Command::Bench(args) => bench::bench(&args),
        Command::Visualize(args) => visualize::visualize(&args),
        Command::Export(args) => export::export(&args),
        Command::Import(args) => import::import(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Reported) => ExitCode::FAILURE,
        Err(Failure::Message(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Why a command failed.
pub enum Failure {
    /// Diagnostics were already printed.
    Reported,
    /// A message still to print.
    Message(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Message(message)
    }
}

pub type CliResult = Result<(), Failure>;

/// Prints a driver error: diagnostics rendered with colour and counted,
/// anything else as a message.
pub fn report(err: DriverError) -> Failure {
    match err {
        DriverError::Diagnostics { file, diagnostics } => {
            emit_stderr(&file, &diagnostics);
            let errors = diagnostics.iter().filter(|d| d.is_error()).count();
            eprintln!(
                "{}: {errors} error{}",
                escape_controls(&file.name),
                if errors == 1 { "" } else { "s" }
            );
            Failure::Reported
        }
        DriverError::NotText { file, diagnostics } => {
            emit_stderr(&file, &diagnostics);
            Failure::Reported
        }
        other => Failure::Message(other.to_string()),
    }
}

/// Reads, checks and lowers one file through the driver, printing its
/// diagnostics.
pub fn model(path: &Path) -> Result<Model, Failure> {
    Model::from_file(path).map_err(report)
}

/// [`model`]'s source and graph.
pub fn load(path: &Path) -> Result<(Source, Graph), Failure> {
    let model = model(path)?;
    Ok((model.source, model.graph))
}
