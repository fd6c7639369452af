//! `allcnnc ablate`: the paper's comparison (Table 3) for any max-pool
//! model. The base model and its variants, derived by the same passes as
//! `convert`, are trained one after the other under one recipe and one
//! seed, each into its own run folder `OUT/<model>/` by the same
//! [`Session`] as `train`; `OUT/table.md`, `OUT/table.json` and
//! `OUT/curves.png` compare them and are rewritten after each model.
//!
//! An ablation resumes where it stopped: a model whose run has every epoch
//! is skipped, one with a checkpoint resumes from it, the others start
//! fresh. A folder holding a run of another model or seed is refused
//! ([`RunDir::continuable`]), never mixed into the comparison.

mod table;

use super::compile::{derive, derived_text, Variant};
use super::train::{stop_on_signals, Ended, RunFlags, Session};
use super::{report, CliResult, Failure};
use crate::driver::Model;
use clap::Args;
use runtime::train::run_dir::RunLock;
use runtime::train::{curves, read_metrics, RunDir, TrainError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;
use table::{Row, Table};

#[derive(Args)]
pub struct AblateArgs {
    /// The base model, with max-pools
    pub file: PathBuf,
    /// Folder of the ablation: a run folder per model, table.md, table.json, curves.png
    #[arg(long)]
    pub out: PathBuf,
    /// The variants to derive and train beside the base
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "strided,convpool,allconv"
    )]
    pub to: Vec<Variant>,
    /// Train every model under the `train` section of this .net file instead of the base file's
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// A learning rate for one model, as the paper chose one per model
    /// (from 0.25, 0.1, 0.05, 0.01): VARIANT=LR with VARIANT one of base,
    /// strided, convpool, allconv; repeatable. It applies to a fresh run of
    /// that model: remove the model's run folder to retrain it at another
    /// rate
    #[arg(long = "lr-for", value_name = "VARIANT=LR", value_parser = parse_lr_for)]
    pub lr_for: Vec<(String, f64)>,
    #[command(flatten)]
    pub run: RunFlags,
    /// Print table.json on stdout at the end
    #[arg(long)]
    pub json: bool,
}

/// `VARIANT=LR` of `--lr-for`.
fn parse_lr_for(text: &str) -> Result<(String, f64), String> {
    let (variant, lr) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not VARIANT=LR (e.g. convpool=0.01)"))?;
    let variant = variant.trim();
    if !VARIANTS.contains(&variant) {
        return Err(format!(
            "`{variant}` is no variant: one of {}",
            VARIANTS.join(", ")
        ));
    }
    let lr: f64 = lr
        .trim()
        .parse()
        .map_err(|_| format!("`{lr}` is not a learning rate"))?;
    if !plan::recipe::ranges::learning_rate(lr) {
        return Err(format!(
            "a learning rate of {lr}: it must be {}",
            plan::recipe::ranges::LEARNING_RATE
        ));
    }
    Ok((variant.to_string(), lr))
}

/// The words of the base and the variants, as the table writes them.
const VARIANTS: &[&str] = &["base", "strided", "convpool", "allconv"];

/// One model of the ablation.
struct Entry {
    /// `base` or the variant's word.
    variant: &'static str,
    model: Model,
}

/// What an earlier ablation left for one model.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Status {
    Fresh,
    Resume,
    Done { epochs: u32 },
}

/// A model's run folder, its lock and what it holds.
struct Claimed {
    run: RunDir,
    _lock: RunLock,
    status: Status,
}

