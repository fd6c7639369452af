//! The one error type of the data layer: readers, preprocessing and loading.
//!
//! Every variant names the file (or tensor) at fault and what is wrong with it,
//! so a user can act on the message without a backtrace.

use std::path::PathBuf;

/// What can go wrong while reading, preprocessing or batching a data set.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read archive {}: {message}", .path.display())]
    Archive { path: PathBuf, message: String },
    #[error("{} does not exist", .path.display())]
    NotFound { path: PathBuf },
    #[error("{} is not a directory", .path.display())]
    NotADirectory { path: PathBuf },
    #[error("{} has no {what} (looked for {candidates})", .dir.display())]
    MissingFile {
        dir: PathBuf,
        what: String,
        candidates: String,
    },
    #[error("{} has magic number {found:#010x}, expected {expected:#010x} ({what})", .path.display())]
    BadMagic {
        path: PathBuf,
        expected: u32,
        found: u32,
        what: &'static str,
    },
    #[error("{} is truncated: it needs {expected} bytes but has {found}", .path.display())]
    Truncated {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error(
        "{} is too long: its header declares {shape} bytes of {what}, {expected} bytes in all, but it {} more",
        .path.display(),
        if *.gzipped { "decompresses to" } else { "holds" }
    )]
    TooLong {
        path: PathBuf,
        expected: u64,
        shape: String,
        what: &'static str,
        gzipped: bool,
    },
    #[error(transparent)]
    File(#[from] crate::file::FileError),
    #[error(transparent)]
    Memory(#[from] crate::budget::BudgetError),
    #[error("{} has an unusable header: {reason}", .path.display())]
    BadHeader { path: PathBuf, reason: String },
    #[error("{} holds {n_images} images but {} holds {n_labels} labels", .images.display(), .labels.display())]
    CountMismatch {
        images: PathBuf,
        labels: PathBuf,
        n_images: usize,
        n_labels: usize,
    },
    #[error("{} gives item {index} the label {label}, but there are only {classes} classes", .path.display())]
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: u32,
        classes: usize,
    },
    #[error("{} lists {found} class names, expected {expected}", .path.display())]
    ClassNames {
        path: PathBuf,
        expected: usize,
        found: usize,
    },
    #[error("cannot decode image {}: {message}", .path.display())]
    Decode { path: PathBuf, message: String },
    #[error(
        "{} is {found_w}x{found_h}, but {} (the first image) is {expected_w}x{expected_h}; all images must have one size",
        .path.display(),
        .first.display()
    )]
    SizeMismatch {
        path: PathBuf,
        first: PathBuf,
        expected_w: usize,
        expected_h: usize,
        found_w: usize,
        found_h: usize,
    },
    #[error("class folder {} holds no .png, .jpg or .jpeg image", .path.display())]
    EmptyClass { path: PathBuf },
    #[error("{} holds no class folders", .path.display())]
    NoClasses { path: PathBuf },
    #[error("class folder {} is not one of the training classes {known}", .path.display())]
    UnknownClass { path: PathBuf, known: String },
    #[error("cannot tell the data set format of {}: {reason}", .path.display())]
    UnknownFormat { path: PathBuf, reason: String },
    #[error("cannot fit preprocessing on an empty data set")]
    EmptyDataset,
    #[error("preprocessing was fitted on {expected} images, got {found} values for {n} images")]
    ImageSize {
        expected: String,
        found: usize,
        n: usize,
    },
    #[error("preprocessing tensor `{name}` is missing")]
    MissingTensor { name: String },
    #[error("preprocessing tensor `{name}` has dims {found:?}, expected {expected:?}")]
    TensorDims {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("the preprocessing header is inconsistent: {reason}")]
    BadPreprocessHeader { reason: String },
    #[error("preprocessing tensor `{name}` {reason}")]
    BadPreprocessTensor { name: String, reason: String },
    #[error("the ZCA eigendecomposition did not converge")]
    Eigen,
}

/// Result of the data layer.
pub type Result<T> = std::result::Result<T, DataError>;

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
