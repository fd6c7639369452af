//! End-to-end runs of `allcnnc train`, `eval` and `predict` on a Fashion-MNIST
//! subset (Debian package `dataset-fashion-mnist`): interrupted runs resume to
//! the same weights, and bad inputs give clear errors, never panics.

mod fashion;
#[path = "../runtime/tests/support/safetensors_parts.rs"]
mod parts;
mod process;

use fashion::{require_data, FASHION};
use parts::Parts;
use process::{bin, interrupt_after_epochs, run, stderr};
use runtime::train::checkpoint::Checkpoint;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const TINY: &str = "network tiny {
    input 1x28x28
    classes 10
    conv 16 3x3 stride=2
    dropout 0.1
    conv 32 3x3 stride=2
    conv 10 1x1 act=none
    gap
    softmax
}
train {
    optimizer sgd momentum=0.9
    lr 0.05
    schedule cosine
    epochs 3
    batch 32
    preprocess normalize
    augment flip translate=2
}
";

fn write_model(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("tiny.net");
    std::fs::write(&path, text).expect("write model");
    path
}

/// `train MODEL --data FASHION --out OUT` and `flags`.
fn train_command(model: &Path, out: &Path, flags: &[&str]) -> Vec<String> {
    let head = [
        "train",
        model.to_str().unwrap(),
        "--data",
        FASHION,
        "--out",
        out.to_str().unwrap(),
    ];
    head.iter().chain(flags).map(|s| s.to_string()).collect()
}

fn train_args(model: &Path, out: &Path) -> Vec<String> {
    train_command(
        model,
        out,
        &[
            "--limit",
            "4000",
            "--test-limit",
            "500",
            "--device",
            "cpu",
            "--seed",
            "7",
        ],
    )
}

fn params_of(model: &Path, checkpoint: &Path) -> Vec<Vec<f32>> {
    let plan = allcnnc::driver::Model::from_file(model)
        .expect("model")
        .plan;
    Checkpoint::load(&plan, checkpoint)
        .expect("checkpoint")
        .params
}

/// A JSON array of numbers.
fn numbers(value: &serde_json::Value) -> Vec<f64> {
    let array = value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"));
    array.iter().map(|x| x.as_f64().unwrap()).collect()
}

fn check_resume(signal: &str) {
    require_data();
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), TINY);
    let whole = dir.path().join("whole");
    let out = run(&train_args(&model, &whole));
    assert!(out.status.success(), "{}", stderr(&out));

    let cut = dir.path().join("cut");
    let args = train_args(&model, &cut);
    let killed = interrupt_after_epochs(&args, &cut.join("metrics.jsonl"), 1, signal);
    assert!(
        !killed.status.success(),
        "the run finished before it was interrupted: {}",
        stderr(&killed)
    );
    let lines = std::fs::read_to_string(cut.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert!(lines < 3, "interrupted run wrote all epochs");

    if signal != "-KILL" {
        // Handled: a mid-epoch checkpoint, not a death at the signal.
        assert!(
            stderr(&killed).contains("checkpoint saved, continue with --resume"),
            "{}",
            stderr(&killed)
        );
    }

    let mut resume = args.clone();
    resume.push("--resume".into());
    let out = run(&resume);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("resuming at epoch"), "{err}");

    let a = params_of(&model, &whole.join("checkpoint.safetensors"));
    let b = params_of(&model, &cut.join("checkpoint.safetensors"));
    assert_eq!(
        a, b,
        "resumed run ended with other weights than the uninterrupted one"
    );
    let metrics = std::fs::read_to_string(cut.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 3, "{metrics}");
    assert!(cut.join("curves.png").exists());
    assert!(cut.join("best.safetensors").exists());
}

#[test]
fn killed_mid_epoch_resumes_to_the_same_weights() {
    // SIGKILL: nothing is written at the kill; resume restarts the epoch from
    // the last epoch checkpoint and, being deterministic, ends identical.
    check_resume("-KILL");
}

