//! Reading the files a user names: one set of messages for every command.
//!
//! - a missing file "does not exist", but a link that points to itself (or
//!   a loop of links) says so, and a link whose target is missing names the
//!   target: `Path::exists` reports all three as "not there";
//! - [`read_limited`] never holds more than its limit plus one byte, so a
//!   file that never ends (`/dev/zero`, a FIFO) or a huge one is "too long"
//!   after a bounded read, not an allocation failure;
//! - [`write_atomically`]: every file allcnnc writes for a user (checkpoints,
//!   tables, per-image predictions, exports) is whole or absent, never half
//!   written by an interruption or a full disk.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::budget::human;

/// Why a user's file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{} does not exist", .path.display())]
    NotFound { path: PathBuf },
    #[error("{} is a symbolic link that points to itself (or a loop of links)", .path.display())]
    LinkLoop { path: PathBuf },
    #[error("{} is a symbolic link to {}, which does not exist", .path.display(), .target.display())]
    DanglingLink { path: PathBuf, target: PathBuf },
    #[error("{} is too long: {what} holds at most {} ({limit} bytes), and it has more", .path.display(), human(u128::from(*.limit)))]
    TooLong {
        path: PathBuf,
        what: String,
        limit: u64,
    },
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `ELOOP`: too many levels of symbolic links.
#[cfg(any(target_os = "linux", target_os = "android"))]
const ELOOP: i32 = 40;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const ELOOP: i32 = 62;

/// The error for an I/O failure on `path`, telling a link loop and a
/// dangling link apart from a missing file.
pub fn error(path: &Path, source: std::io::Error) -> FileError {
    let path = path.to_path_buf();
    if source.raw_os_error() == Some(ELOOP) {
        return FileError::LinkLoop { path };
    }
    if source.kind() == std::io::ErrorKind::NotFound {
        return match std::fs::read_link(&path) {
            Ok(target) => FileError::DanglingLink { path, target },
            Err(_) => FileError::NotFound { path },
        };
    }
    FileError::Io { path, source }
}

/// `Ok` when `path` names something that exists (following links).
pub fn exists(path: &Path) -> Result<(), FileError> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|err| error(path, err))
}

/// Opens `path` for reading.
pub fn open(path: &Path) -> Result<File, FileError> {
    File::open(path).map_err(|err| error(path, err))
}

/// The whole of `path`, which `what` (e.g. "a .net file") allows to hold
/// at most `limit` bytes: longer is [`FileError::TooLong`], found after
/// reading `limit + 1` bytes at most.
pub fn read_limited(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>, FileError> {
    let file = open(path)?;
    // A regular file's length is known: refuse before reading.
    let known = file
        .metadata()
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    if known.is_some_and(|len| len > limit) {
        return Err(too_long(path, what, limit));
    }
    let mut bytes = Vec::with_capacity(known.unwrap_or(0) as usize);
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|err| error(path, err))?;
    if bytes.len() as u64 > limit {
        return Err(too_long(path, what, limit));
    }
    Ok(bytes)
}

/// Writes `path` whole or not at all: `write` fills a temporary file beside
/// it (`.NAME.tmp`, so a reader listing the folder sees no second `NAME`),
/// which is synced and renamed over `path`. On any error the temporary file
/// is removed and `path` keeps what it held.
pub fn write_atomically<E: From<std::io::Error>>(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<File>) -> Result<(), E>,
) -> Result<(), E> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or("file".into(), |n| n.to_string_lossy());
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut out = std::io::BufWriter::new(File::create(&tmp)?);
        write(&mut out)?;
        out.into_inner()
            .map_err(std::io::IntoInnerError::into_error)?
            .sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn too_long(path: &Path, what: &str, limit: u64) -> FileError {
    FileError::TooLong {
        path: path.to_path_buf(),
        what: what.to_string(),
        limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_that_loop_or_dangle_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let looped = dir.path().join("loop");
        std::os::unix::fs::symlink(&looped, &looped).unwrap();
        let err = exists(&looped).unwrap_err();
        assert!(matches!(err, FileError::LinkLoop { .. }), "{err}");
        assert!(err.to_string().contains("points to itself"), "{err}");
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("gone"), &dangling).unwrap();
        let err = read_limited(&dangling, 10, "a test file").unwrap_err();
        assert!(
            err.to_string().contains("gone, which does not exist"),
            "{err}"
        );
        let err = open(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().ends_with("missing does not exist"), "{err}");
    }

    #[test]
    fn an_atomic_write_is_whole_or_absent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("table.md");
        write_atomically(&path, |out| std::io::Write::write_all(out, b"first")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        // A writer that fails halfway leaves the old file and no temporary.
        let failed: Result<(), std::io::Error> = write_atomically(&path, |out| {
            std::io::Write::write_all(out, b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["table.md"]);
    }

    #[test]
    fn reads_stop_after_the_limit() {
        let err = read_limited(Path::new("/dev/zero"), 1 << 20, "a test file").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/dev/zero is too long: a test file holds at most 1.00 MiB (1048576 bytes), and it has more"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345").unwrap();
        assert_eq!(read_limited(&path, 5, "x").unwrap(), b"12345");
        assert!(matches!(
            read_limited(&path, 4, "x"),
            Err(FileError::TooLong { .. })
        ));
    }
}
