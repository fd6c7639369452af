#!/usr/bin/env bash
# All-CNN-C throughput on the CPU: allcnnc beside PyTorch, in the same run.
# Creates .venv with PyTorch (from PyPI) on first use. Prints the ratios and
# writes bench/results/cpu-<date>.json.
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
ours=$(./target/release/allcnnc bench models/all-cnn-c.net --batch "$batch" --device cpu --steps "$steps" --json)
theirs=$(.venv/bin/python bench/pytorch_allcnnc.py --batch "$batch" --steps "$steps" --configs nchw,channels_last)
# Run ours again after PyTorch so machine-load drift shows up in the spread.
ours2=$(./target/release/allcnnc bench models/all-cnn-c.net --batch "$batch" --device cpu --steps "$steps" --json)
python3 - "$out" "$cpu" "$(nproc)" "$ours" "$ours2" "$theirs" <<'PY'
import json, sys
out, cpu, cores, ours, ours2, theirs = sys.argv[1:]
ours = [json.loads(ours), json.loads(ours2)]
theirs = [json.loads(l) for l in theirs.splitlines() if l.strip()]
best = {k: max(o[k] for o in ours) for k in ("train_images_per_s", "infer_images_per_s")}
report = {"cpu": cpu, "cores": int(cores), "allcnnc": ours, "pytorch": theirs, "ratios": {}}
print(f"All-CNN-C, batch {ours[0]['batch']}, {cpu}, {cores} cores")
print(f"  allcnnc:            train {best['train_images_per_s']:7.1f} img/s   infer {best['infer_images_per_s']:7.1f} img/s")
for t in theirs:
    print(f"  pytorch {t['config']:<14} train {t['train_images_per_s']:7.1f} img/s   infer {t['infer_images_per_s']:7.1f} img/s  (torch {t['torch']}, {t['threads']} threads)")
for kind in ("train", "infer"):
    key = f"{kind}_images_per_s"
    peer = max(theirs, key=lambda t: t[key])
    ratio = best[key] / peer[key]
    report["ratios"][kind] = {"vs": peer["config"], "ratio": ratio}
    print(f"  {kind}: allcnnc / pytorch best ({peer['config']}) = {ratio:.2f}x")
json.dump(report, open(out, "w"), indent=2)
print(f"wrote {out}")
PY
