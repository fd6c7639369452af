//! Run folders: the files of one training run, and the rules that keep a
//! folder to one run.
//!
//! A run folder holds `checkpoint.safetensors`, `best.safetensors`,
//! `metrics.jsonl` and `curves.png`. Two promises:
//!
//! - One writer. [`RunDir::lock`] takes an advisory lock on `run.lock`
//!   (`flock`, through [`std::fs::File::try_lock`]) and writes the holder's
//!   pid into it; a second process fails at once, naming that pid. The
//!   operating system drops the lock when the holder exits or dies, so a
//!   crash never leaves a stale lock behind (the file itself stays, empty of
//!   meaning).
//! - Nothing overwritten by accident. [`RunDir::existing`] describes a run
//!   the folder already holds, so that a fresh run can refuse it (the caller
//!   offers `--resume` or `--overwrite`); [`RunDir::clear`] removes the run's
//!   files, and only those, when the user asked for that.
//!   [`RunDir::continuable`] is the check of a caller that continues
//!   whatever run it finds (`allcnnc ablate`): it refuses a run of another
//!   model or seed, naming it, instead of mixing two runs in one folder.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Files of a run folder.
pub struct RunDir {
    pub dir: PathBuf,
}

/// The lock of a run folder, held until dropped (or the process ends).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error("--out {} is a file, not a folder; give a folder for the run", path.display())]
    NotAFolder { path: PathBuf },
    #[error("cannot create the run folder {}: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write in the run folder {}: {source}", path.display())]
    NotWritable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the run folder {} is in use by another allcnnc process ({}); two runs cannot share a folder: wait for it to finish, or choose another --out",
        path.display(),
        match pid { Some(pid) => format!("pid {pid}"), None => "pid unknown".to_string() }
    )]
    Busy { path: PathBuf, pid: Option<u32> },
    #[error("{} holds another run ({found}): {reason}; give another --out, or remove that folder to start over", path.display())]
    OtherRun {
        path: PathBuf,
        /// Boxed: the error of every `lock` stays small.
        found: Box<ExistingRun>,
        reason: String,
    },
}

/// What a run folder already holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ExistingRun {
    /// The checkpoint's model name, when there is a readable checkpoint.
    pub model: Option<String>,
    /// Epochs finished, from the checkpoint.
    pub epochs: Option<u32>,
    /// The checkpoint's model hash and seed.
    pub model_hash: Option<String>,
    pub seed: Option<u64>,
    /// Lines of `metrics.jsonl` (epochs measured).
    pub metric_lines: usize,
    /// The run's files that exist.
    pub files: Vec<&'static str>,
}

impl std::fmt::Display for ExistingRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(model) = &self.model {
            parts.push(format!("model `{model}`"));
        }
        if let Some(epochs) = self.epochs {
            parts.push(format!(
                "{epochs} epoch{} finished",
                if epochs == 1 { "" } else { "s" }
            ));
        }
        parts.push(self.files.join(", "));
        f.write_str(&parts.join("; "))
    }
}

/// The files a run writes, in the order they are described.
const RUN_FILES: [&str; 4] = [
    "checkpoint.safetensors",
    "best.safetensors",
    "metrics.jsonl",
    "curves.png",
];

impl RunDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    pub fn checkpoint(&self) -> PathBuf {
        self.dir.join(RUN_FILES[0])
    }
    pub fn best(&self) -> PathBuf {
        self.dir.join(RUN_FILES[1])
    }
    pub fn metrics(&self) -> PathBuf {
        self.dir.join(RUN_FILES[2])
    }
    pub fn curves(&self) -> PathBuf {
        self.dir.join(RUN_FILES[3])
    }
    fn lock_file(&self) -> PathBuf {
        self.dir.join("run.lock")
    }

    /// Creates the folder if needed, checks that it can be written and
    /// takes its lock; cheap, so callers do it before loading any data.
    pub fn lock(&self) -> Result<RunLock, RunDirError> {
        let path = &self.dir;
        if path.exists() && !path.is_dir() {
            return Err(RunDirError::NotAFolder { path: path.clone() });
        }
        std::fs::create_dir_all(path).map_err(|source| RunDirError::Create {
            path: path.clone(),
            source,
        })?;
        let not_writable = |source| RunDirError::NotWritable {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.lock_file())
            .map_err(not_writable)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(RunDirError::Busy {
                    path: path.clone(),
                    pid: holder(&mut file),
                })
            }
            Err(TryLockError::Error(source)) => return Err(not_writable(source)),
        }
        // The pid is for the message of a second process; the lock is what
        // excludes it.
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| write!(file, "{}", std::process::id()))
            .and_then(|()| file.flush())
            .map_err(not_writable)?;
        Ok(RunLock { _file: file })
    }

    /// The run the folder holds, if any of a run's files is there.
    pub fn existing(&self) -> Option<ExistingRun> {
        let files: Vec<&'static str> = RUN_FILES
            .into_iter()
            .filter(|name| self.dir.join(name).exists())
            .collect();
        if files.is_empty() {
            return None;
        }
        let metadata = checkpoint_metadata(&self.checkpoint());
        let get = |key: &str| metadata.as_ref().and_then(|m| m.get(key).cloned());
        Some(ExistingRun {
            model: get("model"),
            epochs: get("epoch").and_then(|e| e.parse().ok()),
            model_hash: get("model_hash"),
            seed: get("seed").and_then(|s| s.parse().ok()),
            metric_lines: read_metrics(&self.metrics()).len(),
            files,
        })
    }

    /// The run the folder holds, when it is one that a run of the model
    /// `model_hash` with `seed` can continue: `None` for a folder without
    /// a run, an error naming what is there for a run of another model (its
    /// hash) or seed, or files of a run without a checkpoint to continue
    /// from.
    pub fn continuable(
        &self,
        model_hash: &str,
        seed: u64,
    ) -> Result<Option<ExistingRun>, RunDirError> {
        let Some(found) = self.existing() else {
            return Ok(None);
        };
        let reason = if !found.files.contains(&RUN_FILES[0]) {
            Some("it has no checkpoint.safetensors to continue from".to_string())
        } else if found.model_hash.as_deref() != Some(model_hash) {
            Some(match &found.model_hash {
                Some(hash) => format!(
                    "its checkpoint is of another model (model hash {hash}, not {model_hash})"
                ),
                None => "its checkpoint's model cannot be read".to_string(),
            })
        } else if found.seed != Some(seed) {
            Some(match found.seed {
                Some(theirs) => format!("it was trained with seed {theirs}, not {seed}"),
                None => "its checkpoint's seed cannot be read".to_string(),
            })
        } else {
            None
        };
        match reason {
            None => Ok(Some(found)),
            Some(reason) => Err(RunDirError::OtherRun {
                path: self.dir.clone(),
                found: Box::new(found),
                reason,
            }),
        }
    }

    /// Removes the run's files (nothing else in the folder).
    pub fn clear(&self) -> std::io::Result<()> {
        for name in RUN_FILES {
            match std::fs::remove_file(self.dir.join(name)) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
                _ => {}
            }
        }
        Ok(())
    }
}

