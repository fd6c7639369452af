//! Data sets: readers, preprocessing, augmentation and the batch loader.
//!
//! - [`idx`]: MNIST-style IDX files (MNIST, Fashion-MNIST), raw or gzipped;
//! - [`cifar`]: the CIFAR-10 and CIFAR-100 binary distributions;
//! - [`folder`]: an image folder `ROOT/{train,test}/<class>/*.{png,jpg,jpeg}`;
//! - [`archive`]: any of the last two inside a `.tar.gz` / `.tar` archive
//!   (the official CIFAR downloads), read without unpacking;
//! - [`preprocess`]: per-channel standardisation, or global contrast
//!   normalisation + ZCA whitening, fitted on the training set;
//! - [`augment`]: seeded horizontal flips and translations;
//! - [`loader`]: shuffled mini-batches prepared on a background thread.
//!
//! Every reader produces a [`Dataset`]: `N x H x W x C` channels-last `f32`
//! images with values `u8 / 255` in `0..=1`, labels and class names.
//! [`load`] detects the format of a directory.
//!
//! Invariant: readers never panic on bad files; every problem is a
//! [`DataError`] naming the file and what is wrong with it.

pub mod archive;
pub mod augment;
pub mod cifar;
mod error;
pub mod folder;
pub mod idx;
pub mod loader;
pub mod preprocess;

use std::path::{Path, PathBuf};

use crate::plan::Shape;

pub use augment::Augment;
pub use error::{DataError, Result};
pub use loader::{Batch, BatchLoader, LoaderOptions};
pub use preprocess::{FitOptions, Preprocess, PreprocessHeader, PreprocessKind};

/// Which part of a data set to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Test,
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

impl std::str::FromStr for Split {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "train" => Ok(Split::Train),
            "test" => Ok(Split::Test),
            _ => Err(format!("unknown split `{text}`, expected train or test")),
        }
    }
}

/// The on-disk formats [`load`] recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `train-images-idx3-ubyte(.gz)` and friends.
    Idx,
    /// `data_batch_{1..5}.bin` and `test_batch.bin`.
    Cifar10,
    /// `train.bin` and `test.bin` with coarse and fine labels.
    Cifar100,
    /// `train/<class>/*.png` and `test/<class>/*.jpg`.
    ImageFolder,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Idx => "IDX (MNIST)",
            Format::Cifar10 => "CIFAR-10 binary",
            Format::Cifar100 => "CIFAR-100 binary",
            Format::ImageFolder => "image folder",
        })
    }
}

/// An in-memory labelled image data set.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// `N x H x W x C`, channels-last; `u8 / 255` as read, whatever a
    /// [`Preprocess`] made of it afterwards.
    pub images: Vec<f32>,
    /// One label per image, each `< classes`.
    pub labels: Vec<u32>,
    /// The shape of one image.
    pub shape: Shape,
    pub classes: usize,
    /// `classes` names, in label order.
    pub class_names: Vec<String>,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The `H x W x C` values of image `index`.
    ///
    /// # Panics
    /// When `index >= self.len()` (a caller bug, not bad input).
    pub fn image(&self, index: usize) -> &[f32] {
        let len = self.shape.len();
        &self.images[index * len..(index + 1) * len]
    }

    /// Number of images of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &label in &self.labels {
            if let Some(count) = counts.get_mut(label as usize) {
                *count += 1;
            }
        }
        counts
    }

    /// Keeps only the first `limit` images.
    pub fn truncate(&mut self, limit: usize) {
        if limit < self.len() {
            self.labels.truncate(limit);
            self.images.truncate(limit * self.shape.len());
        }
    }

    /// A grey data set for a model of `channels` channels: repeated on the
    /// three channels of a colour model, as a grey image in a colour split
    /// is (see [`folder`]); anything else is left as it is (the caller then
    /// refuses the mismatch).
    pub fn to_channels(&mut self, channels: usize) {
        if self.shape.c != 1 || channels != 3 {
            return;
        }
        self.images = self.images.iter().flat_map(|&v| [v; 3]).collect();
        self.shape = Shape::new(3, self.shape.h, self.shape.w);
    }

    /// Converts `u8` pixels to `u8 / 255`.
    pub(crate) fn from_bytes(
        pixels: &[u8],
        labels: Vec<u32>,
        shape: Shape,
        class_names: Vec<String>,
    ) -> Self {
        Self {
            images: bytes_to_unit(pixels),
            labels,
            shape,
            classes: class_names.len(),
            class_names,
        }
    }
}

