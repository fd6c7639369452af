//! Data sets inside the archives people download, read without unpacking:
//! a tar file, gzipped (`.tar.gz`, `.tgz`) or not (`.tar`), holding one of
//! the layouts the folder readers know:
//!
//! - the official CIFAR-10 binary archive (`cifar-10-binary.tar.gz`:
//!   `cifar-10-batches-bin/data_batch_1.bin` ...);
//! - the official CIFAR-100 binary archive (`cifar-100-binary.tar.gz`:
//!   `cifar-100-binary/train.bin` ...);
//! - an image folder (`[PREFIX/]train/<class>/*.jpg`, `[PREFIX/]test/...`),
//!   such as the CIFAR-10 JPEG archive.
//!
//! The archive is streamed once per split: every member's name is kept, and
//! the bytes only of the members the split needs (a test split never holds
//! the training images), each checked against the memory budget
//! ([`crate::budget`]) from its header before it is read. Images are decoded
//! in memory; nothing is written to disk.
//!
//! Invariant: a data set read from an archive equals the one read from the
//! same files unpacked (same images, order, labels and class names): the
//! readers share their parsing with the folder readers ([`cifar::Source`],
//! [`folder::assemble`]), and member names are sorted as a folder's are.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use super::{cifar, folder, DataError, Dataset, Format, Result, Split};

/// File names read as archives (compared case-insensitively).
pub const EXTENSIONS: [&str; 3] = [".tar.gz", ".tgz", ".tar"];

/// Whether `path` names an archive by its extension.
pub fn is_archive(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    EXTENSIONS.iter().any(|ext| name.ends_with(ext))
}

/// An archive's member names and the bytes of the members that were kept.
#[derive(Debug)]
struct Contents {
    /// The archive.
    path: PathBuf,
    /// Every regular file's name inside, sorted.
    names: Vec<String>,
    /// The kept members' bytes, by name.
    members: BTreeMap<String, Vec<u8>>,
}