#[test]
fn interrupted_mid_epoch_checkpoints_and_resumes_to_the_same_weights() {
    // SIGINT: the run writes a mid-epoch checkpoint (epoch, batch and the
    // epoch's running sums) and resumes at the next batch.
    check_resume("-INT");
}

#[test]
fn terminated_mid_epoch_checkpoints_and_resumes_to_the_same_weights() {
    // SIGTERM (kill, timeout, schedulers, container stops) is handled like
    // Ctrl-C: a mid-epoch checkpoint, then a bit-exact resume.
    check_resume("-TERM");
}

/// Runs `args`, which must fail with status 1 saying `says`.
fn refused_run(args: &[String], says: &str) {
    let out = run(args);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(says), "{}", stderr(&out));
}

/// A one-epoch run of 256 images into `out`; returns its arguments.
fn short_run(model: &Path, out: &Path) -> Vec<String> {
    let mut args = train_args(model, out);
    let limit = args.iter().position(|a| a == "--limit").unwrap();
    args[limit + 1] = "256".into();
    args.extend(["--epochs".into(), "1".into()]);
    let done = run(&args);
    assert!(done.status.success(), "{}", stderr(&done));
    args
}

#[test]
fn a_fresh_run_never_replaces_an_earlier_one_unasked() {
    require_data();
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), TINY);
    let out_dir = dir.path().join("run");
    let args = short_run(&model, &out_dir);
    let checkpoint = std::fs::read(out_dir.join("checkpoint.safetensors")).unwrap();
    let metrics = std::fs::read(out_dir.join("metrics.jsonl")).unwrap();
    let unchanged = || {
        let now = |name: &str| std::fs::read(out_dir.join(name)).unwrap();
        assert_eq!(
            now("checkpoint.safetensors"),
            checkpoint,
            "checkpoint changed"
        );
        assert_eq!(now("metrics.jsonl"), metrics, "metrics changed");
    };

    // Again, with another seed: refused before any work, files untouched.
    let mut again = args.clone();
    let seed = again.iter().position(|a| a == "--seed").unwrap();
    again[seed + 1] = "8".into();
    let out = run(&again);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("already holds a run")
            && err.contains("model `tiny`")
            && err.contains("1 epoch finished")
            && err.contains("--resume")
            && err.contains("--overwrite"),
        "{err}"
    );
    unchanged();

    // Resuming a finished run says so instead of doing nothing.
    let mut resume = args.clone();
    resume.push("--resume".into());
    refused_run(
        &resume,
        "has finished 1 epochs and the run has 1: nothing to resume",
    );

    // A resumed run keeps its seed.
    let mut reseeded = again.clone();
    let epochs = reseeded.iter().position(|a| a == "--epochs").unwrap();
    reseeded[epochs + 1] = "2".into();
    reseeded.push("--resume".into());
    refused_run(&reseeded, "--seed 8 differs from the run's seed 7");

    // --overwrite that cannot start (fewer images than a batch) leaves the
    // earlier run as it was.
    let mut too_few = again.clone();
    let limit = too_few.iter().position(|a| a == "--limit").unwrap();
    too_few[limit + 1] = "10".into();
    too_few.push("--overwrite".into());
    refused_run(&too_few, "smaller than one batch");
    unchanged();

    // --overwrite replaces it: a fresh run of one epoch, one metrics line.
    again.push("--overwrite".into());
    let out = run(&again);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(out_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert_ne!(
        std::fs::read(out_dir.join("checkpoint.safetensors")).unwrap(),
        checkpoint,
        "seed 8 trained the same weights as seed 7"
    );
}

