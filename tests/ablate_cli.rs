//! End-to-end runs of `allcnnc ablate` on a Fashion-MNIST subset: the base
//! model and its three variants are trained and tabled beside the paper's
//! figures, a second run skips what is done, an interrupted ablation
//! resumes to the same weights as an uninterrupted one, and folders of
//! other runs are refused.

mod fashion;
mod process;

use fashion::{require_data, FASHION};
use process::{bin, interrupt_after_epochs, run, stderr};
use runtime::train::checkpoint::Checkpoint;
use runtime::train::{read_metrics, EpochMetrics};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

/// A small max-pool model, named `model_c` so that its variants are named
/// as the paper's (`strided_cnn_c`, `convpool_cnn_c`, `all_cnn_c`) and get
/// the paper's columns, which are keyed by network name.
const MODEL: &str = "network model_c {
    input 1x28x28
    classes 10
    conv 8 3x3
    conv 8 3x3
    maxpool 3x3 stride=2
    conv 16 3x3
    maxpool 3x3 stride=2
    conv 10 1x1 act=none
    gap
    softmax
}
train {
    optimizer sgd momentum=0.9
    lr 0.05
    schedule cosine
    epochs 2
    batch 32
    preprocess normalize
    augment flip
}
";

const NAMES: [&str; 4] = ["model_c", "strided_cnn_c", "convpool_cnn_c", "all_cnn_c"];

/// A temporary folder holding [`MODEL`] as `model.net`, and that file.
fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.net");
    std::fs::write(&model, MODEL).expect("write model");
    (dir, model)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// `ablate MODEL --data FASHION --out OUT` on a small subset, and `extra`.
fn ablate_args(model: &Path, out: &Path, limit: &str, extra: &[&str]) -> Vec<String> {
    let head = [
        "ablate",
        model.to_str().unwrap(),
        "--data",
        FASHION,
        "--out",
        out.to_str().unwrap(),
        "--limit",
        limit,
        "--test-limit",
        "200",
        "--device",
        "cpu",
        "--seed",
        "5",
    ];
    head.iter().chain(extra).map(|s| s.to_string()).collect()
}

fn succeeded(out: &Output) -> String {
    let err = stderr(out);
    assert!(out.status.success(), "{err}");
    err
}

/// The run files of every model, to compare before and after.
fn run_files(out: &Path) -> Vec<Vec<u8>> {
    NAMES
        .iter()
        .flat_map(|name| {
            ["checkpoint.safetensors", "metrics.jsonl"]
                .map(|file| std::fs::read(out.join(name).join(file)).expect("run file"))
        })
        .collect()
}

#[test]
fn the_variants_are_trained_and_tabled_beside_the_paper() {
    require_data();
    let (dir, model) = setup();
    let out_dir = dir.path().join("ablation");
    let out = run(&ablate_args(&model, &out_dir, "512", &["--json"]));
    succeeded(&out);

    let printed: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    let file = read_json(&out_dir.join("table.json"));
    assert_eq!(
        printed, file,
        "--json printed another table than table.json"
    );
    assert_eq!(
        (file["seed"].as_u64(), file["epochs"].as_u64()),
        (Some(5), Some(2))
    );
    let rows = file["models"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(names, NAMES);
    let variants: Vec<&str> = rows
        .iter()
        .map(|r| r["variant"].as_str().unwrap())
        .collect();
    assert_eq!(variants, ["base", "strided", "convpool", "allconv"]);
    let paper_errors: Vec<f64> = rows
        .iter()
        .map(|r| r["paper_test_error_percent"].as_f64().unwrap())
        .collect();
    assert_eq!(paper_errors, [9.74, 10.19, 9.31, 9.08]);
    let paper_params: Vec<&str> = rows
        .iter()
        .map(|r| r["paper_parameters"].as_str().unwrap())
        .collect();
    assert_eq!(paper_params, ["1.3M", "1.3M", "1.4M", "1.4M"]);
    for row in rows {
        let number = |key: &str| row[key].as_f64().unwrap_or_else(|| panic!("{key}: {row}"));
        assert_eq!(row["epochs_run"], 2, "{row}");
        assert_eq!(row["finished"], true, "{row}");
        assert!(
            number("parameters") > 1000.0 && number("macs") > 1e5,
            "{row}"
        );
        let (last, best) = (
            number("final_test_error_percent"),
            number("best_test_error_percent"),
        );
        assert!((0.0..=100.0).contains(&last) && best <= last, "{row}");
        assert!([1.0, 2.0].contains(&number("best_epoch")), "{row}");
        assert!(number("train_seconds") > 0.0, "{row}");
        assert!(number("train_images_per_s") > 10.0, "{row}");
    }
    // Strided keeps the parameters and cuts the MACs; ConvPool and All-CNN
    // add one conv's worth each.
    assert_eq!(rows[0]["parameters"], rows[1]["parameters"]);
    assert!(rows[1]["macs"].as_u64() < rows[0]["macs"].as_u64());
    assert_eq!(rows[2]["parameters"], rows[3]["parameters"]);

    let markdown = std::fs::read_to_string(out_dir.join("table.md")).unwrap();
    for name in NAMES {
        assert!(markdown.contains(&format!("| {name} |")), "{markdown}");
    }
    assert!(markdown.contains("| 9.08 | 1.4M |"), "{markdown}");
    assert!(image::open(out_dir.join("curves.png")).is_ok());

    // Each model is an ordinary run folder, beside the text of its model:
    // for a variant, exactly what `convert` prints.
    for (name, variant) in NAMES.iter().zip(["", "strided", "convpool", "allconv"]) {
        let run = out_dir.join(name);
        for file in ["checkpoint.safetensors", "best.safetensors", "curves.png"] {
            assert!(run.join(file).exists(), "{name}: no {file}");
        }
        let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        assert_eq!(metrics.lines().count(), 2, "{name}: {metrics}");
        let text = std::fs::read_to_string(run.join(format!("{name}.net"))).unwrap();
        if variant.is_empty() {
            assert_eq!(text, MODEL);
        } else {
            let convert = bin()
                .args(["convert", model.to_str().unwrap(), "--to", variant])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&convert.stdout), text, "{name}");
        }
    }
}

