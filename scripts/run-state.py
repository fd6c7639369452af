#!/usr/bin/env python3
"""Carry a long training run's checkpoint across machines without its preprocessing.

A CIFAR-10 run's `checkpoint.safetensors` holds weights, momentum and the
fitted GCN + ZCA preprocessing (a 3072 x 3072 whitening matrix, two thirds
of the file). A fine-tuning run (`train --weights W`) takes its
preprocessing from W unchanged, so the preprocessing is already in the
repository (in W) and only weights, momentum and progress need to travel:

    scripts/run-state.py pack   RUN/checkpoint.safetensors STATE.safetensors
    scripts/run-state.py unpack STATE.safetensors W RUN/checkpoint.safetensors

`pack` drops the `preprocess.*` tensors and keeps every other tensor and
every metadata key as they are. `unpack` puts W's `preprocess.*` tensors
back, after checking that W's preprocessing header is the state's (the
`preprocess` metadata key, compared as JSON), so the checkpoint it writes
is the original one tensor for tensor and bit for bit (`allcnnc train
--resume` then checks it as it checks any checkpoint). Python's standard
library only: the safetensors layout is an 8-byte header length, a JSON
header and the tensors' bytes.
"""

import json
import os
import struct
import sys

PREFIX = "preprocess."


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    body = data[8 + length :]
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        tensors[name] = (info["dtype"], info["shape"], body[begin:end])
    return metadata, tensors


def write(path, metadata, tensors):
    header, chunks, offset = {"__metadata__": metadata}, [], 0
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for chunk in chunks:
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv):
    if len(argv) == 4 and argv[1] == "pack":
        metadata, tensors = read(argv[2])
        kept = {k: v for k, v in tensors.items() if not k.startswith(PREFIX)}
        if not any(k.startswith("momentum.") for k in kept):
            sys.exit(f"{argv[2]} holds no momentum: pack a training checkpoint, not inference weights")
        write(argv[3], metadata, kept)
        print(f"{argv[3]}: {len(kept)} tensors, {len(tensors) - len(kept)} preprocessing tensors left out")
    elif len(argv) == 5 and argv[1] == "unpack":
        metadata, tensors = read(argv[2])
        weights_metadata, weights = read(argv[3])
        want = json.loads(metadata.get("preprocess", "null"))
        have = json.loads(weights_metadata.get("preprocess", "null"))
        if want != have:
            sys.exit(f"{argv[3]}'s preprocessing ({have}) is not the state's ({want})")
        extra = {k: v for k, v in weights.items() if k.startswith(PREFIX)}
        tensors.update(extra)
        write(argv[4], metadata, tensors)
        print(f"{argv[4]}: {len(tensors)} tensors ({len(extra)} preprocessing tensors from {argv[3]})")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
