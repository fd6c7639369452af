//! End-to-end runs of the command line on hostile or mistaken input: each
//! fails quickly with a message naming the flag or file and the size,
//! before allocating what the input asks for (issue 11, parts 5 and 6).
//!
//! - sizes: `check` on `/dev/zero`, a gzip bomb in an IDX file, an IDX
//!   header and a PNG header declaring huge sizes, `bench --batch` and
//!   `visualize --top` of 1000000000; `eval --batch 1000000000` is bounded
//!   by the test set and succeeds;
//! - messages: a link loop, control characters of a `.net` file, grey
//!   images in `predict` and `eval` like in training folders.
//!
//! Everything runs on the CPU with data sets written into a temporary
//! folder; nothing is skipped. The peak memory of the size cases stays
//! small because nothing large is allocated; runs that took the old path
//! (allocating, then failing) would also be slow, which `run` bounds.

mod untrained;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const TINY: &str = "network tiny {
    input 1x28x28
    classes 10
    conv 16 3x3
    conv 16 3x3 stride=2
    conv 10 1x1 act=none
    gap
    softmax
}
";

const TINY_RGB: &str = "network tiny_rgb {
    input 3x8x8
    classes 2
    conv 4 3x3
    conv 2 1x1 act=none
    gap
    softmax
}
";

/// A failing run must be this quick: the refused requests never allocate.
const QUICK: Duration = Duration::from_secs(20);

/// Runs `allcnnc ARGS` with a 1 GiB memory budget (so that messages do not
/// depend on the machine) and returns its output and how long it took.
fn run(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_allcnnc"))
        .args(args)
        .env("ALLCNNC_MEMORY_BUDGET", "1G")
        .output()
        .expect("run allcnnc");
    (out, started.elapsed())
}

/// The stderr of a run that failed quickly with status 1.
fn failure(args: &[&str]) -> String {
    let (out, took) = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(took < QUICK, "{args:?} took {took:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// The stderr of `eval MODEL --weights WEIGHTS --data DATA` on the CPU,
/// which must fail quickly ([`failure`]).
fn eval_failure(model: &Path, weights: &Path, data: &Path) -> String {
    failure(&[
        "eval",
        path_str(model),
        "--weights",
        path_str(weights),
        "--data",
        path_str(data),
        "--device",
        "cpu",
    ])
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temporary path")
}

/// An IDX file: header (`magic`, `dims`) then `data`.
fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = magic.to_be_bytes().to_vec();
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    bytes
}

/// A small IDX data set of `n` 28x28 images per split in `dir`.
fn idx_folder(dir: &Path, n: u32) {
    std::fs::create_dir_all(dir).unwrap();
    let pixels: Vec<u8> = (0..n * 784).map(|i| (i * 7 % 251) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    for prefix in ["train", "t10k"] {
        std::fs::write(
            dir.join(format!("{prefix}-images-idx3-ubyte")),
            idx(0x803, &[n, 28, 28], &pixels),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte")),
            idx(0x801, &[n], &labels),
        )
        .unwrap();
    }
}

#[test]
fn an_endless_net_file_is_too_long() {
    let err = failure(&["check", "/dev/zero"]);
    assert!(
        err.contains("/dev/zero is too long: a .net file holds at most 16.0 MiB"),
        "{err}"
    );
}

#[test]
fn a_gzip_bomb_stops_at_the_size_its_header_declares() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    idx_folder(&data, 10);
    // The test images: a header declaring 10 images, then 256 MiB of zeros
    // (256 KiB compressed). Only 7,841 bytes of it may ever be decompressed.
    let bomb = data.join("t10k-images-idx3-ubyte.gz");
    std::fs::remove_file(data.join("t10k-images-idx3-ubyte")).unwrap();
    let file = std::fs::File::create(&bomb).unwrap();
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    gz.write_all(&idx(0x803, &[10, 28, 28], &[])).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        gz.write_all(&zeros).unwrap();
    }
    gz.finish().unwrap();
    let (model, weights) = untrained::model_and_checkpoint(dir.path(), TINY);
    let err = eval_failure(&model, &weights, &data);
    assert!(
        err.contains(&format!(
            "{} is too long: its header declares 10x28x28 bytes of IDX images, 7856 bytes in all, but it decompresses to more",
            bomb.display()
        )),
        "{err}"
    );
}

#[test]
fn an_idx_header_declaring_too_many_images_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    idx_folder(&data, 10);
    let images = data.join("t10k-images-idx3-ubyte");
    std::fs::write(&images, idx(0x803, &[4_000_000_000, 28, 28], &[0; 784])).unwrap();
    let (model, weights) = untrained::model_and_checkpoint(dir.path(), TINY);
    let err = eval_failure(&model, &weights, &data);
    assert!(
        err.contains(&format!(
            "{} (its header declares 4000000000x28x28 bytes of IDX images, each read and then held as a 4-byte value) needs 14.3 TiB; the memory budget is 1.00 GiB (ALLCNNC_MEMORY_BUDGET=1G)",
            images.display()
        )),
        "{err}"
    );
}