pub fn ablate(args: &AblateArgs) -> CliResult {
    let started = Instant::now();
    let base = super::model(&args.file)?;
    let recipe_path = args.recipe.as_deref().unwrap_or(&args.file);
    let recipe = match &args.recipe {
        None => args.run.recipe(base.graph.training.as_ref()),
        Some(path) => {
            let file = super::model(path)?;
            let Some(training) = file.graph.training.as_ref() else {
                return Err(
                    format!("--recipe {} has no `train {{ }}` section", path.display()).into(),
                );
            };
            args.run.recipe(Some(training))
        }
    };
    let seed = args.run.seed.unwrap_or(0);
    let entries = entries(base, &args.to, &args.file)?;

    // Every folder is claimed and checked before any work, so that a
    // folder of another run is refused before hours of training.
    let whole = RunDir::new(&args.out);
    let _lock = whole.lock().map_err(|err| err.to_string())?;
    let mut claimed = Vec::new();
    for entry in &entries {
        let run = RunDir::new(args.out.join(&entry.model.plan.name));
        let lock = run.lock().map_err(|err| err.to_string())?;
        let status = status(&run, &entry.model, seed, recipe.epochs)?;
        claimed.push(Claimed {
            run,
            _lock: lock,
            status,
        });
    }
    let continuing = claimed.iter().any(|c| c.status != Status::Fresh);
    if continuing {
        say_what_is_left(&entries, &claimed, &args.out);
    }

    let mut table = Table {
        base: args.file.display().to_string(),
        recipe: recipe_path.display().to_string(),
        data: args.run.data.display().to_string(),
        seed,
        epochs: recipe.epochs,
        models: Vec::new(),
    };
    let count = entries.len();
    // Each model's rate: the one its run started at (recorded in its
    // folder), else the one it is given now; a run is never continued at
    // another rate than it started at.
    let mut lrs = Vec::new();
    for (entry, claim) in entries.iter().zip(&claimed) {
        let wanted = recipe_of(&recipe, &args.lr_for, entry.variant).lr;
        let lr = match (claim.status, recorded_lr(&claim.run)) {
            (Status::Resume, Some(started)) if started != wanted => {
                return Err(format!(
                    "{} started at learning rate {started}, not {wanted}: remove {} to train it at {wanted}, or continue it at {started}",
                    entry.model.plan.name,
                    claim.run.dir.display()
                )
                .into());
            }
            (Status::Done { .. }, Some(started)) => started,
            _ => wanted,
        };
        lrs.push(lr);
    }
    // When continuing, the first model trained says how long the skipping
    // and loading took.
    let mut first_trained = continuing;
    for (index, (entry, claim)) in entries.iter().zip(&claimed).enumerate() {
        let name = &entry.model.plan.name;
        let what = match claim.status {
            Status::Done { epochs } => {
                eprintln!(
                    "[{}/{count}] {name}: done ({epochs} epochs), skipped",
                    index + 1
                );
                continue;
            }
            // The session says where it resumes.
            Status::Resume => "resuming its run",
            Status::Fresh => "a fresh run",
        };
        eprintln!(
            "[{}/{count}] {name} ({}): {what} in {}, lr {}",
            index + 1,
            entry.variant,
            claim.run.dir.display(),
            lrs[index]
        );
        write_net(&claim.run, entry, lrs[index])?;
        let mut training_starts = || {
            if std::mem::take(&mut first_trained) {
                eprintln!(
                    "{name}: training starts {:.1}s after the command started",
                    started.elapsed().as_secs_f64()
                );
            }
        };
        let session = Session {
            model: &entry.model,
            recipe: runtime::train::Recipe {
                lr: lrs[index],
                ..recipe.clone()
            },
            flags: &args.run,
            run: RunDir::new(&claim.run.dir),
            resume: claim.status == Status::Resume,
            start_from: None,
            training_starts: &mut training_starts,
        };
        let ended = session.run();
        write_results(&mut table, &entries, &claimed, &args.out, &lrs)?;
        match ended? {
            Ended::Interrupted(TrainError::Interrupted { epoch, batch }) => {
                return Err(format!(
                    "interrupted while training `{name}` at epoch {epoch}, batch {batch}; checkpoint saved: run the same `allcnnc ablate` command again to continue"
                )
                .into());
            }
            Ended::Interrupted(err) => return Err(err.to_string().into()),
            Ended::Finished => {}
        }
        // A signal during the last epoch's evaluation ends that model's
        // run normally; the next one is not started.
        let rest = claimed[index + 1..]
            .iter()
            .any(|c| !matches!(c.status, Status::Done { .. }));
        if rest && stop_on_signals().load(Ordering::SeqCst) {
            return Err(format!(
                "interrupted after `{name}` finished; run the same `allcnnc ablate` command again to continue"
            )
            .into());
        }
    }
    write_results(&mut table, &entries, &claimed, &args.out, &lrs)?;
    eprintln!(
        "ablation done in {:.1}s: wrote {}",
        started.elapsed().as_secs_f64(),
        args.out.join("table.md").display()
    );
    if args.json {
        println!("{}", table.json());
    }
    Ok(())
}

