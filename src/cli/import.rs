//! `allcnnc import`: an ONNX model or a Caffe network as a `.net` file and,
//! with its weights, a checkpoint that `eval`, `predict`, `visualize` and
//! `train --resume`-free fine-tuning read.

use super::{CliResult, Failure};
use crate::diagnostic::{self, Source};
use crate::import::{self, from_caffe::CaffeError, Imported};
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
    /// A Caffe network (.prototxt), weights from --weights X.caffemodel
    Caffe,
}

#[derive(Args)]
pub struct ImportArgs {
    /// The model: MODEL.onnx, a Caffe deploy.prototxt / train_val.prototxt, or a .caffemodel alone
    pub file: PathBuf,
    /// The .net file to write
    #[arg(short, long)]
    pub output: PathBuf,
    /// Also write the weights as a checkpoint (inference weights, the
    /// preprocessing and class names where the source has them)
    #[arg(long, value_name = "NAME.safetensors")]
    pub weights_out: Option<PathBuf>,
    /// Caffe weights (.caffemodel) for a .prototxt
    #[arg(long, value_name = "X.caffemodel")]
    pub weights: Option<PathBuf>,
    /// The image shape CxHxW (e.g. 3x32x32) where the file does not give it
    #[arg(long, value_name = "CxHxW", value_parser = parse_shape)]
    pub input: Option<Shape>,
    /// The source's format; by default from the file's extension
    #[arg(long, value_enum)]
    pub format: Option<ImportFormat>,
    /// Leave out every Caffe layer of this type (e.g. LRN), which the
    /// language cannot express; the imported network then computes another
    /// function than the source (the header says so)
    #[arg(long, value_name = "TYPE")]
    pub drop: Vec<String>,
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
            Some("prototxt" | "pbtxt" | "caffemodel") => ImportFormat::Caffe,
            _ => {
                return Err(format!(
                "{}: cannot tell the format from the name; give --format onnx or --format caffe",
                args.file.display()
            )
                .into())
            }
        },
    };
    let name = args.file.display().to_string();
    let imported: Imported = match format {
        ImportFormat::Onnx => {
            if args.weights.is_some() {
                return Err("--weights reads Caffe weights; an ONNX model holds its own"
                    .to_string()
                    .into());
            }
            let bytes = read(&args.file, "an ONNX model")?;
            import::onnx::import(&name, &bytes, args.input).map_err(|err| err.to_string())?
        }
        ImportFormat::Caffe => caffe(args, &name)?,
    };
    if args.weights_out.is_some() && !imported.has_weights() {
        return Err(format!(
            "{name} holds no weights to write to --weights-out{}",
            if format == ImportFormat::Caffe {
                " (give them with --weights X.caffemodel)"
            } else {
                ""
            }
        )
        .into());
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

/// A Caffe network from a prototxt (and a caffemodel), or a caffemodel
/// alone; problems in the text are shown against it.
fn caffe(args: &ImportArgs, name: &str) -> Result<Imported, Failure> {
    let binary = args.file.extension().is_some_and(|e| e == "caffemodel");
    if binary {
        if args.weights.is_some() {
            return Err(format!(
                "{name} is a caffemodel: it holds its weights; --weights is for a prototxt"
            )
            .into());
        }
        let bytes = read(&args.file, "a Caffe model")?;
        return import::from_caffe::import_binary(name, &bytes, args.input, &args.drop)
            .map_err(|err| err.to_string().into());
    }
    let bytes = read(&args.file, "a Caffe prototxt")?;
    let source = match crate::front::decode(name, bytes) {
        Ok(source) => source,
        Err((source, diagnostics)) => {
            diagnostic::emit_stderr(&source, &diagnostics);
            return Err(Failure::Reported);
        }
    };
    let weights = match &args.weights {
        Some(path) => Some((path.display().to_string(), read(path, "Caffe weights")?)),
        None => None,
    };
    let weights = weights.as_ref().map(|(n, b)| (n.as_str(), b.as_slice()));
    import::from_caffe::import(&source, weights, args.input, &args.drop).map_err(|err| match err {
        CaffeError::Diagnostics(source, diagnostics) => {
            let source: &Source = &source;
            diagnostic::emit_stderr(source, &diagnostics);
            Failure::Reported
        }
        CaffeError::Import(err) => err.to_string().into(),
    })
}