#[test]
fn a_second_run_skips_the_finished_models_and_refuses_other_runs() {
    require_data();
    let (dir, model) = setup();
    let out_dir = dir.path().join("ablation");
    let args = ablate_args(&model, &out_dir, "256", &[]);
    succeeded(&run(&args));
    let before = run_files(&out_dir);

    let err = succeeded(&run(&args));
    assert!(
        err.contains(
            "done and skipped: model_c, strided_cnn_c, convpool_cnn_c, all_cnn_c; to resume: none; to start: none"
        ),
        "{err}"
    );
    for name in NAMES {
        assert!(
            err.contains(&format!("{name}: done (2 epochs), skipped")),
            "{err}"
        );
    }
    assert!(
        !err.contains("epoch   1"),
        "a finished model trained again: {err}"
    );
    assert_eq!(
        run_files(&out_dir),
        before,
        "a finished model's run changed"
    );

    // Another seed, or another model under the same name, is refused
    // before any training, naming the folder; nothing changes.
    let mut reseeded = args.clone();
    let seed = reseeded.iter().position(|a| a == "--seed").unwrap();
    reseeded[seed + 1] = "6".into();
    let out = run(&reseeded);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let base_dir = out_dir.join("model_c").display().to_string();
    assert!(
        err.contains(&base_dir) && err.contains("trained with seed 5, not 6"),
        "{err}"
    );

    let wider = MODEL.replace("conv 16 3x3", "conv 24 3x3");
    std::fs::write(&model, wider).unwrap();
    let out = run(&args);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&base_dir)
            && err.contains("model `model_c`")
            && err.contains("of another model"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(run_files(&out_dir), before, "a refused run changed files");
}

/// Whether two runs measured the same epochs. Timings differ between
/// runs; the training loss of an interrupted epoch is a sum over other
/// windows of steps (they restart at the interruption), so it may differ in
/// its last bits; everything else is equal.
fn same_metrics(a: &[EpochMetrics], b: &[EpochMetrics]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            let close = (a.train_loss - b.train_loss).abs() <= 1e-12 * a.train_loss.abs();
            let exact = |m: &EpochMetrics| {
                (
                    m.epoch,
                    m.lr,
                    m.train_accuracy,
                    m.test_loss,
                    m.test_accuracy,
                )
            };
            close && exact(a) == exact(b)
        })
}