/// SIGHUP keeps its disposition: under `nohup` (SIGHUP ignored) a closed
/// terminal does not stop a run.
#[test]
fn nohup_still_protects_a_run_from_sighup() {
    require_data();
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), TINY);
    let out_dir = dir.path().join("run");
    let args = train_args(&model, &out_dir);
    let child = Command::new("nohup")
        .arg(env!("CARGO_BIN_EXE_allcnnc"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nohup");
    // After the first epoch, when every handler is in place.
    let started = Instant::now();
    while std::fs::read_to_string(out_dir.join("metrics.jsonl")).map_or(true, |t| t.is_empty())
        && started.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let done = child.wait_with_output().unwrap();
    assert!(done.status.success(), "{}", stderr(&done));
    let lines = std::fs::read_to_string(out_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 3, "{lines}");
}

#[test]
fn two_trainers_never_share_a_run_folder() {
    require_data();
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), TINY);
    let out_dir = dir.path().join("run");
    let args = train_args(&model, &out_dir);
    let first = bin()
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let second = run(&args);
    let waited = started.elapsed();
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    let err = stderr(&second);
    assert!(
        err.contains("in use by another allcnnc process")
            && err.contains(&format!("pid {}", first.id())),
        "{err}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "second run took {waited:?}"
    );

    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    let epochs: Vec<u64> = std::fs::read_to_string(out_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["epoch"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(epochs, [1, 2, 3], "metrics of more than one run");
    let plan = allcnnc::driver::Model::from_file(&model).unwrap().plan;
    let checkpoint = Checkpoint::load(&plan, &out_dir.join("checkpoint.safetensors")).unwrap();
    assert_eq!(
        (checkpoint.progress.epoch, checkpoint.progress.seed),
        (3, 7)
    );
}

/// `train MODEL --data /nonexistent/data --out OUT FLAGS`: its exit code
/// and stderr.
fn train_without_data(model: &Path, out: &Path, flags: &[&str]) -> (Option<i32>, String) {
    let result = bin()
        .args([
            "train",
            model.to_str().unwrap(),
            "--data",
            "/nonexistent/data",
        ])
        .arg("--out")
        .arg(out)
        .args(flags)
        .output()
        .unwrap();
    (result.status.code(), stderr(&result))
}

#[test]
fn a_bad_out_fails_before_any_data_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), TINY);
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a folder").unwrap();
    // The data folder does not exist: an error about it would mean the
    // data was read first.
    for (out, flags, says) in [
        (file.as_path(), &[][..], "is a file, not a folder"),
        (
            Path::new("/proc/allcnnc-run"),
            &[],
            "cannot create the run folder",
        ),
        (
            &dir.path().join("empty"),
            &["--resume"],
            "nothing to resume",
        ),
    ] {
        let (code, err) = train_without_data(&model, out, flags);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains(says) && !err.contains("/nonexistent"), "{err}");
    }
}

#[test]
fn flags_out_of_range_are_refused_with_the_train_sections_words() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), TINY);
    let model = model.to_str().unwrap();
    let train = [
        "train",
        model,
        "--data",
        "/nonexistent",
        "--out",
        "/nonexistent/out",
    ];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--lr", "-0.1"],
            "learning rate -0.1 is out of range: must be above 0 and below 100",
        ),
        (vec!["--lr", "NaN"], "must be above 0 and below 100"),
        (vec!["--lr", "0"], "must be above 0 and below 100"),
        (vec!["--epochs", "0"], "must be at least 1"),
        (vec!["--batch", "0"], "must be at least 1"),
        (vec!["--limit", "0"], "must be at least 1"),
        (vec!["--test-limit", "0"], "must be at least 1"),
    ];
    for (flags, says) in cases {
        let out = bin().args(train).args(&flags).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(
            err.contains(says) && !err.contains("/nonexistent"),
            "{flags:?}: {err}"
        );
    }
    let visualize = [
        "visualize",
        model,
        "--weights",
        "w",
        "--layer",
        "conv1",
        "--out",
        "o",
    ];
    let eval = ["eval", model, "--weights", "w", "--data", "d"];
    for args in [
        [&visualize[..], &["--top", "0"]].concat(),
        [&visualize[..], &["--limit", "0"]].concat(),
        vec!["bench", model, "--steps", "0"],
        vec!["bench", model, "--batch", "0"],
        [&eval[..], &["--batch", "0"]].concat(),
        [&eval[..], &["--limit", "0"]].concat(),
    ] {
        let out = bin().args(&args).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("must be at least 1"), "{args:?}: {err}");
    }
}

