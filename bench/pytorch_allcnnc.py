"""All-CNN-C (Springenberg et al. 2015, Table 2) in PyTorch: the peer for
`allcnnc bench`. Times training steps (forward, backward, SGD momentum update)
and inference at a given batch size, fp32, in NCHW and channels-last layouts,
on the CPU (all cores) or, with --device cuda, on a GPU. Prints one JSON
object per configuration.

Configurations: `nchw` and `channels_last` (PyTorch's defaults: on a GPU,
cuDNN convolutions use TF32), `fp32_strict` (NCHW with TF32 off: true fp32),
`amp_bf16_channels_last` (autocast bf16) and `compile` (torch.compile of the
channels-last model, default precision). cuDNN autotuning is on for all, so
PyTorch runs its fastest algorithms.
"""
import argparse
import json
import time

import torch
import torch.nn as nn


def all_cnn_c(classes=10):
    def conv(cin, cout, k, stride=1, pad=None):
        pad = (k - 1) // 2 if pad is None else pad
        return [nn.Conv2d(cin, cout, k, stride, pad), nn.ReLU(inplace=True)]

    layers = [nn.Dropout(0.2)]
    layers += conv(3, 96, 3) + conv(96, 96, 3) + conv(96, 96, 3, 2)
    layers += [nn.Dropout(0.5)]
    layers += conv(96, 192, 3) + conv(192, 192, 3) + conv(192, 192, 3, 2)
    layers += [nn.Dropout(0.5)]
    layers += conv(192, 192, 3, pad=0) + conv(192, 192, 1) + conv(192, classes, 1)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


FORWARD_MACS = 0  # filled in by count_macs


def count_macs(model, shape):
    macs = 0
    x = torch.zeros(1, *shape)
    for layer in model:
        y = layer(x)
        if isinstance(layer, nn.Conv2d):
            k = layer.kernel_size[0] * layer.kernel_size[1] * layer.in_channels
            macs += y.numel() * k
        x = y
    return macs


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def bench(name, model, x, y, device, steps, amp=False):
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def train_step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    model.train()
    for _ in range(3):
        train_step()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        train_step()
    sync(device)
    train_s = (time.perf_counter() - t) / steps
    model.eval()
    with torch.no_grad(), torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp):
        for _ in range(3):
            model(x)
        sync(device)
        t = time.perf_counter()
        for _ in range(steps):
            model(x)
        sync(device)
    infer_s = (time.perf_counter() - t) / steps
    n = x.shape[0]
    return {
        "config": name,
        "batch": n,
        "train_images_per_s": n / train_s,
        "infer_images_per_s": n / infer_s,
        "train_gflops": 6 * FORWARD_MACS * n / train_s / 1e9,
        "infer_gflops": 2 * FORWARD_MACS * n / infer_s / 1e9,
    }


def main():
    global FORWARD_MACS
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--configs", default="nchw,channels_last")
    args = p.parse_args()
    torch.manual_seed(0)
    FORWARD_MACS = count_macs(all_cnn_c(), (3, 32, 32))
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    for config in args.configs.split(","):
        strict = config == "fp32_strict"
        torch.backends.cudnn.allow_tf32 = not strict
        model = all_cnn_c().to(args.device)
        x = torch.randn(args.batch, 3, 32, 32, device=args.device)
        y = torch.randint(0, 10, (args.batch,), device=args.device)
        amp = config == "amp_bf16_channels_last"
        if config in ("channels_last", "amp_bf16_channels_last", "compile"):
            model = model.to(memory_format=torch.channels_last)
            x = x.to(memory_format=torch.channels_last)
        if config == "compile":
            model = torch.compile(model)
        out = bench(config, model, x, y, args.device, args.steps, amp=amp)
        out["tf32_convolutions"] = args.device == "cuda" and not strict
        out["torch"] = torch.__version__
        out["threads"] = torch.get_num_threads()
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
