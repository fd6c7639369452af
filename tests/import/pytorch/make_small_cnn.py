#!/usr/bin/env python3
"""Makes the PyTorch -> ONNX fixture for `allcnnc import`.

What it makes (all next to this file, in tests/import/pytorch/):

- small_cnn.onnx: `SmallCnn` below, trained briefly on real CIFAR-10 images
  and exported in eval mode by PyTorch's TorchScript exporter
  (`torch.onnx.export(..., dynamo=False)`): plain Conv, BatchNormalization
  (kept, not folded), Relu, MaxPool, Flatten, Gemm nodes; opset 18; input
  `input` N x 3 x 32 x 32 (dynamic N), output `logits` N x 10 (no Softmax in
  the graph). Weights are stored inside the file.
- cifar10-100/: the first 100 CIFAR-10 test images as the official binary
  layout: `test_batch.bin` (100 records of 1 label byte + 1024 R + 1024 G +
  1024 B bytes, 32x32 row-major) and `batches.meta.txt` (the 10 class names in
  label order). That is all `allcnnc eval --data cifar10-100` needs: `eval`
  reads only the test split, whose only file is `test_batch.bin`
  (runtime/src/data/cifar.rs); the data_batch_*.bin files are needed by
  `train` only and are not written.
- small_cnn.expected.json: PyTorch's float32 softmax probabilities (and
  logits) for those 100 images, computed from exactly the bytes in
  test_batch.bin (byte / 255 in float32, as allcnnc's reader does).
- README.md: what the files are, versions, parameter count, ONNX node list.

Model input: raw pixels / 255 in 0..1, NCHW, RGB; no normalisation inside or
outside the model.

Image order (the same as allcnnc's image-folder reader, runtime/src/data/
folder.rs): classes in the official order airplane, automobile, bird, cat,
deer, dog, frog, horse, ship, truck (labels 0..9, which is also their sorted
folder order), files sorted by name within a class, and the images taken
class by class in turn: image k is class k % 10, file number k // 10. So the
100 fixture images are test/<class>/0000.jpg .. 0009.jpg, labels 0,1,..,9
repeated, the same images `allcnnc eval --data data/cifar10-jpeg --limit 100`
reads (allcnnc decodes the JPEGs with its own decoder, which may differ from
Pillow by a unit here and there; the binary folder pins Pillow's bytes).
Training uses files 0000..0499 of every train class (5,000 images); the
reported accuracy uses the first 1,000 test images in the same order
(files 0000..0099 of every class, which include the 100 fixture images).

How to run (from the repository root; about 12 s of one CPU core):

    .venv/bin/pip install onnx onnxscript pillow onnxruntime   # once
    .venv/bin/python tests/import/pytorch/make_small_cnn.py

Options: --data DIR (default data/cifar10-jpeg, the image-folder CIFAR-10,
see /work/shared/data/cifar10-jpeg/README.md).

Made with Python 3.11.7, torch 2.15.0+cu132 (run on the CPU, 1 thread),
onnx 1.23.2, onnxscript 0.7.2, onnxruntime 1.32.0, Pillow 13.0.0, numpy
2.4.6. Seeds are fixed and training runs on one thread with deterministic
algorithms, so a rerun with the same versions on the same kind of CPU
reproduces the files; other versions or CPUs may give slightly different
weights (the expected JSON always matches the ONNX file made with it).
"""

import argparse
import json
import os
import platform
import random
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from PIL import Image
import PIL
import onnx

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]

CLASSES = [
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
]
SEED = 20240501
OPSET = 18
TRAIN_PER_CLASS = 500
TEST_EVAL_PER_CLASS = 100
FIXTURE_PER_CLASS = 10
EPOCHS = 2
BATCH = 64
LR = 0.01
MOMENTUM = 0.9


class SmallCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * 8 * 8, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def interleaved_files(split_dir: Path, per_class: int):
    """(path, label) of files 0..per_class-1 of every class, class by class
    in turn (allcnnc's image-folder order)."""
    lists = []
    for label, name in enumerate(CLASSES):
        files = sorted(
            p
            for p in (split_dir / name).iterdir()
            if p.is_file()
            and not p.name.startswith(".")
            and p.suffix.lower() in (".png", ".jpg", ".jpeg")
        )
        if len(files) < per_class:
            sys.exit(f"{split_dir / name}: {len(files)} images, need {per_class}")
        lists.append([(p, label) for p in files[:per_class]])
    return [lists[c][i] for i in range(per_class) for c in range(len(CLASSES))]