/// Writes an uncompressed IDX file of unsigned bytes: the magic number
/// (type 0x08, then the number of dimensions), `dims` big-endian, `data`.
fn write_idx(path: &Path, dims: &[u32], data: &[u8]) {
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        bytes.extend(d.to_be_bytes());
    }
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn an_empty_test_set_is_reported_as_such() {
    require_data();
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), TINY);
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for name in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"] {
        std::fs::copy(Path::new(FASHION).join(name), data.join(name)).unwrap();
    }
    write_idx(&data.join("t10k-images-idx3-ubyte"), &[0, 28, 28], &[]);
    write_idx(&data.join("t10k-labels-idx1-ubyte"), &[0], &[]);
    let out = bin()
        .args(["train", model.to_str().unwrap(), "--data"])
        .arg(&data)
        .args(["--limit", "64", "--epochs", "1", "--device", "cpu", "--out"])
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("has no test images"), "{err}");
}

#[test]
fn train_then_eval_json_and_predict() {
    require_data();
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), TINY);
    let run_dir = dir.path().join("run");
    let mut args = train_args(&model, &run_dir);
    args.extend(["--epochs".into(), "1".into()]);
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let eval = bin()
        .args(["eval", model.to_str().unwrap(), "--weights"])
        .arg(run_dir.join("best.safetensors"))
        .args([
            "--data", FASHION, "--limit", "1000", "--device", "cpu", "--json",
        ])
        .output()
        .unwrap();
    assert!(eval.status.success(), "{}", stderr(&eval));
    let json: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    let accuracy = json["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy));
    assert!(
        accuracy > 0.4,
        "one epoch on 4000 images should beat chance by far: {accuracy}"
    );
    assert_eq!(json["confusion"].as_array().unwrap().len(), 10);
    // predict: a synthetic 28x28 grey image gets five classes whose
    // probabilities are sorted and sum to at most 1.
    let png = dir.path().join("shirt.png");
    image::GrayImage::from_fn(28, 28, |x, y| image::Luma([((x * 9 + y * 3) % 256) as u8]))
        .save(&png)
        .unwrap();
    let predict = bin()
        .args(["predict", model.to_str().unwrap(), "--weights"])
        .arg(run_dir.join("best.safetensors"))
        .arg(&png)
        .args(["--device", "cpu", "--json"])
        .output()
        .unwrap();
    assert!(predict.status.success(), "{}", stderr(&predict));
    let json: serde_json::Value = serde_json::from_slice(&predict.stdout).unwrap();
    let top: Vec<f64> = json[0]["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["probability"].as_f64().unwrap())
        .collect();
    assert_eq!(top.len(), 5);
    assert!(top.windows(2).all(|w| w[0] >= w[1]) && top.iter().sum::<f64>() <= 1.0 + 1e-5);
    assert!(
        json[0]["top"][0]["class"].as_str().unwrap().len() > 1,
        "class names come from the checkpoint"
    );
    // The full vector: one probability per class, summing to 1, its largest
    // the first of the top list.
    let probabilities = numbers(&json[0]["probabilities"]);
    assert_eq!(probabilities.len(), 10);
    assert_eq!(json[0]["classes"].as_array().unwrap().len(), 10);
    assert!((probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-5);
    assert_eq!(probabilities.iter().cloned().fold(0.0, f64::max), top[0]);
    assert_eq!(json[0]["predicted"], json[0]["top"][0]["class"]);
    // --top K in the text view.
    let predict = bin()
        .args(["predict", model.to_str().unwrap(), "--weights"])
        .arg(run_dir.join("best.safetensors"))
        .arg(&png)
        .args(["--device", "cpu", "--top", "3"])
        .output()
        .unwrap();
    assert!(predict.status.success(), "{}", stderr(&predict));
    assert_eq!(String::from_utf8_lossy(&predict.stdout).lines().count(), 4);

    // eval --per-image: one line per test image, in order, agreeing with
    // the accuracy eval reports.
    let per_image = dir.path().join("per-image.jsonl");
    let eval = bin()
        .args(["eval", model.to_str().unwrap(), "--weights"])
        .arg(run_dir.join("best.safetensors"))
        .args([
            "--data", FASHION, "--limit", "300", "--device", "cpu", "--json",
        ])
        .arg("--per-image")
        .arg(&per_image)
        .output()
        .unwrap();
    assert!(eval.status.success(), "{}", stderr(&eval));
    let json: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&per_image)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 300);
    let correct = lines.iter().filter(|l| l["correct"] == true).count();
    assert_eq!(correct as f64 / 300.0, json["accuracy"].as_f64().unwrap());
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["index"], i);
        let p = numbers(&line["probabilities"]);
        assert_eq!(p.len(), 10);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{line}");
        let best = (0..10).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
        assert_eq!(line["predicted"], best, "{line}");
    }

    let line = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let metrics: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    for key in [
        "epoch",
        "lr",
        "train_loss",
        "train_accuracy",
        "test_loss",
        "test_accuracy",
        "images_per_s",
        "seconds",
    ] {
        assert!(metrics.get(key).is_some(), "metrics.jsonl lacks {key}");
    }
}