#[test]
fn bench_refuses_a_batch_larger_than_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _) = untrained::model_and_checkpoint(dir.path(), TINY);
    let err = failure(&[
        "bench",
        path_str(&model),
        "--batch",
        "1000000000",
        "--device",
        "cpu",
    ]);
    assert!(
        err.contains(
            "--batch 1000000000: a batch of 1000000000 images (the activations of model `tiny`, "
        ),
        "{err}"
    );
    assert!(
        err.contains("; the memory budget is 1.00 GiB (ALLCNNC_MEMORY_BUDGET=1G)"),
        "{err}"
    );
}

/// `eval --batch` is cut to the test set, and inference runs in chunks: a
/// huge one costs nothing more and gives the same result.
#[test]
fn eval_with_a_huge_batch_is_bounded_by_the_test_set() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    idx_folder(&data, 30);
    let (model, weights) = untrained::model_and_checkpoint(dir.path(), TINY);
    let eval = |batch: &str| {
        let (out, took) = run(&[
            "eval",
            path_str(&model),
            "--weights",
            path_str(&weights),
            "--data",
            path_str(&data),
            "--device",
            "cpu",
            "--json",
            "--batch",
            batch,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "--batch {batch}: {stderr}");
        assert!(took < QUICK, "--batch {batch} took {took:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(eval("1000000000"), eval("7"));
}

#[test]
fn visualize_refuses_a_figure_larger_than_memory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    idx_folder(&data, 10);
    let (model, weights) = untrained::model_and_checkpoint(dir.path(), TINY);
    let out = dir.path().join("figure.png");
    let err = failure(&[
        "visualize",
        path_str(&model),
        "--weights",
        path_str(&weights),
        "--data",
        path_str(&data),
        "--layer",
        "conv2",
        "--top",
        "1000000000",
        "--out",
        path_str(&out),
        "--device",
        "cpu",
    ]);
    assert!(
        err.contains("--top 1000000000 (a figure of 8 units x 2000000000 tiles of at least 84x84 pixels) needs 357 TiB; the memory budget is 1.00 GiB"),
        "{err}"
    );
    assert!(!out.exists());
}

/// A PNG chunk: length, type, data, CRC.
fn png_chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    let mut crc = flate2::Crc::new();
    crc.update(&body);
    png.extend_from_slice(&body);
    png.extend_from_slice(&crc.sum().to_be_bytes());
}

/// A PNG whose header declares `width x height` RGB pixels, followed by
/// the compressed first row only.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    png_chunk(&mut png, b"IHDR", &ihdr);
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zlib.write_all(&vec![0u8; 1 + 3 * width as usize]).unwrap();
    png_chunk(&mut png, b"IDAT", &zlib.finish().unwrap());
    png_chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn predict_refuses_an_image_declaring_a_huge_size() {
    let dir = tempfile::tempdir().unwrap();
    let (model, weights) = untrained::model_and_checkpoint(dir.path(), TINY_RGB);
    let image = dir.path().join("huge.png");
    std::fs::write(&image, png_declaring(100_000, 100_000)).unwrap();
    let err = failure(&[
        "predict",
        path_str(&model),
        "--weights",
        path_str(&weights),
        path_str(&image),
        "--device",
        "cpu",
    ]);
    assert!(
        err.contains(&format!(
            "image {} (its header declares 100000x100000 pixels) needs 74.5 GiB; the memory budget is 1.00 GiB",
            image.display()
        )),
        "{err}"
    );
    // An endless file is no image: refused after its first bytes.
    let err = failure(&[
        "predict",
        path_str(&model),
        "--weights",
        path_str(&weights),
        "/dev/zero",
        "--device",
        "cpu",
    ]);
    assert!(err.contains("cannot decode image /dev/zero"), "{err}");
}

#[test]
fn a_link_to_itself_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let looped = dir.path().join("loop");
    std::os::unix::fs::symlink(&looped, &looped).unwrap();
    let (model, weights) = untrained::model_and_checkpoint(dir.path(), TINY_RGB);
    let message = format!(
        "{} is a symbolic link that points to itself (or a loop of links)",
        looped.display()
    );
    let cases: [&[&str]; 4] = [
        &["check", path_str(&looped)],
        &[
            "eval",
            path_str(&model),
            "--weights",
            path_str(&weights),
            "--data",
            path_str(&looped),
            "--device",
            "cpu",
        ],
        &[
            "predict",
            path_str(&model),
            "--weights",
            path_str(&looped),
            "x.png",
            "--device",
            "cpu",
        ],
        &[
            "predict",
            path_str(&model),
            "--weights",
            path_str(&weights),
            path_str(&looped),
            "--device",
            "cpu",
        ],
    ];
    for args in cases {
        let err = failure(args);
        assert!(err.contains(&message), "{args:?}: {err}");
        assert!(!err.contains("does not exist"), "{args:?}: {err}");
    }
}

