#!/usr/bin/env bash
# The CUDA backend on a GPU machine (H100, CUDA 13.0 with NVRTC, PyTorch
# 2.11 cu130): builds, runs the GPU tests, benchmarks allcnnc against
# PyTorch on All-CNN-C at batch 128 and 256, and runs a short CIFAR-10
# time-to-accuracy training. Writes every log and results.json to OUT_DIR.
# Each step has its own time limit; the whole run stays under ~9 minutes.
#
#   scripts/device-check.sh OUT_DIR
#   scripts/device-check.sh --prepare-data   # on the machine without a GPU:
#       makes data/cifar10-subset (1000 train + 200 test images per class,
#       ~50 MB, git-ignored) from data/cifar10-jpeg, small enough to carry.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare-data" ]; then
    src=${CIFAR_SOURCE:-data/cifar10-jpeg}
    dst=data/cifar10-subset
    rm -rf "$dst"
    for split_count in train:1000 test:200; do
        split=${split_count%%:*}
        count=${split_count##*:}
        for class_dir in "$src/$split"/*/; do
            class=$(basename "$class_dir")
            mkdir -p "$dst/$split/$class"
            find "$class_dir" -maxdepth 1 -type f | sort | head -n "$count" |
                xargs -I{} cp {} "$dst/$split/$class/"
        done
    done
    du -sh "$dst"
    exit 0
fi

out=${1:?usage: scripts/device-check.sh OUT_DIR | --prepare-data}
mkdir -p "$out"
out=$(cd "$out" && pwd)
data=${CIFAR:-data/cifar10-subset}
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$out/steps.log"; }
status() { echo "$1 $2" >> "$out/status.txt"; }
: > "$out/status.txt"

# NVRTC and the driver from the CUDA installation.
for dir in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$dir" ] && export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
export ALLCNNC_CACHE_DIR="$out/cache"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
python3 -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))" \
    > "$out/torch-version.txt" 2>&1 || true

log "build (release)"
timeout 240 cargo build --release --bin allcnnc --tests > "$out/build.log" 2>&1
status build $?

log "GPU tests (the cuda instances of tests/cuda_backend.rs, NVRTC compile of every model)"
timeout 120 cargo test --release --test cuda_backend -- ::cuda --nocapture > "$out/gpu-tests.log" 2>&1
status gpu-tests $?
timeout 90 cargo test --release --test cuda_codegen -- every_model_compiles_with_nvrtc --nocapture \
    > "$out/nvrtc-models.log" 2>&1
status nvrtc-models $?
timeout 60 ./target/release/allcnnc compile models/all-cnn-c.net -o "$out/build-all-cnn-c" --report --verify \
    > "$out/compile-report.txt" 2>&1
status compile-report $?

for batch in 128 256; do
    for precision in fp32 tf32 bf16; do
        log "allcnnc bench, batch $batch, $precision"
        timeout 60 ./target/release/allcnnc bench models/all-cnn-c.net --device cuda --batch "$batch" \
            --precision "$precision" --steps 20 --json \
            > "$out/allcnnc-$batch-$precision.json" 2> "$out/allcnnc-$batch-$precision.log"
        status "allcnnc-$batch-$precision" $?
    done
    log "PyTorch bench, batch $batch (eager fp32, eager AMP bf16 channels-last, torch.compile)"
    timeout 150 python3 bench/pytorch_allcnnc.py --device cuda --batch "$batch" --steps 20 \
        --configs nchw,amp_bf16_channels_last,compile > "$out/pytorch-$batch.jsonl" 2> "$out/pytorch-$batch.log"
    status "pytorch-$batch" $?
done

if [ -d "$data/train" ]; then
    log "time to accuracy: All-CNN-C on $data, 3 epochs"
    timeout 150 ./target/release/allcnnc train models/all-cnn-c.net --data "$data" --out "$out/tta" \
        --epochs 3 --batch 128 --lr 0.03 --device cuda > "$out/tta.log" 2>&1
    status tta $?
else
    log "no CIFAR-10 at $data: time to accuracy skipped (scripts/device-check.sh --prepare-data)"
    status tta skipped
fi

log "results"
python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]

def load(path, lines=False):
    try:
        text = open(os.path.join(out, path)).read()
        return [json.loads(l) for l in text.splitlines() if l.strip()] if lines else json.loads(text)
    except Exception as err:
        return None

results = {"status": dict(l.split(" ", 1) for l in open(os.path.join(out, "status.txt")).read().splitlines()),
           "bench": {}, "ratios": {}}
# Forward convolutions only differ between our precisions (gradients are fp32).
# PyTorch's eager fp32 convolutions use TF32 on an H100 by default
# (torch.backends.cudnn.allow_tf32), so every pair is printed and the
# closing note compares like with like.
for batch in (128, 256):
    theirs = load(f"pytorch-{batch}.jsonl", lines=True) or []
    results["bench"][batch] = {"pytorch": theirs}
    for precision in ("fp32", "tf32", "bf16"):
        ours = load(f"allcnnc-{batch}-{precision}.json")
        results["bench"][batch][f"allcnnc_{precision}"] = ours
        if not ours:
            continue
        print(f"batch {batch}: allcnnc {precision} train {ours['train_images_per_s']:.0f} img/s"
              f" ({ours['train_gflops'] / 1000:.1f} TFLOP/s), infer {ours['infer_images_per_s']:.0f} img/s"
              f" ({ours['infer_gflops'] / 1000:.1f} TFLOP/s)")
        for t in theirs:
            ratio_train = ours["train_images_per_s"] / t["train_images_per_s"]
            ratio_infer = ours["infer_images_per_s"] / t["infer_images_per_s"]
            results["ratios"][f"{batch}/{precision}/{t['config']}"] = {"train": ratio_train, "infer": ratio_infer}
            print(f"  vs pytorch {t['config']:<24} train {t['train_images_per_s']:8.0f} img/s ratio {ratio_train:.2f}x"
                  f"   infer {t['infer_images_per_s']:8.0f} img/s ratio {ratio_infer:.2f}x")
metrics = []
try:
    metrics = [json.loads(l) for l in open(os.path.join(out, "tta", "metrics.jsonl")) if l.strip()]
except Exception:
    pass
results["time_to_accuracy"] = metrics
for m in metrics:
    print(f"  epoch {m.get('epoch')}: test accuracy {100 * m.get('test_accuracy', 0):.2f}%"
          f" after {m.get('seconds', 0):.1f}s")
json.dump(results, open(os.path.join(out, "results.json"), "w"), indent=2)
print(f"wrote {out}/results.json")
PY
cat "$out/status.txt"