#[test]
fn a_terminated_ablation_resumes_to_the_same_weights() {
    require_data();
    let (dir, model) = setup();
    // ConvPool second: the slowest variant, so that the signal lands
    // inside its run (after its first epoch, before its last).
    let order = ["--to", "convpool,allconv,strided"];
    let whole = dir.path().join("whole");
    succeeded(&run(&ablate_args(&model, &whole, "1500", &order)));

    let cut = dir.path().join("cut");
    let args = ablate_args(&model, &cut, "1500", &order);
    let metrics = cut.join("convpool_cnn_c").join("metrics.jsonl");
    let stopped = interrupt_after_epochs(&args, &metrics, 1, "-TERM");
    assert_eq!(stopped.status.code(), Some(1), "{}", stderr(&stopped));
    let err = stderr(&stopped);
    assert!(
        err.contains("interrupted while training `convpool_cnn_c`")
            && err.contains("run the same `allcnnc ablate` command again"),
        "{err}"
    );
    // The partial table already has the finished base model.
    let partial = read_json(&cut.join("table.json"));
    assert_eq!(partial["models"][0]["model"], "model_c");
    assert_eq!(partial["models"][0]["finished"], true);

    let resumed = run(&args);
    let err = succeeded(&resumed);
    assert!(
        err.contains("done and skipped: model_c; to resume: convpool_cnn_c; to start: all_cnn_c, strided_cnn_c"),
        "{err}"
    );
    assert!(err.contains("model_c: done (2 epochs), skipped"), "{err}");
    assert!(
        err.contains("convpool_cnn_c: training starts")
            && err.contains("s after the command started"),
        "{err}"
    );

    for name in NAMES {
        let text = std::fs::read_to_string(cut.join(name).join(format!("{name}.net"))).unwrap();
        let plan = allcnnc::driver::Model::from_text(name, &text).unwrap().plan;
        let params = |root: &Path| {
            Checkpoint::load(&plan, &root.join(name).join("checkpoint.safetensors"))
                .unwrap()
                .params
        };
        assert_eq!(
            params(&whole),
            params(&cut),
            "{name}: the resumed ablation ended with other weights"
        );
        let metrics = |root: &Path| read_metrics(&root.join(name).join("metrics.jsonl"));
        let (a, b) = (metrics(&whole), metrics(&cut));
        assert!(same_metrics(&a, &b), "{name}: other metrics: {a:?} {b:?}");
    }
    let rows = |root: &Path| -> Vec<Value> {
        read_json(&root.join("table.json"))["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                let mut row = row.clone();
                let fields = row.as_object_mut().unwrap();
                fields.remove("train_seconds");
                fields.remove("train_images_per_s");
                row
            })
            .collect()
    };
    assert_eq!(rows(&whole), rows(&cut));
}

#[test]
fn what_cannot_be_ablated_is_refused_before_any_work() {
    let (dir, model) = setup();
    let out_dir = dir.path().join("ablation");
    let refused = |model: &Path, extra: &[&str], says: &str| {
        let out = run(&ablate_args(model, &out_dir, "256", extra));
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    };
    refused(
        &model,
        &["--to", "strided,strided"],
        "--to names `strided` twice",
    );

    let no_pool = dir.path().join("no-pool.net");
    std::fs::write(
        &no_pool,
        "network flat {\n input 1x28x28\n classes 10\n conv 8 3x3 stride=2\n conv 10 1x1\n gap\n softmax\n}\n",
    )
    .unwrap();
    refused(
        &no_pool,
        &[],
        "`flat` has no max-pool, so its strided variant is the same network",
    );

    let untrained = dir.path().join("untrained.net");
    std::fs::write(&untrained, MODEL.split("train {").next().unwrap()).unwrap();
    let recipe = ["--recipe", untrained.to_str().unwrap()];
    refused(&model, &recipe, "has no `train { }` section");
    assert!(!out_dir.exists(), "a refused ablation created its folder");
}

#[test]
fn a_variant_trains_at_its_own_learning_rate_and_keeps_it() {
    require_data();
    let (dir, model) = setup();
    let out_dir = dir.path().join("ablation");
    let args = ablate_args(
        &model,
        &out_dir,
        "128",
        &["--to", "convpool", "--lr-for", "convpool=0.01"],
    );
    let err = succeeded(&run(&args));
    assert!(
        err.contains("convpool_cnn_c (convpool): a fresh run") && err.contains("lr 0.01"),
        "{err}"
    );
    let lr_file =
        |name: &str| std::fs::read_to_string(out_dir.join(name).join("ablate-lr.txt")).unwrap();
    assert_eq!(lr_file("convpool_cnn_c").trim(), "0.01");
    assert_eq!(lr_file("model_c").trim(), "0.05", "the recipe's rate");
    let table = read_json(&out_dir.join("table.json"));
    let lrs: Vec<f64> = table["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["lr"].as_f64().unwrap())
        .collect();
    assert_eq!(lrs, [0.05, 0.01]);
    // The first epoch's rate is the variant's (cosine from 0.01).
    let metrics = read_metrics(&out_dir.join("convpool_cnn_c").join("metrics.jsonl"));
    assert!(metrics[0].lr <= 0.01 + 1e-12, "{}", metrics[0].lr);

    // A finished model keeps the rate it trained at in the table.
    let mut other = args.clone();
    let at = other.iter().position(|a| a == "convpool=0.01").unwrap();
    other[at] = "convpool=0.02".into();
    succeeded(&run(&other));
    let table = read_json(&out_dir.join("table.json"));
    assert_eq!(table["models"][1]["lr"].as_f64(), Some(0.01));
    assert!(std::fs::read_to_string(out_dir.join("table.md"))
        .unwrap()
        .contains("| 0.01 |"));

    // No such variant.
    let out = run(&ablate_args(
        &model,
        &out_dir,
        "128",
        &["--lr-for", "pooled=0.1"],
    ));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("one of base, strided, convpool, allconv"),
        "{}",
        stderr(&out)
    );
}