impl Contents {
    /// The path a member's errors name: the archive, then the member.
    fn member_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

/// A member name without `./` and with `/` separators only; `None` for a
/// hidden member (a component starting with `.`: macOS `._` files).
fn clean_name(raw: &str) -> Option<String> {
    let parts: Vec<&str> = raw
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    if parts.is_empty() || parts.iter().any(|part| part.starts_with('.')) {
        return None;
    }
    Some(parts.join("/"))
}

/// Streams the archive at `path`, keeping the bytes of the members `wanted`
/// accepts.
fn read(path: &Path, wanted: impl Fn(&str) -> bool) -> Result<Contents> {
    let archive_error = |message: String| DataError::Archive {
        path: path.to_path_buf(),
        message,
    };
    let mut input = BufReader::new(crate::file::open(path)?);
    let head = input
        .fill_buf()
        .map_err(|source| DataError::io(path, source))?;
    let gzipped = head.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gzipped {
        Box::new(flate2::bufread::MultiGzDecoder::new(input))
    } else {
        Box::new(input)
    };
    let budget = crate::budget::Budget::current()?;
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|err| archive_error(err.to_string()))?;
    let mut names = Vec::new();
    let mut members = BTreeMap::new();
    let mut kept: u128 = 0;
    for entry in entries {
        let mut entry = entry.map_err(|err| archive_error(err.to_string()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let raw = entry
            .path()
            .map_err(|err| archive_error(err.to_string()))?
            .to_string_lossy()
            .into_owned();
        let Some(name) = clean_name(&raw) else {
            continue;
        };
        if wanted(&name) {
            let size = entry.size();
            kept += u128::from(size);
            // The bytes, and the 4-byte value each becomes.
            budget.check(
                format_args!(
                    "reading {} ({size} bytes, {kept} with the members before it, each then \
                     held as a 4-byte value)",
                    path.join(&name).display()
                ),
                crate::budget::product(&[kept, 5]),
            )?;
            let mut bytes = Vec::with_capacity(size.min(1 << 30) as usize);
            (&mut entry)
                .take(size)
                .read_to_end(&mut bytes)
                .map_err(|err| archive_error(format!("member {name}: {err}")))?;
            if (bytes.len() as u64) < size {
                return Err(DataError::Truncated {
                    path: path.join(&name),
                    expected: size,
                    found: bytes.len() as u64,
                });
            }
            members.insert(name.clone(), bytes);
        }
        names.push(name);
    }
    names.sort();
    names.dedup();
    Ok(Contents {
        path: path.to_path_buf(),
        names,
        members,
    })
}

/// Where in the archive the data set lies.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    /// CIFAR-10 batches in the folder `dir` (`""` or ending in `/`).
    Cifar10 { dir: String },
    /// CIFAR-100 files in the folder `dir`.
    Cifar100 { dir: String },
    /// An image folder whose `train/` and `test/` lie in `root`.
    Folder { root: String },
}

impl Layout {
    fn format(&self) -> Format {
        match self {
            Layout::Cifar10 { .. } => Format::Cifar10,
            Layout::Cifar100 { .. } => Format::Cifar100,
            Layout::Folder { .. } => Format::ImageFolder,
        }
    }
}

/// `(folder with a trailing '/' or "", base name)` of a member name.
fn split_name(name: &str) -> (&str, &str) {
    match name.rfind('/') {
        Some(at) => (&name[..=at], &name[at + 1..]),
        None => ("", name),
    }
}

/// `(root, split, class, file)` of an image member `ROOT/SPLIT/CLASS/FILE`.
fn image_parts(name: &str) -> Option<(&str, &str, &str, &str)> {
    let (dir, file) = split_name(name);
    if !folder::has_image_extension(file) {
        return None;
    }
    let (dir, class) = split_name(dir.strip_suffix('/')?);
    let (root, split) = split_name(dir.strip_suffix('/')?);
    (split == "train" || split == "test").then_some((root, split, class, file))
}

/// The layout of an archive from its member names; the shallowest data set
/// when there are several.
fn layout(names: &[String]) -> Option<Layout> {
    let mut found: Vec<(usize, Layout)> = Vec::new();
    for name in names {
        let (dir, base) = split_name(name);
        let depth = dir.matches('/').count();
        let layout = match base {
            "data_batch_1.bin" | "test_batch.bin" => Layout::Cifar10 { dir: dir.into() },
            "train.bin" | "test.bin" => Layout::Cifar100 { dir: dir.into() },
            _ => match image_parts(name) {
                Some((root, ..)) => Layout::Folder { root: root.into() },
                None => continue,
            },
        };
        found.push((depth, layout));
    }
    found
        .into_iter()
        .min_by_key(|(depth, _)| *depth)
        .map(|(_, layout)| layout)
}

/// Whether the split needs the bytes of member `name` (whatever the layout).
fn wanted(name: &str, split: Split) -> bool {
    let (_, base) = split_name(name);
    let cifar = match split {
        Split::Train => base.starts_with("data_batch_") || base == "train.bin",
        Split::Test => base == "test_batch.bin" || base == "test.bin",
    };
    cifar
        || base == "batches.meta.txt"
        || base == "fine_label_names.txt"
        || image_parts(name).is_some_and(|(_, part, ..)| part == split.to_string())
}

/// The format of the data set in the archive at `path` (reads the names).
pub fn detect(path: &Path) -> Result<Format> {
    let contents = read(path, |_| false)?;
    Ok(identify(&contents)?.format())
}

fn identify(contents: &Contents) -> Result<Layout> {
    layout(&contents.names).ok_or_else(|| {
        let shown: Vec<&str> = contents.names.iter().take(5).map(String::as_str).collect();
        DataError::UnknownFormat {
            path: contents.path.clone(),
            reason: format!(
                "the archive holds no CIFAR binaries (data_batch_1.bin, test_batch.bin, \
                 train.bin, test.bin) and no train/<class>/ or test/<class>/ images; it holds {} \
                 files{}{}",
                contents.names.len(),
                if shown.is_empty() { "" } else { ", first: " },
                shown.join(", ")
            ),
        }
    })
}

/// A folder inside an archive, for the CIFAR readers.
struct ArchiveDir<'a> {
    contents: &'a Contents,
    dir: String,
}