/// The pid written by the process that holds the lock. It writes it just
/// after locking, so a reader that comes in between waits a moment once.
fn holder(file: &mut File) -> Option<u32> {
    for _ in 0..2 {
        let mut text = String::new();
        if file.rewind().is_ok() && file.read_to_string(&mut text).is_ok() {
            if let Ok(pid) = text.trim().parse() {
                return Some(pid);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    None
}

/// The string metadata of a safetensors file, reading only its header.
fn checkpoint_metadata(path: &Path) -> Option<std::collections::HashMap<String, String>> {
    // Only a regular file: opening a FIFO would wait for a writer.
    if !is_regular(path) {
        return None;
    }
    let mut file = File::open(path).ok()?;
    let mut size = [0u8; 8];
    file.read_exact(&mut size).ok()?;
    let size = u64::from_le_bytes(size);
    // A header is a few KiB; anything past 100 MB is not one of ours.
    if size > 100_000_000 {
        return None;
    }
    let mut header = vec![0u8; size as usize];
    file.read_exact(&mut header).ok()?;
    let json: serde_json::Value = serde_json::from_slice(&header).ok()?;
    serde_json::from_value(json.get("__metadata__")?.clone()).ok()
}

/// Whether `path` is a regular file (following links).
fn is_regular(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// Reads `metrics.jsonl`: one short line per epoch. A missing file, or
/// anything but a regular file of at most 64 MiB (a FIFO, a link to
/// `/dev/zero`), reads as no lines rather than hanging or filling memory.
pub fn read_metrics(path: &Path) -> Vec<super::EpochMetrics> {
    if !is_regular(path) {
        return Vec::new();
    }
    crate::file::read_limited(path, 64 << 20, "a metrics file")
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .map(|text| {
            text.lines()
                .filter_map(|line| serde_json::from_str(line).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path().join("run"));
        let held = run.lock().unwrap();
        match run.lock() {
            Err(RunDirError::Busy { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("second lock: {other:?}"),
        }
        drop(held);
        run.lock().expect("the lock is free once dropped");
    }

    #[test]
    fn a_file_is_not_a_run_folder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let err = RunDir::new(&file).lock().unwrap_err();
        assert!(err.to_string().contains("is a file, not a folder"), "{err}");
    }

    #[test]
    fn existing_runs_are_described_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        assert_eq!(run.existing(), None);
        std::fs::write(run.metrics(), "").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let found = run.existing().unwrap();
        assert_eq!(found.files, vec!["metrics.jsonl"]);
        run.clear().unwrap();
        assert_eq!(run.existing(), None);
        assert!(
            dir.path().join("notes.txt").exists(),
            "clear removed a file not of the run"
        );
    }

    /// A checkpoint's header alone (all `existing` reads): its metadata.
    fn write_header(path: &Path, metadata: &[(&str, &str)]) {
        let metadata: std::collections::HashMap<_, _> = metadata.iter().copied().collect();
        let header = serde_json::json!({ "__metadata__": metadata }).to_string();
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn only_a_run_of_the_same_model_and_seed_is_continued() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        assert_eq!(run.continuable("abc", 7).unwrap(), None);
        std::fs::write(run.metrics(), "").unwrap();
        let err = run.continuable("abc", 7).unwrap_err().to_string();
        assert!(err.contains("no checkpoint.safetensors"), "{err}");
        let meta = [("model", "tiny"), ("model_hash", "abc"), ("seed", "7")];
        write_header(
            &run.checkpoint(),
            &[meta.as_slice(), &[("epoch", "2")]].concat(),
        );
        let found = run.continuable("abc", 7).unwrap().unwrap();
        assert_eq!((found.epochs, found.seed), (Some(2), Some(7)));
        let err = run.continuable("def", 7).unwrap_err().to_string();
        assert!(
            err.contains("model `tiny`") && err.contains("model hash abc, not def"),
            "{err}"
        );
        let err = run.continuable("abc", 8).unwrap_err().to_string();
        assert!(err.contains("trained with seed 7, not 8"), "{err}");
    }
}
