//! The CIFAR-10 and CIFAR-100 binary distributions (Krizhevsky 2009).
//!
//! CIFAR-10 (`cifar-10-batches-bin`): `data_batch_1.bin` .. `data_batch_5.bin`
//! (train) and `test_batch.bin`, each a sequence of 3073-byte records: one
//! label byte, then 3072 bytes of a 32x32 RGB image stored channel by channel
//! (1024 red, 1024 green, 1024 blue, rows top to bottom). Class names come
//! from `batches.meta.txt` when present.
//!
//! CIFAR-100 (`cifar-100-binary`): `train.bin` and `test.bin` of 3074-byte
//! records: a coarse label (20 super-classes), a fine label (100 classes),
//! then the image as above. The fine label is used. Class names come from
//! `fine_label_names.txt` when present.
//!
//! Images are converted to channels-last `H x W x C`.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{read_file, DataError, Dataset, Result, Split};
use crate::plan::Shape;

/// The image shape of both CIFAR data sets.
pub const SHAPE: Shape = Shape::new(3, 32, 32);

/// CIFAR-10's classes, in label order.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// CIFAR-100's fine classes, in label order (alphabetical).
pub const CIFAR100_CLASSES: [&str; 100] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];

/// The layout of one binary record.
#[derive(Debug, Clone, Copy)]
struct RecordLayout {
    /// Label bytes before the image.
    label_bytes: usize,
    /// Which of them is the label used.
    label_index: usize,
    /// Number of classes of each label byte.
    label_classes: &'static [usize],
}

impl RecordLayout {
    const CIFAR10: Self = Self {
        label_bytes: 1,
        label_index: 0,
        label_classes: &[10],
    };
    const CIFAR100: Self = Self {
        label_bytes: 2,
        label_index: 1,
        label_classes: &[20, 100],
    };

    fn len(&self) -> usize {
        self.label_bytes + SHAPE.len()
    }
}

/// Where the files of a CIFAR distribution lie: a folder on disk, or one
/// inside an archive (`super::archive`).
pub(crate) trait Source {
    /// The bytes of file `name`, or `None` when there is no such file.
    fn read(&self, name: &str) -> Result<Option<Cow<'_, [u8]>>>;
    /// Whether file `name` exists.
    fn exists(&self, name: &str) -> bool;
    /// The path errors name for file `name`.
    fn path(&self, name: &str) -> PathBuf;
    /// The folder itself, for errors.
    fn dir(&self) -> PathBuf;
}

/// A folder on disk.
struct Dir<'a>(&'a Path);

impl Source for Dir<'_> {
    fn read(&self, name: &str) -> Result<Option<Cow<'_, [u8]>>> {
        let path = self.0.join(name);
        if path.is_file() {
            Ok(Some(Cow::Owned(read_file(&path)?)))
        } else {
            Ok(None)
        }
    }

    fn exists(&self, name: &str) -> bool {
        self.0.join(name).is_file()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn dir(&self) -> PathBuf {
        self.0.to_path_buf()
    }
}

/// The error for a missing file `name` (`what` says what it is).
fn missing(source: &dyn Source, name: &str, what: &str) -> DataError {
    DataError::MissingFile {
        dir: source.dir(),
        what: what.to_string(),
        candidates: name.to_string(),
    }
}

/// Reads class names, one per non-empty line, when the file exists.
fn read_class_names(
    source: &dyn Source,
    name: &str,
    expected: usize,
) -> Result<Option<Vec<String>>> {
    let Some(bytes) = source.read(name)? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&bytes);
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect();
    if names.len() != expected {
        return Err(DataError::ClassNames {
            path: source.path(name),
            expected,
            found: names.len(),
        });
    }
    Ok(Some(names))
}

