//! `allcnnc eval` and `allcnnc predict`: a checkpoint on a device, a test
//! set or images through its preprocessing, text or JSON.

use super::args::{fit, load_split, load_trained, DeviceArg};
use super::flags;
use super::precision::PrecisionArg;
use super::CliResult;
use crate::back::cuda::Precision;
use clap::Args;
use runtime::data::{self, Split};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args)]
pub struct EvalArgs {
    pub file: PathBuf,
    /// Checkpoint (checkpoint.safetensors or best.safetensors of a run)
    #[arg(long)]
    pub weights: PathBuf,
    /// Data set folder or archive (.tar.gz, .tgz, .tar), as for `train`
    #[arg(long)]
    pub data: PathBuf,
    /// Use only the first N test images
    #[arg(long, value_parser = flags::count::<usize>)]
    pub limit: Option<usize>,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceArg,
    /// Convolutions on the GPU: fp32, or tensor cores with tf32 / bf16 inputs
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: PrecisionArg,
    #[arg(long, default_value_t = 256, value_parser = flags::count::<usize>)]
    pub batch: usize,
    #[arg(long)]
    pub json: bool,
}

pub fn eval(args: &EvalArgs) -> CliResult {
    let (model, mut exec, checkpoint) = load_trained(
        &args.file,
        &args.weights,
        args.device,
        args.precision.into(),
    )?;
    let plan = &model.plan;
    let mut test = load_split(&args.data, Split::Test, args.limit)?;
    fit(plan, &mut test, &args.data)?;
    checkpoint
        .check_class_names(&args.weights, &args.data, &test.class_names)
        .map_err(|e| e.to_string())?;
    if let Some(preprocess) = &checkpoint.preprocess {
        preprocess
            .apply_dataset(&mut test)
            .map_err(|e| e.to_string())?;
    }
    let eval = runtime::train::evaluate(exec.as_mut(), &Arc::new(test), args.batch)
        .map_err(|e| e.to_string())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&eval).expect("json"));
        return Ok(());
    }
    println!(
        "{}: {} test images, loss {:.4}, accuracy {:.2}%",
        plan.name,
        eval.images,
        eval.loss,
        100.0 * eval.accuracy
    );
    let width = eval
        .class_names
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(5)
        .max(5);
    println!("{:width$}  accuracy", "class");
    for (name, acc) in eval.class_names.iter().zip(&eval.per_class_accuracy) {
        println!("{name:width$}  {:>7.2}%", 100.0 * acc);
    }
    println!("confusion matrix (rows: true class, columns: predicted):");
    for (name, row) in eval.class_names.iter().zip(&eval.confusion) {
        let cells: Vec<String> = row.iter().map(|n| format!("{n:>5}")).collect();
        println!("{name:width$} {}", cells.join(""));
    }
    Ok(())
}

#[derive(Args)]
pub struct PredictArgs {
    pub file: PathBuf,
    #[arg(long)]
    pub weights: PathBuf,
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceArg,
    #[arg(long)]
    pub json: bool,
}

pub fn predict(args: &PredictArgs) -> CliResult {
    let (model, mut exec, checkpoint) =
        load_trained(&args.file, &args.weights, args.device, Precision::Fp32)?;
    let plan = &model.plan;
    let mut results = Vec::new();
    for path in &args.images {
        let (shape, mut image) =
            data::folder::load_image_as(path, plan.input.c).map_err(|e| e.to_string())?;
        if shape != plan.input {
            return Err(format!(
                "image {} is {} (CxHxW) but model `{}` expects {}",
                path.display(),
                shape,
                plan.name,
                plan.input
            )
            .into());
        }
        if let Some(preprocess) = &checkpoint.preprocess {
            preprocess.apply(&mut image, 1).map_err(|e| e.to_string())?;
        }
        let probs = exec.infer(&image, 1).map_err(|e| e.to_string())?;
        let mut ranked: Vec<(usize, f32)> = probs.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        ranked.truncate(5);
        let top: Vec<(String, f32)> = ranked
            .into_iter()
            .map(|(class, p)| {
                let name = checkpoint
                    .class_names
                    .get(class)
                    .cloned()
                    .unwrap_or_else(|| format!("class {class}"));
                (name, p)
            })
            .collect();
        results.push((path.display().to_string(), top));
    }
    if args.json {
        let json: Vec<_> = results
            .iter()
            .map(|(path, top)| {
                serde_json::json!({
                    "image": path,
                    "top5": top.iter().map(|(name, p)| serde_json::json!({"class": name, "probability": p})).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json).expect("json"));
    } else {
        for (path, top) in results {
            println!("{path}");
            for (name, p) in top {
                println!("  {:>6.2}%  {name}", 100.0 * p);
            }
        }
    }
    Ok(())
}