#[test]
fn data_that_does_not_fit_the_model_names_both_sides() {
    require_data();
    let dir = tempfile::tempdir().unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-cnn-c.net");
    let out = run(&train_args(&model, &dir.path().join("r")));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("1x28x28") && err.contains("3x32x32"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Trains TINY for one epoch on 256 images into `dir/run`; returns the
/// model file and the run's train arguments (without `--epochs`).
fn one_epoch_run(dir: &Path) -> (PathBuf, Vec<String>) {
    require_data();
    let model = write_model(dir, TINY);
    let mut args = short_run(&model, &dir.join("run"));
    // Without the `--epochs 1` the run had: resuming continues the recipe.
    args.truncate(args.len() - 2);
    (model, args)
}

/// `eval MODEL --weights WEIGHTS` on 100 Fashion-MNIST test images.
fn eval(model: &Path, weights: &Path) -> Output {
    bin()
        .args(["eval", model.to_str().unwrap(), "--weights"])
        .arg(weights)
        .args(["--data", FASHION, "--limit", "100", "--device", "cpu"])
        .output()
        .unwrap()
}

/// Evaluates with the run's checkpoint in `dir` edited by `edit`; the edit
/// must be refused (exit status 1, no panic) with a message containing
/// `expected`.
fn refused(dir: &Path, model: &Path, edit: &dyn Fn(&mut Parts), expected: &[&str]) {
    let mut parts = Parts::read(&dir.join("run/checkpoint.safetensors"));
    edit(&mut parts);
    let edited = dir.join("edited.safetensors");
    parts.write(&edited);
    let out = eval(model, &edited);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "eval was not refused: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for text in expected {
        assert!(err.contains(text), "`{text}` not in: {err}");
    }
}

/// An edit of a checkpoint and what its refusal must say.
type Edit<'a> = (&'a dyn Fn(&mut Parts), &'a [&'a str]);