/// Parses the records of one batch file (`path` in errors), appending the
/// channels-last pixels and labels; stops after `limit` records in total.
fn read_batch(
    path: &Path,
    bytes: &[u8],
    layout: RecordLayout,
    pixels: &mut Vec<u8>,
    labels: &mut Vec<u32>,
    limit: usize,
) -> Result<()> {
    let record_len = layout.len();
    let found = bytes.len() as u64;
    if bytes.is_empty() || !bytes.len().is_multiple_of(record_len) {
        let records = bytes.len().div_ceil(record_len).max(1);
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: (records * record_len) as u64,
            found,
        });
    }
    let first = labels.len();
    let take = (bytes.len() / record_len).min(limit.saturating_sub(first));
    let records = &bytes[..take * record_len];
    for (offset, record) in records.chunks_exact(record_len).enumerate() {
        for (byte_idx, &classes) in layout.label_classes.iter().enumerate() {
            let label = u32::from(record[byte_idx]);
            if label as usize >= classes {
                return Err(DataError::LabelOutOfRange {
                    path: path.to_path_buf(),
                    index: offset,
                    label,
                    classes,
                });
            }
        }
        labels.push(u32::from(record[layout.label_index]));
    }
    let image_len = SHAPE.len();
    let plane = SHAPE.h * SHAPE.w;
    let start = pixels.len();
    pixels.resize(start + take * image_len, 0);
    pixels[start..]
        .par_chunks_mut(image_len)
        .zip(records.par_chunks_exact(record_len))
        .for_each(|(out, record)| {
            let planar = &record[layout.label_bytes..];
            for pixel in 0..plane {
                for channel in 0..SHAPE.c {
                    out[pixel * SHAPE.c + channel] = planar[channel * plane + pixel];
                }
            }
        });
    Ok(())
}

fn load_batches(
    source: &dyn Source,
    files: &[(String, String)],
    layout: RecordLayout,
    class_names: Vec<String>,
    limit: Option<usize>,
) -> Result<Dataset> {
    let limit = limit.unwrap_or(usize::MAX);
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    // Every file must exist, whatever the limit.
    for (name, what) in files {
        if !source.exists(name) {
            return Err(missing(source, name, what));
        }
    }
    for (name, what) in files {
        if labels.len() >= limit {
            break;
        }
        let bytes = source
            .read(name)?
            .ok_or_else(|| missing(source, name, what))?;
        read_batch(
            &source.path(name),
            &bytes,
            layout,
            &mut pixels,
            &mut labels,
            limit,
        )?;
    }
    Ok(Dataset::from_bytes(&pixels, labels, SHAPE, class_names))
}

/// The batch files of a CIFAR-10 split, each with what it is (for errors).
fn cifar10_files(split: Split) -> Vec<(String, String)> {
    let names: Vec<String> = match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".to_string()],
    };
    let what = format!("CIFAR-10 {split} batch");
    names.into_iter().map(|name| (name, what.clone())).collect()
}

/// Loads a split of CIFAR-10 from `cifar-10-batches-bin` (first `limit`
/// images if given).
pub fn load_cifar10(dir: &Path, split: Split, limit: Option<usize>) -> Result<Dataset> {
    load_cifar10_from(&Dir(dir), split, limit)
}

/// [`load_cifar10`] from any [`Source`].
pub(crate) fn load_cifar10_from(
    source: &dyn Source,
    split: Split,
    limit: Option<usize>,
) -> Result<Dataset> {
    let class_names = read_class_names(source, "batches.meta.txt", 10)?
        .unwrap_or_else(|| CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect());
    let files = cifar10_files(split);
    load_batches(source, &files, RecordLayout::CIFAR10, class_names, limit)
}

/// Loads a split of CIFAR-100 (fine labels) from `cifar-100-binary` (first
/// `limit` images if given).
pub fn load_cifar100(dir: &Path, split: Split, limit: Option<usize>) -> Result<Dataset> {
    load_cifar100_from(&Dir(dir), split, limit)
}

/// [`load_cifar100`] from any [`Source`].
pub(crate) fn load_cifar100_from(
    source: &dyn Source,
    split: Split,
    limit: Option<usize>,
) -> Result<Dataset> {
    let name = match split {
        Split::Train => "train.bin",
        Split::Test => "test.bin",
    };
    let class_names = read_class_names(source, "fine_label_names.txt", 100)?
        .unwrap_or_else(|| CIFAR100_CLASSES.iter().map(|s| s.to_string()).collect());
    let files = [(name.to_string(), format!("CIFAR-100 {split} file"))];
    load_batches(source, &files, RecordLayout::CIFAR100, class_names, limit)
}
