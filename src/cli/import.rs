//! `allcnnc import`: an ONNX model or a Caffe network as a `.net` file and,
//! with its weights, a checkpoint that `eval`, `predict`, `visualize` and
//! `train --resume`-free fine-tuning read.

use super::CliResult;
use crate::import::{self, Imported};
use clap::{Args, ValueEnum};
use plan::Shape;
use std::path::{Path, PathBuf};

/// The largest model file read: 2 GiB, protobuf's limit on one message.
const MAX_MODEL_BYTES: u64 = 2 << 30;

/// `--format`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// An ONNX model (.onnx)
    Onnx,
}

#[derive(Args)]
pub struct ImportArgs {
    /// The model: MODEL.onnx
    pub file: PathBuf,
    /// The .net file to write
    #[arg(short, long)]
    pub output: PathBuf,
    /// Also write the weights as a checkpoint (inference weights, the
    /// preprocessing and class names where the source has them)
    #[arg(long, value_name = "NAME.safetensors")]
    pub weights_out: Option<PathBuf>,
    /// The image shape CxHxW (e.g. 3x32x32) where the file does not give it
    #[arg(long, value_name = "CxHxW", value_parser = parse_shape)]
    pub input: Option<Shape>,
    /// The source's format; by default from the file's extension
    #[arg(long, value_enum)]
    pub format: Option<ImportFormat>,
}

/// `CxHxW`, each a positive whole number.
fn parse_shape(text: &str) -> Result<Shape, String> {
    let parts: Vec<usize> = text
        .split('x')
        .map(|p| p.trim().parse::<usize>().ok().filter(|&v| v > 0))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("`{text}` is not CxHxW (e.g. 3x32x32)"))?;
    match parts[..] {
        [c, h, w] => Ok(Shape::new(c, h, w)),
        _ => Err(format!("`{text}` is not CxHxW (e.g. 3x32x32)")),
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    runtime::file::read_limited(path, MAX_MODEL_BYTES, what).map_err(|err| err.to_string())
}

pub fn import(args: &ImportArgs) -> CliResult {
    let format = match args.format {
        Some(format) => format,
        None => match args.file.extension().and_then(|e| e.to_str()) {
            Some("onnx") => ImportFormat::Onnx,
            _ => {
                return Err(format!(
                    "{}: cannot tell the format from the name; give --format onnx",
                    args.file.display()
                )
                .into())
            }
        },
    };
    let name = args.file.display().to_string();
    let imported: Imported = match format {
        ImportFormat::Onnx => {
            let bytes = read(&args.file, "an ONNX model")?;
            import::onnx::import(&name, &bytes, args.input).map_err(|err| err.to_string())?
        }
    };
    if args.weights_out.is_some() && !imported.has_weights() {
        return Err(format!("{name} holds no weights to write to --weights-out").into());
    }
    let model = imported
        .write(&args.output, args.weights_out.as_deref())
        .map_err(|err| err.to_string())?;
    let graph = &model.graph;
    println!(
        "wrote {}: model {}, {} layers, {} parameters, {} MACs, input {}, {} classes",
        args.output.display(),
        graph.name,
        graph.len(),
        graph.total_params(),
        graph.total_macs(),
        graph.input,
        graph.classes
    );
    for line in imported.header.iter().skip(1) {
        println!("  {line}");
    }
    if let Some(path) = &args.weights_out {
        println!("wrote {} (inference weights)", path.display());
    }
    Ok(())
}
