//! `allcnnc eval` and `allcnnc predict`: a checkpoint on a device, a test
//! set or images through its preprocessing, text or JSON.

use super::args::{fit, load_split, load_trained, DeviceArg};
use super::flags;
use super::precision::PrecisionArg;
use super::CliResult;
use crate::back::cuda::Precision;
use clap::Args;
use runtime::data::{self, Split};
use std::path::{Path, PathBuf};
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
    /// Also write every test image's prediction to FILE.jsonl: one line per
    /// image in the data set's order (index, label, predicted class, all
    /// class probabilities), to compare with another framework image by image
    #[arg(long, value_name = "FILE.jsonl")]
    pub per_image: Option<PathBuf>,
}

/// One line of `eval --per-image`.
#[derive(serde::Serialize)]
struct ImageLine<'a> {
    /// Position in the test split, in the reader's order (README, Data).
    index: usize,
    label: u32,
    class: &'a str,
    predicted: usize,
    predicted_class: &'a str,
    correct: bool,
    /// Every class's probability, in label order.
    probabilities: &'a [f32],
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
    let test = Arc::new(test);
    let eval = match &args.per_image {
        None => {
            runtime::train::evaluate(exec.as_mut(), &test, args.batch).map_err(|e| e.to_string())?
        }
        Some(path) => write_per_image(exec.as_mut(), &test, args.batch, path)?,
    };
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

/// Evaluates, writing one JSON line per image into `path` (whole or not at
/// all: an interrupted evaluation never leaves half a file).
fn write_per_image(
    exec: &mut dyn runtime::backend::Executor,
    test: &Arc<data::Dataset>,
    batch: usize,
    path: &Path,
) -> Result<runtime::train::Evaluation, String> {
    use std::io::Write;
    let io = |err: std::io::Error| format!("cannot write {}: {err}", path.display());
    let name = |class: usize| test.class_names.get(class).map_or("", String::as_str);
    // The evaluation's own error, told apart from a write error.
    let mut eval = Err(String::new());
    let written = runtime::file::write_atomically(path, |out| {
        // The first write error; later lines are not attempted.
        let mut failed: Option<std::io::Error> = None;
        let result =
            runtime::train::evaluate_each(exec, test, batch, |index, label, probabilities| {
                if failed.is_some() {
                    return;
                }
                let predicted = runtime::train::argmax(probabilities);
                let line = ImageLine {
                    index,
                    label,
                    class: name(label as usize),
                    predicted,
                    predicted_class: name(predicted),
                    correct: predicted == label as usize,
                    probabilities,
                };
                let written = serde_json::to_writer(&mut *out, &line)
                    .map_err(std::io::Error::from)
                    .and_then(|()| out.write_all(b"\n"));
                failed = written.err();
            })
            .map_err(|e| e.to_string());
        let evaluated = result.is_ok();
        eval = result;
        match failed {
            Some(err) => Err(err),
            None if evaluated => Ok(()),
            // Nothing to keep: the evaluation's error is returned below.
            None => Err(std::io::Error::other("evaluation failed")),
        }
    });
    let eval = eval?;
    written.map_err(io)?;
    Ok(eval)
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
    /// Print every image's full probability vector (and its top classes) as JSON
    #[arg(long)]
    pub json: bool,
    /// How many of the most probable classes to list per image
    #[arg(long, default_value_t = 5, value_parser = flags::count::<usize>)]
    pub top: usize,
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
        results.push((path.display().to_string(), probs));
    }
    let name = |class: usize| {
        checkpoint
            .class_names
            .get(class)
            .cloned()
            .unwrap_or_else(|| format!("class {class}"))
    };
    let top = |probs: &[f32]| -> Vec<(String, f32)> {
        let mut ranked: Vec<(usize, f32)> = probs.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        ranked.truncate(args.top);
        ranked
            .into_iter()
            .map(|(class, p)| (name(class), p))
            .collect()
    };
    if args.json {
        let classes: Vec<String> = (0..plan.classes).map(name).collect();
        let json: Vec<_> = results
            .iter()
            .map(|(path, probs)| {
                let top = top(probs);
                serde_json::json!({
                    "image": path,
                    "predicted": top.first().map(|(name, _)| name.clone()),
                    "classes": classes,
                    "probabilities": probs,
                    "top": top.iter().map(|(name, p)| serde_json::json!({"class": name, "probability": p})).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json).expect("json"));
    } else {
        for (path, probs) in &results {
            println!("{path}");
            for (name, p) in top(probs) {
                println!("  {:>6.2}%  {name}", 100.0 * p);
            }
        }
    }
    Ok(())
}
