//! `allcnnc export`: a checkpoint as an ONNX model, as PyTorch-layout
//! safetensors with a generated `MODEL.py`, or as allcnnc inference
//! weights (the checkpoint without its optimizer state).

use super::CliResult;
use crate::onnx;
use crate::pytorch;
use clap::{Args, ValueEnum};
use runtime::train::checkpoint::{Checkpoint, Progress};
use std::path::{Path, PathBuf};

/// `--format`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One .onnx file (opset 18): N x C x H x W float32 pixels in 0..1 in,
    /// class probabilities out, the preprocessing inside the graph
    Onnx,
    /// Inference weights in PyTorch's OIHW layout, the preprocessing tensors
    /// and metadata, and beside them MODEL.py, which builds the
    /// torch.nn.Sequential and loads them
    Safetensors,
    /// allcnnc's own checkpoint format without the optimizer state: the
    /// parameters, the preprocessing and the class names, for eval,
    /// predict, visualize and train --weights (the file to ship with a
    /// model)
    Weights,
}

#[derive(Args)]
pub struct ExportArgs {
    /// The model (.net file) the checkpoint was trained from
    pub file: PathBuf,
    /// Checkpoint (checkpoint.safetensors or best.safetensors of a run)
    #[arg(long)]
    pub weights: PathBuf,
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// The file to write (MODEL.onnx, MODEL.safetensors with MODEL.py beside
    /// it, or the weights' .safetensors)
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn export(args: &ExportArgs) -> CliResult {
    let model = super::model(&args.file)?;
    let plan = &model.plan;
    let checkpoint = Checkpoint::load(plan, &args.weights).map_err(|err| err.to_string())?;
    match args.format {
        ExportFormat::Onnx => {
            let proto = onnx::export::export(&model, &checkpoint).map_err(|err| err.to_string())?;
            let bytes = proto.to_bytes();
            write(&args.output, &bytes)?;
            let nodes = proto.graph.as_ref().map_or(0, |graph| graph.node.len());
            println!(
                "wrote {}: ONNX opset {}, {nodes} nodes, {} bytes; input `{}` N x {} x {} x {} float32 in 0..1, output `{}` N x {}",
                args.output.display(),
                onnx::export::OPSET,
                bytes.len(),
                onnx::export::INPUT,
                plan.input.c,
                plan.input.h,
                plan.input.w,
                onnx::export::OUTPUT,
                plan.classes
            );
        }
        ExportFormat::Safetensors => {
            if args.output.extension().is_some_and(|ext| ext == "py") {
                return Err(format!(
                    "-o {}: the safetensors file would be overwritten by the MODEL.py written beside it; name it MODEL.safetensors",
                    args.output.display()
                )
                .into());
            }
            let bytes = pytorch::safetensors(plan, &checkpoint).map_err(|err| err.to_string())?;
            let script_path = args.output.with_extension("py");
            let file_name = args
                .output
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            let script = pytorch::script(plan, &checkpoint, &file_name);
            write(&args.output, &bytes)?;
            write(&script_path, script.as_bytes())?;
            println!(
                "wrote {} ({} bytes) and {}",
                args.output.display(),
                bytes.len(),
                script_path.display()
            );
        }
        ExportFormat::Weights => {
            let progress = &checkpoint.progress;
            // A whitening matrix is written as its upper triangle: half the
            // bytes (18.9 MB instead of 37.7 for CIFAR's 3,072 values). One
            // fitted before fitting mirrored it may differ from its
            // transpose by rounding; it is mirrored here.
            let preprocess = checkpoint.preprocess.clone().map(|mut preprocess| {
                preprocess.symmetrize();
                preprocess
            });
            let inference = Checkpoint {
                preprocess,
                momentum: Vec::new(),
                // Where the weights came from; no unfinished epoch.
                progress: Progress {
                    epoch: progress.epoch,
                    seed: progress.seed,
                    best_accuracy: progress.best_accuracy,
                    ..Progress::default()
                },
                ..checkpoint
            };
            inference
                .save(plan, &args.output)
                .map_err(|err| err.to_string())?;
            let bytes = std::fs::metadata(&args.output).map_or(0, |m| m.len());
            println!(
                "wrote {} ({bytes} bytes): the weights of {} after epoch {}, preprocessing {}, no optimizer state",
                args.output.display(),
                inference.model,
                inference.progress.epoch,
                inference
                    .preprocess
                    .as_ref()
                    .map_or("none", |preprocess| preprocess.kind().name())
            );
        }
    }
    Ok(())
}

/// Writes the file whole or not at all.
fn write(path: &Path, bytes: &[u8]) -> CliResult {
    runtime::file::write_atomically(path, |out| std::io::Write::write_all(out, bytes))
        .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
    Ok(())
}
