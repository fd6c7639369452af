
import json
import struct
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class MeanStd(nn.Module):
    """Per channel: (x - mean) / std, the fitted `mean-std` preprocessing (`preprocess normalize`)."""

    def __init__(self, channels):
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))

    def forward(self, x):
        return (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)


class GcnZca(nn.Module):
    """Global contrast normalisation (float64), then ZCA whitening (float32),
    over each image's values in allcnnc's H x W x C order."""

    def __init__(self, shape, scale, sqrt_bias, min_divisor):
        super().__init__()
        c, h, w = shape
        self.shape = (c, h, w)
        self.scale, self.sqrt_bias, self.min_divisor = scale, sqrt_bias, min_divisor
        self.register_buffer("zca_mean", torch.zeros(c * h * w))
        self.register_buffer("zca_matrix", torch.zeros(c * h * w, c * h * w))

    def forward(self, x):
        c, h, w = self.shape
        n = x.shape[0]
        x = x.permute(0, 2, 3, 1).reshape(n, -1).double()
        mean = x.sum(dim=1, keepdim=True) / x.shape[1]
        centred = x - mean
        divisor = torch.sqrt(self.sqrt_bias + (centred * centred).sum(dim=1, keepdim=True)) / self.scale
        divisor = torch.where(divisor < self.min_divisor, torch.ones_like(divisor), divisor)
        x = (centred / divisor).float()
        x = (x - self.zca_mean) @ self.zca_matrix
        return x.reshape(n, h, w, c).permute(0, 3, 1, 2)


def _axis(size, out, kernel, stride, before, after):
    """One axis of a pooling layer with the plan's output size `out`: the
    trailing padding its windows reach, which windows hold no input element,
    and how many elements of each lie inside the padded input (Caffe)."""
    reach = (out - 1) * stride + kernel
    trailing = max(reach - before - size, 0)
    starts = [o * stride for o in range(out)]
    empty = [s + kernel <= before or s >= before + size for s in starts]
    count = [min(s + kernel, before + size + after) - s for s in starts]
    return trailing, empty, count


class _CaffePool(nn.Module):
    """A pooling layer's windows with the plan's output size rather than
    PyTorch's `ceil_mode`: `self.pad` reaches every window, `self.empty`
    and `self.count` (rows by columns) describe each."""

    def __init__(self, kernel, stride, pads, in_size, out_size):
        super().__init__()
        top, left, bottom, right = pads
        trail_h, empty_h, count_h = _axis(in_size[0], out_size[0], kernel[0], stride[0], top, bottom)
        trail_w, empty_w, count_w = _axis(in_size[1], out_size[1], kernel[1], stride[1], left, right)
        self.kernel, self.stride = kernel, stride
        self.pad = (left, trail_w, top, trail_h)
        self.empty = [[eh or ew for ew in empty_w] for eh in empty_h]
        self.count = [[ch * cw for cw in count_w] for ch in count_h]


class CaffeMaxPool(_CaffePool):
    """Max pooling over the part of each window inside the input; a window
    with no input element gives 0."""

    def __init__(self, *args):
        super().__init__(*args)
        empty = torch.tensor(self.empty)
        self.register_buffer("empty_windows", empty.view(1, 1, *empty.shape), persistent=False)

    def forward(self, x):
        x = F.pad(x, self.pad, value=float("-inf"))
        return F.max_pool2d(x, self.kernel, self.stride).masked_fill(self.empty_windows, 0.0)


class CaffeAvgPool(_CaffePool):
    """Average pooling dividing by the number of window elements inside the
    padded input (Caffe)."""

    def __init__(self, *args):
        super().__init__(*args)
        # allcnnc multiplies each sum by the float32 reciprocal of its count.
        count = torch.tensor(self.count, dtype=torch.float32)
        scale = torch.where(count > 0, 1.0 / count, torch.zeros_like(count))
        self.register_buffer("scale", scale.view(1, 1, *scale.shape), persistent=False)

    def forward(self, x):
        x = F.pad(x, self.pad)
        return F.avg_pool2d(x, self.kernel, self.stride, divisor_override=1) * self.scale


def read_safetensors(path):
    """The float32 tensors of a safetensors file, by name (no dependency
    beyond torch: an 8-byte little-endian header length, a JSON header, the
    data)."""
    data = Path(path).read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: tensor {name} is {info['dtype']}, expected F32")
        begin, end = info["data_offsets"]
        raw = bytearray(data[8 + length + begin : 8 + length + end])
        tensors[name] = torch.frombuffer(raw, dtype=torch.float32).reshape(info["shape"]).clone()
    return tensors
