//! The IDX format of MNIST and Fashion-MNIST, raw or gzipped.
//!
//! An IDX file is a big-endian header `0x00 0x00 TYPE NDIMS`, `NDIMS` `u32`
//! sizes, then the data. Images are `0x00000803` (unsigned bytes, 3 dims:
//! `N x rows x cols`), labels `0x00000801` (`N`). A directory holds
//! `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`
//! and `t10k-labels-idx1-ubyte`, each optionally with `.gz`. A gzipped file is
//! recognised by its content, not its name.
//!
//! IDX data sets have 10 classes: the Fashion-MNIST names when the
//! directory's name contains `fashion`, the digits `0`..`9` otherwise.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use super::{check_labels, DataError, Dataset, Result, Split};
use crate::plan::Shape;

/// Magic number of an image file (`u8`, 3 dims).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of a label file (`u8`, 1 dim).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// Fashion-MNIST's classes, in label order.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// File name prefixes of the two splits.
pub(crate) const PREFIXES: [&str; 2] = ["train", "t10k"];

fn prefix(split: Split) -> &'static str {
    match split {
        Split::Train => PREFIXES[0],
        Split::Test => PREFIXES[1],
    }
}

/// File names tried, in order, for the images of a split.
pub(crate) fn image_candidates(prefix: &str) -> [String; 3] {
    [
        format!("{prefix}-images-idx3-ubyte"),
        format!("{prefix}-images-idx3-ubyte.gz"),
        format!("{prefix}-images.idx3-ubyte"),
    ]
}

fn label_candidates(prefix: &str) -> [String; 3] {
    [
        format!("{prefix}-labels-idx1-ubyte"),
        format!("{prefix}-labels-idx1-ubyte.gz"),
        format!("{prefix}-labels.idx1-ubyte"),
    ]
}

fn find(dir: &Path, candidates: &[String], what: &str) -> Result<PathBuf> {
    candidates
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| DataError::MissingFile {
            dir: dir.to_path_buf(),
            what: what.to_string(),
            candidates: candidates.join(", "),
        })
}

/// The header and data of one IDX file of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an IDX file, gunzipping it when it starts with the gzip magic.
///
/// `magic` is the expected first word; the data must fill the file exactly.
/// The header is read first and the size it declares checked against the
/// memory budget ([`crate::budget`]) before the data is allocated; the data
/// is then read through a limit of that size plus one byte, so a gzip bomb
/// stops decompressing there and is "too long", and a short file is
/// "truncated".
pub fn read_idx(path: &Path, magic: u32, what: &'static str) -> Result<IdxArray> {
    let mut file = BufReader::new(crate::file::open(path)?);
    let gzipped = file
        .fill_buf()
        .map_err(|source| DataError::io(path, source))?
        .starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn Read> = if gzipped {
        Box::new(flate2::bufread::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let read_io = |err: std::io::Error| DataError::io(path, err);
    let mut head = [0u8; 4];
    let got = read_up_to(&mut reader, &mut head).map_err(read_io)?;
    if got < head.len() {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: 4,
            found: got as u64,
        });
    }
    let found = u32::from_be_bytes(head);
    if found != magic {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            expected: magic,
            found,
            what,
        });
    }
    let n_dims = usize::from(head[3]);
    let header_len = 4 + 4 * n_dims;
    let mut dim_bytes = vec![0u8; 4 * n_dims];
    let got = read_up_to(&mut reader, &mut dim_bytes).map_err(read_io)?;
    if got < dim_bytes.len() {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: header_len as u64,
            found: (4 + got) as u64,
        });
    }
    let dims: Vec<usize> = dim_bytes
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    // u128 so that a hostile header cannot overflow the size computation.
    let data_len = crate::budget::product(&dims.iter().map(|&d| d as u128).collect::<Vec<_>>());
    let shape = dims
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join("x");
    // The bytes, and the 4-byte value each becomes.
    crate::budget::check(
        format_args!(
            "{} (its header declares {shape} bytes of {what}, each read and then held as a 4-byte value)",
            path.display()
        ),
        crate::budget::product(&[data_len, 5]),
    )?;
    // Within the budget, hence within u64 and usize.
    let data_len = data_len as u64;
    let mut data = Vec::with_capacity(data_len as usize);
    (&mut reader)
        .take(data_len + 1)
        .read_to_end(&mut data)
        .map_err(read_io)?;
    let expected = header_len as u64 + data_len;
    let found_len = header_len as u64 + data.len() as u64;
    if found_len < expected {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected,
            found: found_len,
        });
    }
    if found_len > expected {
        return Err(DataError::TooLong {
            path: path.to_path_buf(),
            expected,
            shape,
            what,
            gzipped,
        });
    }
    Ok(IdxArray { dims, data })
}

/// Reads until `buf` is full or the input ends; the number of bytes read.
fn read_up_to(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(got) => filled += got,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// Reads an image file: `(n, rows, cols, pixels)`.
pub fn read_images(path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    let array = read_idx(path, IMAGES_MAGIC, "IDX images")?;
    let [n, rows, cols] = array.dims[..] else {
        return Err(DataError::BadHeader {
            path: path.to_path_buf(),
            reason: format!("images need 3 dims, found {}", array.dims.len()),
        });
    };
    if rows == 0 || cols == 0 {
        return Err(DataError::BadHeader {
            path: path.to_path_buf(),
            reason: format!("images of {rows}x{cols} pixels"),
        });
    }
    Ok((n, rows, cols, array.data))
}

/// Reads a label file.
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    let array = read_idx(path, LABELS_MAGIC, "IDX labels")?;
    Ok(array.data)
}

/// The class names of an IDX data set in `dir`.
pub fn class_names(dir: &Path) -> Vec<String> {
    let resolved = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let name = resolved
        .file_name()
        .map(|name| name.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if name.contains("fashion") {
        FASHION_CLASSES.iter().map(|s| s.to_string()).collect()
    } else {
        (0..10).map(|digit| digit.to_string()).collect()
    }
}

/// Loads a split of the IDX data set in `dir` (first `limit` images if given).
pub fn load(dir: &Path, split: Split, limit: Option<usize>) -> Result<Dataset> {
    let prefix = prefix(split);
    let images_path = find(dir, &image_candidates(prefix), &format!("{split} images"))?;
    let labels_path = find(dir, &label_candidates(prefix), &format!("{split} labels"))?;
    load_files(&images_path, &labels_path, &class_names(dir), limit)
}

/// Loads an image file and a label file.
pub fn load_files(
    images_path: &Path,
    labels_path: &Path,
    class_names: &[String],
    limit: Option<usize>,
) -> Result<Dataset> {
    let (n_images, rows, cols, mut pixels) = read_images(images_path)?;
    let mut labels: Vec<u32> = read_labels(labels_path)?
        .into_iter()
        .map(u32::from)
        .collect();
    if labels.len() != n_images {
        return Err(DataError::CountMismatch {
            images: images_path.to_path_buf(),
            labels: labels_path.to_path_buf(),
            n_images,
            n_labels: labels.len(),
        });
    }
    check_labels(labels_path, &labels, class_names.len())?;
    let shape = Shape::new(1, rows, cols);
    let n = limit.map_or(n_images, |limit| limit.min(n_images));
    labels.truncate(n);
    pixels.truncate(n * shape.len());
    Ok(Dataset::from_bytes(
        &pixels,
        labels,
        shape,
        class_names.to_vec(),
    ))
}