impl ArchiveDir<'_> {
    /// The member name of file `name` of this folder.
    fn member(&self, name: &str) -> String {
        format!("{}{name}", self.dir)
    }
}

impl cifar::Source for ArchiveDir<'_> {
    fn read(&self, name: &str) -> Result<Option<Cow<'_, [u8]>>> {
        Ok(self
            .contents
            .members
            .get(&self.member(name))
            .map(|bytes| Cow::Borrowed(bytes.as_slice())))
    }

    fn exists(&self, name: &str) -> bool {
        self.contents.members.contains_key(&self.member(name))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.contents.member_path(&self.member(name))
    }

    fn dir(&self) -> PathBuf {
        self.contents.member_path(self.dir.trim_end_matches('/'))
    }
}

/// Loads one split of the data set in the archive at `path` (first `limit`
/// images if given).
pub fn load(path: &Path, split: Split, limit: Option<usize>) -> Result<Dataset> {
    let contents = read(path, |name| wanted(name, split))?;
    match identify(&contents)? {
        Layout::Cifar10 { dir } => cifar::load_cifar10_from(
            &ArchiveDir {
                contents: &contents,
                dir,
            },
            split,
            limit,
        ),
        Layout::Cifar100 { dir } => cifar::load_cifar100_from(
            &ArchiveDir {
                contents: &contents,
                dir,
            },
            split,
            limit,
        ),
        Layout::Folder { root } => load_folder(&contents, &root, split, limit),
    }
}

/// An image folder inside the archive, in the folder reader's order:
/// classes sorted by name, files by name within a class (a folder's
/// `PathBuf` order), then classes in turn ([`folder::interleave`]).
fn load_folder(
    contents: &Contents,
    root: &str,
    split: Split,
    limit: Option<usize>,
) -> Result<Dataset> {
    // split -> class -> member names. `names` is sorted and a class's
    // members share their prefix, so each list is in file-name order.
    let mut parts: BTreeMap<&str, BTreeMap<&str, Vec<String>>> = BTreeMap::new();
    for name in &contents.names {
        if let Some((at, part, class, _)) = image_parts(name) {
            if at == root {
                parts
                    .entry(part)
                    .or_default()
                    .entry(class)
                    .or_default()
                    .push(name.clone());
            }
        }
    }
    let split_name = split.to_string();
    let split_dir = contents.member_path(&format!("{root}{split_name}"));
    let classes: Vec<String> = parts
        .get("train")
        .or_else(|| parts.get("test"))
        .map(|classes| classes.keys().map(|class| class.to_string()).collect())
        .unwrap_or_default();
    let Some(split_classes) = parts.remove(split_name.as_str()) else {
        return Err(DataError::NoClasses { path: split_dir });
    };
    let mut per_class = Vec::with_capacity(split_classes.len());
    for (class, names) in split_classes {
        let Some(label) = classes.iter().position(|known| known == class) else {
            return Err(DataError::UnknownClass {
                path: split_dir.join(class),
                known: classes.join(", "),
            });
        };
        per_class.push((label as u32, names));
    }
    let items = folder::interleave(per_class);
    let decode = |name: &String, size_of: Option<(&Path, usize, usize)>| {
        let bytes = contents.members.get(name).map_or(&[][..], Vec::as_slice);
        folder::decode_bytes(&contents.member_path(name), bytes, size_of)
    };
    folder::assemble(
        &split_dir,
        classes,
        items,
        limit,
        |name: &String| contents.member_path(name),
        decode,
    )
}