/// Trains a short run, then checks that `eval` refuses each edit of its
/// checkpoint.
fn each_refused(edits: &[Edit<'_>]) {
    let dir = tempfile::tempdir().unwrap();
    let (model, _) = one_epoch_run(dir.path());
    for (edit, expected) in edits {
        refused(dir.path(), &model, edit, expected);
    }
}

#[test]
fn non_finite_weights_and_preprocessing_are_refused_naming_the_tensor() {
    each_refused(&[
        (
            &|c| c.set("conv2.weight", 5, f32::NAN),
            &["`conv2.weight`", "NaN"],
        ),
        (
            &|c| c.set("momentum.conv1.bias", 3, f32::INFINITY),
            &["`momentum.conv1.bias`", "inf"],
        ),
        (
            &|c| c.set("preprocess.std", 0, 0.0),
            &["`preprocess.std`", "channel 0", "0"],
        ),
    ]);
}

#[test]
fn another_dtype_or_a_partial_optimizer_state_is_refused_naming_the_tensor() {
    each_refused(&[
        (
            &|c| c.make_bf16("conv1.weight"),
            &["`conv1.weight`", "BF16", "F32"],
        ),
        (
            &|c| c.tensors.retain(|t| t.0 != "momentum.conv2.weight"),
            &["`momentum.conv2.weight`"],
        ),
        (
            &|c| c.tensors.retain(|t| t.0 != "conv3.bias"),
            &["`conv3.bias`"],
        ),
    ]);
}

#[test]
fn missing_or_malformed_metadata_is_refused_naming_the_key() {
    each_refused(&[
        (
            &|c| drop(c.metadata.remove("class_names")),
            &["`class_names`", "missing"],
        ),
        (
            &|c| drop(c.metadata.insert("class_names".into(), "[\"a\", 3]".into())),
            &["`class_names`"],
        ),
        (
            &|c| drop(c.metadata.remove("preprocess")),
            &["`preprocess`"],
        ),
        (
            &|c| drop(c.metadata.insert("epoch".into(), "1e30".into())),
            &["`epoch`", "1e30"],
        ),
    ]);
}

#[test]
fn class_names_in_another_order_are_refused_naming_both_lists() {
    each_refused(&[(
        &|c| {
            let names = c.metadata.get_mut("class_names").unwrap();
            *names = names.replace("\"T-shirt/top\",\"Trouser\"", "\"Trouser\",\"T-shirt/top\"");
        },
        &[
            "T-shirt/top, Trouser, Pullover",
            "Trouser, T-shirt/top, Pullover",
        ],
    )]);
}

#[test]
fn resume_refuses_an_epoch_out_of_range_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut args) = one_epoch_run(dir.path());
    args.extend(["--epochs".into(), "2".into(), "--resume".into()]);
    let checkpoint = dir.path().join("run/checkpoint.safetensors");
    let whole = Parts::read(&checkpoint);
    for epoch in ["-3", "abc", "1e30", "4294967296"] {
        let mut parts = whole.clone();
        parts.metadata.insert("epoch".into(), epoch.into());
        parts.write(&checkpoint);
        let out = run(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "epoch {epoch} resumed: {err}");
        assert!(
            err.contains("`epoch`") && err.contains(epoch) && !err.contains("panicked"),
            "{err}"
        );
    }
}