/// `u8 / 255` for every byte, in parallel.
pub(crate) fn bytes_to_unit(pixels: &[u8]) -> Vec<f32> {
    use rayon::prelude::*;
    let mut out = vec![0.0f32; pixels.len()];
    out.par_chunks_mut(1 << 16)
        .zip(pixels.par_chunks(1 << 16))
        .for_each(|(out, pixels)| {
            for (value, &byte) in out.iter_mut().zip(pixels) {
                *value = f32::from(byte) / 255.0;
            }
        });
    out
}

/// Detects the format of the data set in `dir`.
///
/// Returns the format and the directory that actually holds the files: a
/// directory that only contains the official archive folder
/// (`cifar-10-batches-bin`, `cifar-100-binary`) resolves to that folder.
pub fn detect(dir: &Path) -> Result<(Format, PathBuf)> {
    require_exists(dir)?;
    if dir.is_file() && archive::is_archive(dir) {
        return Ok((archive::detect(dir)?, dir.to_path_buf()));
    }
    if !dir.is_dir() {
        return Err(DataError::UnknownFormat {
            path: dir.to_path_buf(),
            reason: "a data set is a folder or an archive named .tar.gz, .tgz or .tar (such \
                     as the official cifar-10-binary.tar.gz)"
                .to_string(),
        });
    }
    let has = |name: &str| dir.join(name).is_file();
    if idx::PREFIXES
        .iter()
        .any(|prefix| idx::image_candidates(prefix).iter().any(|name| has(name)))
    {
        return Ok((Format::Idx, dir.to_path_buf()));
    }
    if has("data_batch_1.bin") || has("test_batch.bin") {
        return Ok((Format::Cifar10, dir.to_path_buf()));
    }
    if has("train.bin") || has("test.bin") {
        return Ok((Format::Cifar100, dir.to_path_buf()));
    }
    if dir.join("train").is_dir() || dir.join("test").is_dir() {
        return Ok((Format::ImageFolder, dir.to_path_buf()));
    }
    for archive in ["cifar-10-batches-bin", "cifar-100-binary"] {
        let inner = dir.join(archive);
        if inner.is_dir() {
            return detect(&inner);
        }
    }
    Err(DataError::UnknownFormat {
        path: dir.to_path_buf(),
        reason: "expected IDX files (train-images-idx3-ubyte[.gz]), CIFAR binaries \
                 (data_batch_1.bin, test_batch.bin, train.bin, test.bin) or train/ and test/ \
                 class folders"
            .to_string(),
    })
}

/// Loads one split of the data set in `dir`, whatever its format.
pub fn load(dir: &Path, split: Split) -> Result<Dataset> {
    load_limited(dir, split, None)
}

/// Like [`load`], keeping only the first `limit` images when given.
///
/// The image folder orders its images class by class in turn (see
/// [`folder`]), so the first images of every format mix all classes.
pub fn load_limited(dir: &Path, split: Split, limit: Option<usize>) -> Result<Dataset> {
    require_exists(dir)?;
    if dir.is_file() && archive::is_archive(dir) {
        return archive::load(dir, split, limit);
    }
    let (format, dir) = detect(dir)?;
    match format {
        Format::Idx => idx::load(&dir, split, limit),
        Format::Cifar10 => cifar::load_cifar10(&dir, split, limit),
        Format::Cifar100 => cifar::load_cifar100(&dir, split, limit),
        Format::ImageFolder => folder::load(&dir, split, limit),
    }
}

/// `Ok` when `path` exists; a link that loops or dangles says so (see
/// [`crate::file`]).
pub(crate) fn require_exists(path: &Path) -> Result<()> {
    match crate::file::exists(path) {
        Ok(()) => Ok(()),
        Err(crate::file::FileError::NotFound { path }) => Err(DataError::NotFound { path }),
        Err(err) => Err(err.into()),
    }
}

/// Reads a whole file, naming it in the error. A regular file's length is
/// checked against the memory budget ([`crate::budget`]) before reading;
/// anything else (a FIFO, a device) is read up to the budget.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    require_exists(path)?;
    let budget = crate::budget::Budget::current()?;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.is_file() {
            // The bytes, and the 4-byte value each becomes.
            budget.check(
                format_args!(
                    "reading {} ({} bytes, each then held as a 4-byte value)",
                    path.display(),
                    meta.len()
                ),
                crate::budget::product(&[u128::from(meta.len()), 5]),
            )?;
        }
    }
    Ok(crate::file::read_limited(
        path,
        budget.bytes,
        "a data file within the memory budget",
    )?)
}

/// Checks every label against the number of classes.
pub(crate) fn check_labels(path: &Path, labels: &[u32], classes: usize) -> Result<()> {
    match labels.iter().position(|&label| label as usize >= classes) {
        Some(index) => Err(DataError::LabelOutOfRange {
            path: path.to_path_buf(),
            index,
            label: labels[index],
            classes,
        }),
        None => Ok(()),
    }
}
