//! An image folder: `ROOT/{train,test}/<class>/*.{png,jpg,jpeg}`.
//!
//! Classes are the sub-folders of `ROOT/train` sorted by name (byte order),
//! label 0 first; the test split uses the training classes so that labels
//! agree, and a test class unknown to training is an error. Files are sorted
//! by name within a class; other files and hidden entries are ignored.
//!
//! The images are ordered class by class in turn (the first image of every
//! class, then the second of every class, ...), so the first `limit` images
//! cover all classes. Decoding runs in parallel (rayon). All images must have
//! one size; an alpha channel is dropped.
//!
//! Grey and colour, here and in `predict` and `visualize --image`
//! ([`load_image_as`]) alike: a grey image is repeated on the three channels
//! wherever three are expected (a split where any image has colour, a
//! colour model, a grey split given to a colour model through
//! [`Dataset::to_channels`](super::Dataset::to_channels)); a colour image is
//! never turned grey, so a one-channel model refuses it.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{DataError, Dataset, Result, Split};
use crate::plan::Shape;

/// File extensions read as images (compared case-insensitively).
pub const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// One decoded image, 8 bits per channel, channels-last.
#[derive(Debug, Clone)]
pub(crate) struct Decoded {
    width: usize,
    height: usize,
    channels: usize,
    bytes: Vec<u8>,
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|name| name.to_string_lossy().starts_with('.'))
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| DataError::io(dir, source))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| DataError::io(dir, source))?;
        let path = entry.path();
        if !is_hidden(&path) {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// The class sub-folders of `dir`, sorted by name.
fn class_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    Ok(read_dir(dir)?
        .into_iter()
        .filter(|path| path.is_dir())
        .map(|path| {
            let name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, path)
        })
        .collect())
}

fn is_image(path: &Path) -> bool {
    path.is_file()
        && path
            .file_name()
            .is_some_and(|name| has_image_extension(&name.to_string_lossy()))
}

/// Whether a file name ends in one of [`EXTENSIONS`].
pub(crate) fn has_image_extension(name: &str) -> bool {
    Path::new(name).extension().is_some_and(|ext| {
        let ext = ext.to_string_lossy().to_lowercase();
        EXTENSIONS.contains(&ext.as_str())
    })
}