#[test]
fn checkpoint_of_another_model_names_the_layer_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _) = one_epoch_run(dir.path());
    let run_dir = dir.path().join("run");
    let other = dir.path().join("other.net");
    std::fs::write(&other, TINY.replace("conv 32 3x3", "conv 24 3x3")).unwrap();
    let out = bin()
        .args(["eval", other.to_str().unwrap(), "--weights"])
        .arg(run_dir.join("checkpoint.safetensors"))
        .args(["--data", FASHION, "--device", "cpu"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("conv2") && err.contains("3x3x16x32") && err.contains("3x3x16x24"),
        "{err}"
    );

    // A truncated checkpoint is an error, not a panic.
    let bytes = std::fs::read(run_dir.join("checkpoint.safetensors")).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = bin()
        .args(["eval", model.to_str().unwrap(), "--weights"])
        .arg(&cut)
        .args(["--data", FASHION, "--device", "cpu"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("truncated or corrupt"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_diverging_run_stops_and_names_the_step() {
    require_data();
    let dir = tempfile::tempdir().unwrap();
    // Linear layers: nothing dies at a high rate, the weights blow up.
    let model = write_model(
        dir.path(),
        &TINY.replace(" stride=2\n", " stride=2 act=none\n"),
    );
    let mut args = train_args(&model, &dir.path().join("run"));
    args.extend(["--lr".into(), "90".into(), "--epochs".into(), "2".into()]);
    let out = run(&args);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("lower learning rate")
            && err.contains("step")
            && err.contains("no checkpoint was written yet"),
        "{err}"
    );
}

#[test]
fn missing_data_folder_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), TINY);
    let (code, err) = train_without_data(&model, &dir.path().join("r"), &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("/nonexistent/data"), "{err}");
}

/// `--device emulator` runs the generated CUDA kernels: from the same seed
/// it starts from the CPU's weights and dropout masks, so one step's
/// momentum (the update of every parameter) agrees with the CPU's within
/// fp32 rounding.
#[test]
fn emulator_takes_the_cpu_step() {
    require_data();
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), TINY);
    let mut momenta = Vec::new();
    for device in ["cpu", "emulator"] {
        let out = dir.path().join(device);
        let args = train_command(
            &model,
            &out,
            &[
                "--device",
                device,
                "--init",
                "he",
                "--epochs",
                "1",
                "--limit",
                "2",
                "--test-limit",
                "2",
                "--batch",
                "2",
                "--seed",
                "1",
            ],
        );
        let output = run(&args);
        assert!(output.status.success(), "{device}: {}", stderr(&output));
        let plan = allcnnc::driver::Model::from_text("tiny.net", TINY)
            .expect("model")
            .plan;
        let checkpoint =
            Checkpoint::load(&plan, &out.join("checkpoint.safetensors")).expect("checkpoint");
        momenta.push((plan, checkpoint.momentum));
    }
    let (plan, cpu) = &momenta[0];
    let emulated = &momenta[1].1;
    for ((spec, a), b) in plan.params().iter().zip(emulated).zip(cpu) {
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "{}: no update on the cpu", spec.name);
        let error = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            error <= 1e-4 * scale,
            "momentum of {}: largest difference {error} vs largest value {scale}",
            spec.name
        );
    }
}

/// `bench` on the CPU: the peak and the model's limit beside the figures,
/// bf16 products where the CPU has them, and TF32 refused (no CPU has it).
#[test]
fn cpu_bench_reports_its_limit_and_refuses_tf32() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fashion-all-cnn.net");
    let bench = |precision: &str| {
        bin()
            .args([
                "bench",
                model.to_str().unwrap(),
                "--device",
                "cpu",
                "--batch",
                "4",
            ])
            .args(["--steps", "1", "--json", "--precision", precision])
            .output()
            .unwrap()
    };
    let out = bench("fp32");
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let limit = &json["cpu_limit"];
    assert!(
        limit["peak"]["f32_gflops"].as_f64().unwrap() > 0.0,
        "{json}"
    );
    assert!(limit["limit_gflops"].as_f64().unwrap() >= limit["peak_gflops"].as_f64().unwrap());

    let out = bench("tf32");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("tf32 is a format of NVIDIA tensor cores"),
        "{}",
        stderr(&out)
    );

    let out = bench("bf16");
    if runtime::cpu::peak::Features::detect().avx512_bf16 {
        assert!(out.status.success(), "{}", stderr(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(json["device"].as_str().unwrap().contains("bf16"), "{json}");
    } else {
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains("AVX512-BF16"), "{}", stderr(&out));
    }

    let out = bin().args(["bench", "--peak"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("f32 FMA peak") && text.contains("instruction sets"),
        "{text}"
    );
}