/// The base and its variants, each derived as `convert` derives it and
/// read back from its text (so a variant's run folder holds the same
/// model as `train` on `convert`'s output).
fn entries(base: Model, to: &[Variant], file: &Path) -> Result<Vec<Entry>, Failure> {
    let mut variants: Vec<Variant> = Vec::new();
    for &variant in to {
        if variants.contains(&variant) {
            return Err(format!("--to names `{}` twice", variant.word()).into());
        }
        variants.push(variant);
    }
    let mut entries = Vec::new();
    for variant in variants {
        let derived = derive(&base.source, &base.graph, variant)?;
        let name = format!("{} (--to {})", file.display(), variant.word());
        let model =
            Model::from_text(&name, &derived_text(file, &derived, variant)).map_err(report)?;
        if model.plan.model_hash == base.plan.model_hash {
            return Err(format!(
                "`{}` has no max-pool, so its {} variant is the same network: nothing to compare",
                base.plan.name,
                variant.word()
            )
            .into());
        }
        entries.push(Entry {
            variant: variant.word(),
            model,
        });
    }
    entries.insert(
        0,
        Entry {
            variant: "base",
            model: base,
        },
    );
    Ok(entries)
}

/// What the run folder holds for a run of `model` with `seed` and
/// `epochs` epochs: nothing, a run to resume or a finished one.
fn status(run: &RunDir, model: &Model, seed: u64, epochs: u32) -> Result<Status, Failure> {
    let found = run
        .continuable(&model.plan.model_hash, seed)
        .map_err(|err| err.to_string())?;
    Ok(match found {
        None => Status::Fresh,
        Some(found) => match found.epochs {
            Some(done) if done >= epochs => Status::Done { epochs: done },
            _ => Status::Resume,
        },
    })
}

/// The models done (skipped), to resume and to start, in one line.
fn say_what_is_left(entries: &[Entry], claimed: &[Claimed], out: &Path) {
    let names = |keep: fn(&Status) -> bool| {
        let names: Vec<&str> = entries
            .iter()
            .zip(claimed)
            .filter(|(_, c)| keep(&c.status))
            .map(|(e, _)| e.model.plan.name.as_str())
            .collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    eprintln!(
        "continuing the ablation in {}: done and skipped: {}; to resume: {}; to start: {}",
        out.display(),
        names(|s| matches!(s, Status::Done { .. })),
        names(|s| *s == Status::Resume),
        names(|s| *s == Status::Fresh),
    );
}

/// The model's `.net` text beside its run, for `eval`, `predict` and
/// `visualize` of its checkpoints.
fn write_net(run: &RunDir, entry: &Entry, lr: f64) -> Result<(), Failure> {
    let path = run.dir.join(format!("{}.net", entry.model.plan.name));
    std::fs::write(&path, &entry.model.source.text)
        .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
    write_atomically(&run.dir.join(LR_FILE), &format!("{lr}\n"))
}

/// The file of a model's run folder that holds the learning rate its run
/// started at.
const LR_FILE: &str = "ablate-lr.txt";

/// The learning rate a model's run started at, when recorded.
fn recorded_lr(run: &RunDir) -> Option<f64> {
    std::fs::read_to_string(run.dir.join(LR_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Rewrites `table.md`, `table.json` and `curves.png` from every model's
/// `metrics.jsonl`.
fn write_results(
    table: &mut Table,
    entries: &[Entry],
    claimed: &[Claimed],
    out: &Path,
    lrs: &[f64],
) -> Result<(), Failure> {
    let histories: Vec<(String, Vec<_>)> = entries
        .iter()
        .zip(claimed)
        .map(|(entry, claim)| {
            (
                entry.model.plan.name.clone(),
                read_metrics(&claim.run.metrics()),
            )
        })
        .collect();
    table.models = entries
        .iter()
        .zip(&histories)
        .zip(lrs)
        .filter_map(|((entry, (_, history)), &lr)| {
            Row::new(entry.variant, &entry.model.graph, lr, history, table.epochs)
        })
        .collect();
    write_atomically(&out.join("table.md"), &table.markdown())?;
    write_atomically(&out.join("table.json"), &table.json())?;
    let title = format!("ablation of {}", entries[0].model.plan.name);
    if let Err(err) = curves::draw_comparison(&histories, &out.join("curves.png"), &title) {
        eprintln!("could not draw curves: {err}");
    }
    Ok(())
}

/// The recipe of one variant: the shared one, at the learning rate
/// `--lr-for` gives it.
fn recipe_of(
    recipe: &runtime::train::Recipe,
    lr_for: &[(String, f64)],
    variant: &str,
) -> runtime::train::Recipe {
    let mut recipe = recipe.clone();
    if let Some((_, lr)) = lr_for.iter().rev().find(|(v, _)| v == variant) {
        recipe.lr = *lr;
    }
    recipe
}

/// Writes `text` whole or not at all, so a reader (or an interruption)
/// never sees half a table.
fn write_atomically(path: &Path, text: &str) -> Result<(), Failure> {
    runtime::file::write_atomically(path, |out| out.write_all(text.as_bytes()))
        .map_err(|err| format!("cannot write {}: {err}", path.display()).into())
}