fn require_dir(path: &Path) -> Result<()> {
    super::require_exists(path)?;
    if !path.is_dir() {
        return Err(DataError::NotADirectory {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// The class names of the folder data set at `root`: the sub-folders of
/// `root/train`, or of `root/test` when there is no training folder.
pub fn class_names(root: &Path) -> Result<Vec<String>> {
    let train = root.join("train");
    let dir = if train.is_dir() {
        train
    } else {
        root.join("test")
    };
    require_dir(&dir)?;
    let names: Vec<String> = class_dirs(&dir)?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    if names.is_empty() {
        return Err(DataError::NoClasses { path: dir });
    }
    Ok(names)
}

/// The files of one split of an image folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub class_names: Vec<String>,
    /// Each image file with its label, in load order.
    pub items: Vec<(PathBuf, u32)>,
}

/// Lists the files of a split in load order (classes in turn) with labels.
pub fn list(root: &Path, split: Split) -> Result<Listing> {
    let split_dir = root.join(split.to_string());
    require_dir(&split_dir)?;
    let class_names = class_names(root)?;
    let split_classes = class_dirs(&split_dir)?;
    if split_classes.is_empty() {
        return Err(DataError::NoClasses { path: split_dir });
    }
    let mut per_class: Vec<(u32, Vec<PathBuf>)> = Vec::new();
    for (name, dir) in split_classes {
        let Some(label) = class_names.iter().position(|known| *known == name) else {
            return Err(DataError::UnknownClass {
                path: dir,
                known: class_names.join(", "),
            });
        };
        let files: Vec<PathBuf> = read_dir(&dir)?
            .into_iter()
            .filter(|path| is_image(path))
            .collect();
        if files.is_empty() {
            return Err(DataError::EmptyClass { path: dir });
        }
        per_class.push((label as u32, files));
    }
    let items = interleave(per_class);
    Ok(Listing { class_names, items })
}

/// The items of every class in turn: the first of each class, then the
/// second of each, ... (see the module doc), each with its label.
pub(crate) fn interleave<T: Clone>(per_class: Vec<(u32, Vec<T>)>) -> Vec<(T, u32)> {
    let rounds = per_class
        .iter()
        .map(|(_, files)| files.len())
        .max()
        .unwrap_or(0);
    let mut items = Vec::with_capacity(per_class.iter().map(|(_, files)| files.len()).sum());
    for round in 0..rounds {
        for (label, files) in &per_class {
            if let Some(file) = files.get(round) {
                items.push((file.clone(), *label));
            }
        }
    }
    items
}

/// Decodes one image file, streaming from it: the size its header declares
/// is checked against the memory budget ([`crate::budget`]) before the
/// pixels are allocated, the decoder gets the budget as its allocation
/// limit, and a file that is no image (`/dev/zero`) fails after its first
/// bytes.
fn decode(path: &Path, size_of: Option<(&Path, usize, usize)>) -> Result<Decoded> {
    decode_with(path, size_of, || {
        let file = crate::file::open(path)?;
        Ok(std::io::BufReader::new(file))
    })
}

/// Decodes one image held in memory (a member of an archive, named `path`
/// in errors), with [`decode`]'s checks.
pub(crate) fn decode_bytes(
    path: &Path,
    bytes: &[u8],
    size_of: Option<(&Path, usize, usize)>,
) -> Result<Decoded> {
    decode_with(path, size_of, || Ok(std::io::Cursor::new(bytes)))
}

/// [`decode`] from whatever `source` opens (read twice: header, then pixels).
fn decode_with<R: std::io::BufRead + std::io::Seek>(
    path: &Path,
    size_of: Option<(&Path, usize, usize)>,
    source: impl Fn() -> Result<R>,
) -> Result<Decoded> {
    let decode_error = |err: &dyn std::fmt::Display| DataError::Decode {
        path: path.to_path_buf(),
        message: err.to_string(),
    };
    let open = || -> Result<image::ImageReader<R>> {
        image::ImageReader::new(source()?)
            .with_guessed_format()
            .map_err(|err| decode_error(&err))
    };
    let (width, height) = open()?
        .into_dimensions()
        .map_err(|err| decode_error(&err))?;
    // Every image of a split has the first one's size: another size is
    // refused from the header, before a large image is decoded.
    if let Some((first, expected_w, expected_h)) = size_of {
        if (width as usize, height as usize) != (expected_w, expected_h) {
            return Err(DataError::SizeMismatch {
                path: path.to_path_buf(),
                first: first.to_path_buf(),
                expected_w,
                expected_h,
                found_w: width as usize,
                found_h: height as usize,
            });
        }
    }
    let budget = crate::budget::Budget::current()?;
    // The decoder's output: at most 4 channels of 16 bits.
    budget.check(
        format_args!(
            "image {} (its header declares {width}x{height} pixels)",
            path.display()
        ),
        crate::budget::product(&[u128::from(width), u128::from(height), 8]),
    )?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(budget.bytes);
    let mut reader = open()?;
    reader.limits(limits);
    let image = reader.decode().map_err(|err| decode_error(&err))?;
    let (width, height) = (image.width() as usize, image.height() as usize);
    let (channels, bytes) = if image.color().has_color() {
        (3, image.into_rgb8().into_raw())
    } else {
        (1, image.into_luma8().into_raw())
    };
    Ok(Decoded {
        width,
        height,
        channels,
        bytes,
    })
}

/// `u8 / 255` of a decoded image with `channels` channels: its own values,
/// or a grey image repeated on every channel (see the module doc).
fn to_unit(image: &Decoded, channels: usize, out: &mut [f32]) {
    if image.channels == channels {
        for (value, &byte) in out.iter_mut().zip(&image.bytes) {
            *value = f32::from(byte) / 255.0;
        }
    } else {
        for (pixel, &byte) in out.chunks_exact_mut(channels).zip(&image.bytes) {
            pixel.fill(f32::from(byte) / 255.0);
        }
    }
}

/// Reads one image file as `(shape, H x W x C values in 0..=1)`; grey images
/// have one channel, colour images three.
pub fn load_image(path: &Path) -> Result<(Shape, Vec<f32>)> {
    super::require_exists(path)?;
    let decoded = decode(path, None)?;
    let shape = Shape::new(decoded.channels, decoded.height, decoded.width);
    Ok((shape, super::bytes_to_unit(&decoded.bytes)))
}

/// Reads one image file for a model of `channels` channels, with the
/// folder's rule (see the module doc): a grey image is repeated on the
/// three channels of a colour model; a colour image keeps its three
/// channels (a one-channel model refuses it: colour is never dropped).
pub fn load_image_as(path: &Path, channels: usize) -> Result<(Shape, Vec<f32>)> {
    super::require_exists(path)?;
    let decoded = decode(path, None)?;
    let channels = if decoded.channels == 1 && channels == 3 {
        3
    } else {
        decoded.channels
    };
    let shape = Shape::new(channels, decoded.height, decoded.width);
    let mut values = vec![0.0; shape.len()];
    to_unit(&decoded, channels, &mut values);
    Ok((shape, values))
}

/// Loads a split of the image folder at `root` (first `limit` images in load
/// order if given).
pub fn load(root: &Path, split: Split, limit: Option<usize>) -> Result<Dataset> {
    let Listing { class_names, items } = list(root, split)?;
    assemble(
        &root.join(split.to_string()),
        class_names,
        items,
        limit,
        PathBuf::clone,
        |path, size_of| decode(path, size_of),
    )
}

/// Decodes the first `limit` of a split's `items` (in load order, with their
/// labels) into a data set: `path_of` names an item in errors, `decode`
/// decodes one (checking its size against the first image's when given).
/// `split_dir` names the split in errors.
pub(crate) fn assemble<T: Sync>(
    split_dir: &Path,
    class_names: Vec<String>,
    mut items: Vec<(T, u32)>,
    limit: Option<usize>,
    path_of: impl Fn(&T) -> PathBuf,
    decode: impl Fn(&T, Option<(&Path, usize, usize)>) -> Result<Decoded> + Sync,
) -> Result<Dataset> {
    let keep = limit.map_or(items.len(), |limit| limit.min(items.len()));
    // Even with `limit == 0` one image is decoded: it gives the shape.
    items.truncate(keep.max(1));
    let Some((first_item, _)) = items.first() else {
        return Err(DataError::NoClasses {
            path: split_dir.to_path_buf(),
        });
    };
    let first_path = path_of(first_item);
    // The first image gives the size of all: the split's bytes and values
    // are checked against the budget before the others are decoded.
    let first = decode(first_item, None)?;
    let pixels = crate::budget::product(&[
        items.len() as u128,
        first.width as u128,
        first.height as u128,
    ]);
    crate::budget::check(
        format_args!(
            "the {} images of {} ({}x{} pixels each, 3 bytes and 3 values of 4 bytes a pixel)",
            items.len(),
            split_dir.display(),
            first.width,
            first.height
        ),
        crate::budget::product(&[pixels, 15]),
    )?;
    let expected = Some((first_path.as_path(), first.width, first.height));
    let rest: Vec<Result<Decoded>> = items[1..]
        .par_iter()
        .map(|(item, _)| decode(item, expected))
        .collect();
    let decoded: Vec<Decoded> = std::iter::once(Ok(first))
        .chain(rest)
        .collect::<Result<_>>()?;
    let first = &decoded[0];
    let (width, height) = (first.width, first.height);
    if let Some(index) = decoded
        .iter()
        .position(|image| image.width != width || image.height != height)
    {
        return Err(DataError::SizeMismatch {
            path: path_of(&items[index].0),
            first: first_path,
            expected_w: width,
            expected_h: height,
            found_w: decoded[index].width,
            found_h: decoded[index].height,
        });
    }
    let channels = decoded
        .iter()
        .map(|image| image.channels)
        .max()
        .unwrap_or(1);
    let shape = Shape::new(channels, height, width);
    let mut images = vec![0.0f32; decoded.len() * shape.len()];
    images
        .par_chunks_mut(shape.len())
        .zip(decoded.par_iter())
        .for_each(|(out, image)| to_unit(image, channels, out));
    let labels = items.into_iter().map(|(_, label)| label).collect();
    let mut dataset = Dataset {
        images,
        labels,
        shape,
        classes: class_names.len(),
        class_names,
    };
    dataset.truncate(keep);
    Ok(dataset)
}
