//! The real CIFAR-10 images, shared by tests/onnx_export.rs and
//! runtime/tests/data_readers.rs: the JPEG archive beside the repository
//! (`../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz`) and the folder
//! scripts/test.sh unpacks it into (`data/cifar10-jpeg`) where there is
//! one. Where they are absent, a test that needs them is a skip counted and
//! named in the summary ([`super::skip`]).

use std::path::{Path, PathBuf};

/// The repository: the folder of the workspace's `Cargo.lock` above the
/// crate being tested.
fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .expect("the workspace has a Cargo.lock")
}

/// `path` when `present`, else a named skip saying what is absent.
fn or_skip(path: PathBuf, present: bool, what: &str) -> Option<PathBuf> {
    if present {
        Some(path)
    } else {
        super::skip::skip(&format!("{} is absent ({what})", path.display()));
        None
    }
}

/// The unpacked JPEG folder (`train/` and `test/`).
pub fn jpeg_dir() -> Option<PathBuf> {
    let dir = repository().join("data/cifar10-jpeg");
    let present = dir.join("train").is_dir() && dir.join("test").is_dir();
    or_skip(
        dir,
        present,
        "scripts/test.sh unpacks ../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz there",
    )
}

/// The JPEG archive the folder is unpacked from.
#[allow(dead_code)] // data_readers reads it; onnx_export only the folder
pub fn jpeg_archive() -> Option<PathBuf> {
    let path = repository().join("../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz");
    let present = path.is_file();
    or_skip(
        path,
        present,
        "the CIFAR-10 JPEG archive beside the repository",
    )
}