def decode(items):
    """uint8 N x 32 x 32 x 3 (RGB, Pillow) and int64 labels."""
    images = np.empty((len(items), 32, 32, 3), dtype=np.uint8)
    for k, (path, _) in enumerate(items):
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        if arr.shape != (32, 32, 3):
            sys.exit(f"{path}: shape {arr.shape}, expected 32x32 RGB")
        images[k] = arr
    labels = np.array([label for _, label in items], dtype=np.int64)
    return images, labels


def to_unit_nchw(images_nhwc_u8: np.ndarray) -> np.ndarray:
    """byte / 255 computed in float32 (IEEE division, as Rust's
    `f32::from(byte) / 255.0`), NCHW."""
    x = images_nhwc_u8.astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
    return float((logits.argmax(1).numpy() == y).mean())


def write_cifar_bin(path: Path, images_nhwc_u8: np.ndarray, labels: np.ndarray):
    records = bytearray()
    for img, label in zip(images_nhwc_u8, labels):
        records.append(int(label))
        records += img.transpose(2, 0, 1).tobytes()  # R plane, G plane, B plane
    path.write_bytes(bytes(records))


def read_cifar_bin(path: Path):
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8).reshape(-1, 3073)
    labels = raw[:, 0].astype(np.int64)
    images = raw[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def attr_text(node) -> str:
    parts = []
    for a in sorted(node.attribute, key=lambda a: a.name):
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, float):
            v = repr(v)
        parts.append(f"{a.name}={v}")
    return ", ".join(parts)


def dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "data" / "cifar10-jpeg")
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)

    # --- data -------------------------------------------------------------
    train_items = interleaved_files(args.data / "train", TRAIN_PER_CLASS)
    eval_items = interleaved_files(args.data / "test", TEST_EVAL_PER_CLASS)
    train_u8, train_y = decode(train_items)
    eval_u8, eval_y = decode(eval_items)
    train_x = to_unit_nchw(train_u8)
    eval_x = to_unit_nchw(eval_u8)
    print(f"train {len(train_y)} images, test {len(eval_y)} images (Pillow {PIL.__version__})")

    # --- training ---------------------------------------------------------
    model = SmallCnn()
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(
        b.numel() for n, b in model.named_buffers() if not n.endswith("num_batches_tracked")
    )
    print(f"SmallCnn: {params} trainable parameters, {buffers} BatchNorm running-statistic values")
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(SEED)
    tx, ty = torch.from_numpy(train_x), torch.from_numpy(train_y)
    for epoch in range(EPOCHS):
        model.train()
        order = torch.randperm(len(ty), generator=gen)
        total, seen = 0.0, 0
        for start in range(0, len(order), BATCH):
            idx = order[start : start + BATCH]
            opt.zero_grad()
            loss = loss_fn(model(tx[idx]), ty[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        acc = accuracy(model, eval_x, eval_y)
        print(f"epoch {epoch + 1}: train loss {total / seen:.4f}, test accuracy {100 * acc:.2f}% on {len(eval_y)} images")
    test_acc = accuracy(model, eval_x, eval_y)
    model.eval()
    bn1 = model.features[1]
    print(
        "bn1 running_mean[:4]", bn1.running_mean[:4].tolist(),
        "running_var[:4]", bn1.running_var[:4].tolist(),
    )

    # --- export -----------------------------------------------------------
    onnx_path = HERE / "small_cnn.onnx"
    dummy = torch.from_numpy(eval_x[:2])
    torch.onnx.export(
        model,
        (dummy,),
        str(onnx_path),
        dynamo=False,  # TorchScript exporter: keeps BatchNormalization, uses Flatten + Gemm
        opset_version=OPSET,
        do_constant_folding=False,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    m = onnx.load(str(onnx_path))
    onnx.checker.check_model(m, full_check=True)
    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    node_lines = []
    for k, n in enumerate(m.graph.node):
        node_lines.append(
            f"{k}. {n.op_type}({', '.join(n.input)}) -> {', '.join(n.output)}"
            + (f"  [{attr_text(n)}]" if n.attribute else "")
        )
    init_names = {i.name for i in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in init_names]
    io_lines = [f"input `{i.name}`: {dims(i)} float32" for i in inputs] + [
        f"output `{o.name}`: {dims(o)} float32" for o in m.graph.output
    ]
    init_lines = [
        f"`{i.name}`: {list(i.dims)}" for i in m.graph.initializer
    ]
    print(f"ONNX: ir_version {m.ir_version}, opset {opset}, producer {m.producer_name} {m.producer_version}")
    print("node types:", [n.op_type for n in m.graph.node])
    for line in node_lines:
        print("  " + line)
    for line in io_lines:
        print("  " + line)
    print("  initializers:", ", ".join(init_lines))
    if any(n.op_type == "Identity" for n in m.graph.node):
        print("NOTE: Identity nodes present (the exporter deduplicated equal initializers)")
    bn_nodes = [n for n in m.graph.node if n.op_type == "BatchNormalization"]
    assert len(bn_nodes) == 2, "BatchNormalization nodes were folded away"

    # --- fixture data -----------------------------------------------------
    data_dir = HERE / "cifar10-100"
    data_dir.mkdir(exist_ok=True)
    fix_items = interleaved_files(args.data / "test", FIXTURE_PER_CLASS)
    fix_u8, fix_y = decode(fix_items)
    write_cifar_bin(data_dir / "test_batch.bin", fix_u8, fix_y)
    (data_dir / "batches.meta.txt").write_text("\n".join(CLASSES) + "\n")
    # Read back: the expected outputs come from exactly the bytes written.
    back_u8, back_y = read_cifar_bin(data_dir / "test_batch.bin")
    assert np.array_equal(back_u8, fix_u8) and np.array_equal(back_y, fix_y)
    fix_x = to_unit_nchw(back_u8)
    with torch.no_grad():
        logits = model(torch.from_numpy(fix_x))
        probs = torch.softmax(logits, dim=1)
    logits_np = logits.numpy().astype(np.float32)
    probs_np = probs.numpy().astype(np.float32)
    fix_acc = float((probs_np.argmax(1) == back_y).mean())
    print(f"fixture: {len(back_y)} images, accuracy {100 * fix_acc:.0f}%")

    # --- onnxruntime check ------------------------------------------------
    ort_note = "onnxruntime not installed: not checked"
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    if ort is not None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        ort_logits = sess.run(["logits"], {"input": fix_x})[0]
        z = ort_logits - ort_logits.max(axis=1, keepdims=True)
        ort_probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        dp = float(np.abs(ort_probs - probs_np).max())
        dl = float(np.abs(ort_logits - logits_np).max())
        ort_note = (
            f"onnxruntime {ort.__version__} (CPU): max |probability difference| {dp:.3g}, "
            f"max |logit difference| {dl:.3g} over the 100 images"
        )
        print(ort_note)
        assert dp <= 1e-5, "onnxruntime disagrees with PyTorch"

    # --- expected JSON ------------------------------------------------------
    expected = {
        "model": "small_cnn",
        "torch": torch.__version__,
        "onnx_opset": opset,
        "images": int(len(back_y)),
        "class_names": CLASSES,
        "input": "NCHW float32 byte/255 of test_batch.bin, no normalisation",
        "labels": [int(v) for v in back_y],
        "probabilities": [[float(v) for v in row] for row in probs_np],
        "logits": [[float(v) for v in row] for row in logits_np],
    }
    json_path = HERE / "small_cnn.expected.json"
    with open(json_path, "w") as f:
        # Python floats print as repr: the exact float32 value, round-tripping.
        f.write("{\n")
        keys = list(expected)
        for k, key in enumerate(keys):
            value = expected[key]
            if key in ("probabilities", "logits"):
                rows = ",\n    ".join(json.dumps(r) for r in value)
                text = f"[\n    {rows}\n  ]"
            else:
                text = json.dumps(value)
            f.write(f"  {json.dumps(key)}: {text}" + (",\n" if k + 1 < len(keys) else "\n"))
        f.write("}\n")
    json.loads(json_path.read_text())

    # --- README -----------------------------------------------------------
    sizes = {
        p.relative_to(HERE).as_posix(): p.stat().st_size
        for p in [onnx_path, json_path, data_dir / "test_batch.bin", data_dir / "batches.meta.txt"]
    }
    versions = (
        f"Python {platform.python_version()}, torch {torch.__version__} (CPU, 1 thread), "
        f"onnx {onnx.__version__}, "
        + (f"onnxruntime {ort.__version__}, " if ort is not None else "")
        + f"Pillow {PIL.__version__}, numpy {np.__version__}"
    )
    try:
        import onnxscript

        versions += f", onnxscript {onnxscript.__version__} (installed, not used by this exporter)"
    except ImportError:
        pass
    readme = f"""# PyTorch -> ONNX fixture for `allcnnc import`

Made by `make_small_cnn.py` (this folder); do not edit the files by hand,
rerun the script:

    .venv/bin/pip install onnx onnxscript pillow onnxruntime   # once
    .venv/bin/python tests/import/pytorch/make_small_cnn.py

Versions: {versions}.

## Files

| file | bytes | what |
|---|---|---|
| `small_cnn.onnx` | {sizes['small_cnn.onnx']} | `SmallCnn` trained briefly on CIFAR-10, eval mode, TorchScript exporter (`dynamo=False`), opset {opset}, IR version {m.ir_version}, weights inside |
| `cifar10-100/test_batch.bin` | {sizes['cifar10-100/test_batch.bin']} | the first 100 CIFAR-10 test images, official binary layout (1 label byte, then 1024 R, 1024 G, 1024 B bytes, 32x32 row-major) |
| `cifar10-100/batches.meta.txt` | {sizes['cifar10-100/batches.meta.txt']} | the 10 class names in label order |
| `small_cnn.expected.json` | {sizes['small_cnn.expected.json']} | PyTorch float32 softmax probabilities (and logits) for those 100 images |

`cifar10-100/` is all `allcnnc eval --data tests/import/pytorch/cifar10-100`
needs: the folder is detected as CIFAR-10 binary by `test_batch.bin` alone,
`eval` reads only the test split (`test_batch.bin`; any whole number of
3073-byte records is accepted), and class names come from
`batches.meta.txt` (without it they default to the same official names).
There are no `data_batch_*.bin` files, so `train` cannot use this folder.

## Model

`SmallCnn`: Conv2d(3,16,3,padding=1) -> BatchNorm2d(16) -> ReLU ->
MaxPool2d(2) -> Conv2d(16,32,3,padding=1) -> BatchNorm2d(32) -> ReLU ->
MaxPool2d(2) -> Flatten -> Linear(2048,64) -> ReLU -> Linear(64,10).
{params} trainable parameters (448 + 32 + 4,640 + 64 + 131,136 + 650), plus
{buffers} BatchNorm running-statistic values (running mean and variance).
BatchNorm epsilon 1e-5. Input: RGB pixels / 255 in 0..1, NCHW, no
normalisation inside or outside the model. The graph ends at the logits
(no Softmax node); the expected probabilities are softmax(logits).

Training (deterministic: seed {SEED}, one thread): files 0000-0499 of every
CIFAR-10 train class (5,000 images, decoded with Pillow from
data/cifar10-jpeg), {EPOCHS} epochs, SGD lr {LR} momentum {MOMENTUM}, batch {BATCH},
no augmentation. Test accuracy on the first 1,000 test images (files
0000-0099 of every class): {100 * test_acc:.2f}%. Accuracy on the 100
fixture images: {100 * fix_acc:.0f}%.

{ort_note}.

## Image order

Classes in the official order (label 0..9): {', '.join(CLASSES)}. Image k of
`test_batch.bin` is `test/<class k % 10>/<file k // 10>.jpg`, i.e. files
0000-0009 of every class taken class by class in turn, labels 0..9 repeated.
This is allcnnc's image-folder order, so `--data data/cifar10-jpeg --limit 100`
reads the same images (decoded by allcnnc's own JPEG decoder, which may
differ slightly from Pillow's bytes stored here).

## ONNX graph

ir_version {m.ir_version}, opset {opset}, producer {m.producer_name} {m.producer_version}.

{chr(10).join('- ' + l for l in io_lines)}

Nodes, in order:

{chr(10).join(node_lines)}

Initializers: {', '.join(init_lines)}.
"""
    (HERE / "README.md").write_text(readme)
    print("wrote", ", ".join(f"{k} ({v} bytes)" for k, v in sizes.items()), "and README.md")


if __name__ == "__main__":
    main()