#[test]
fn control_characters_of_a_net_file_reach_no_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("bad.net");
    std::fs::write(
        &model,
        "network tiny {\n    input 1x28x28\n    classes 10\n    conv 10 3x3 wide=1 # \x1b]0;pwned\x07\x1b[2J\n    gap\n    softmax\n}\n",
    )
    .unwrap();
    let err = failure(&["check", path_str(&model)]);
    assert!(err.contains("unknown option `wide` for `conv`"), "{err}");
    assert!(err.contains("wide=1 # ?]0;pwned??[2J"), "{err}");
    assert!(!err.chars().any(|c| c.is_control() && c != '\n'), "{err:?}");
}

/// Grey images are handled alike everywhere (see `runtime::data::folder`):
/// repeated on a colour model's channels by `predict` and by `eval` (a grey
/// test folder), as in a training folder; a colour image is never made grey.
#[test]
fn grey_images_are_repeated_on_a_colour_models_channels() {
    let dir = tempfile::tempdir().unwrap();
    let (rgb_model, rgb_weights) = untrained::model_and_checkpoint(dir.path(), TINY_RGB);
    let data = dir.path().join("grey");
    for split in ["train", "test"] {
        for (class, level) in [("a", 40u8), ("b", 200)] {
            let folder = data.join(split).join(class);
            std::fs::create_dir_all(&folder).unwrap();
            image::GrayImage::from_pixel(8, 8, image::Luma([level]))
                .save(folder.join("1.png"))
                .unwrap();
        }
    }
    let grey = data.join("test/a/1.png");
    let (out, _) = run(&[
        "predict",
        path_str(&rgb_model),
        "--weights",
        path_str(&rgb_weights),
        path_str(&grey),
        "--device",
        "cpu",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "predict of a grey image: {stderr}");
    let (out, _) = run(&[
        "eval",
        path_str(&rgb_model),
        "--weights",
        path_str(&rgb_weights),
        "--data",
        path_str(&data),
        "--device",
        "cpu",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "eval of a grey folder: {stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 test images"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let (grey_model, grey_weights) = untrained::model_and_checkpoint(
        dir.path(),
        &TINY_RGB
            .replace("tiny_rgb", "tiny_grey")
            .replace("3x8x8", "1x8x8"),
    );
    let colour = dir.path().join("colour.png");
    image::RgbImage::from_pixel(8, 8, image::Rgb([200, 30, 30]))
        .save(&colour)
        .unwrap();
    let err = failure(&[
        "predict",
        path_str(&grey_model),
        "--weights",
        path_str(&grey_weights),
        path_str(&colour),
        "--device",
        "cpu",
    ]);
    assert!(
        err.contains("is 3x8x8 (CxHxW) but model `tiny_grey` expects 1x8x8"),
        "{err}"
    );
}

/// An image folder whose later image declares a huge size: refused from
/// its header, naming both images, before it is decoded (the first image
/// sets the size of all).
#[test]
fn a_folder_image_of_another_size_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let (model, weights) = untrained::model_and_checkpoint(dir.path(), TINY_RGB);
    let data = dir.path().join("data");
    for split in ["train", "test"] {
        for class in ["a", "b"] {
            let folder = data.join(split).join(class);
            std::fs::create_dir_all(&folder).unwrap();
            image::RgbImage::from_pixel(8, 8, image::Rgb([90, 20, 200]))
                .save(folder.join("1.png"))
                .unwrap();
        }
    }
    let huge = data.join("test/b/2.png");
    std::fs::write(&huge, png_declaring(20_000, 20_000)).unwrap();
    let err = eval_failure(&model, &weights, &data);
    assert!(
        err.contains(&format!("{} is 20000x20000", huge.display())) && err.contains("is 8x8"),
        "{err}"
    );
}

/// Output into a pipe whose reader has gone (`allcnnc ... | head -c 10`
/// once `head` has its bytes) ends the process by SIGPIPE, quietly, like
/// any Unix tool; it used to panic in `println!` ("failed printing to
/// stdout: Broken pipe", exit 101).
#[test]
fn a_closed_stdout_ends_the_process_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let all_cnn_c = models.join("all-cnn-c.net");
    let model_c = models.join("model-c.net");
    for args in [
        vec!["summary", all_cnn_c.to_str().unwrap(), "--json"],
        vec!["convert", model_c.to_str().unwrap(), "--to", "allconv"],
    ] {
        // The reading end is closed before the first byte is written.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_allcnnc"))
            .args(&args)
            .stdout(writer)
            .output()
            .expect("run allcnnc");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "{args:?}: {:?} {err}",
            out.status
        );
    }
}
