#!/usr/bin/env bash
# The CUDA backend on a GPU machine (target: H100, CUDA 13.0, PyTorch 2.11
# cu130): the GPU tests, All-CNN-C throughput beside PyTorch at batch 128 and
# 256, and a CIFAR-10 time-to-accuracy run. Everything it writes goes to
# OUT_DIR; results.json, summary.txt and summary.md (tables) hold the figures.
#
# The GPU machine has no Rust toolchain and no network, so the binaries are
# built here and travel with the checkout:
#
#   scripts/device-check.sh --prepare
#       (here) builds allcnnc and the cuda_backend test executable in release
#       mode, strips them into device-kit/ (git-ignored, ~11 MB) and copies
#       the CIFAR-10 JPEG archive beside them (19 MB; from $CIFAR_TARBALL,
#       else ../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz).
#   scripts/device-check.sh OUT_DIR [--archive FILE.tar.gz]
#       (there) runs the checks with the kit's binaries (or builds them when
#       cargo is there and the kit is not). --archive packs OUT_DIR into one
#       file and copies summary.txt, results.json and status.txt beside it,
#       for a transport that returns few files.
#
# Exit status 0 when every step that ran succeeded. CI rehearses the
# plumbing on its CPU (DEVICE=cpu, see .ci/run).
#
# With the device tool: carry ["device-kit"] and run
#   scripts/device-check.sh /tmp/dc --archive $OUT/device-check.tar.gz
#
# The run keeps to a budget (BUDGET_S, default 540 s): each step's time limit
# is cut to what is left. Order: GPU tests, compile report, allcnnc benches,
# PyTorch eager benches, time to accuracy (TTA_S, default 150 s),
# torch.compile, compute-sanitizer.
# ONLY=tests,report,bench,pytorch,compile,sanitize,tta runs a subset (for a
# rerun).
# TTA_PRECISION=fp32|tf32|bf16 fixes the training precision (default: the
# fastest measured at batch 128). STEPS: timed steps per bench (default 50).
# To rehearse the plumbing on a machine without a GPU: DEVICE=cpu (benches
# and training on the CPU) and TTA_ARGS (extra train flags, e.g.
# "--limit 2000 --test-limit 500").
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
kit=$root/device-kit

build_kit() {
    echo "building the device kit in $kit" >&2
    cargo build --release --bin allcnnc >&2 || return 1
    local exe
    exe=$(cargo test --release --test cuda_backend --no-run --message-format=json 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cuda_backend":
        print(m["executable"])
') || return 1
    [ -n "$exe" ] || { echo "no cuda_backend test executable found" >&2; return 1; }
    rm -rf "$kit/bin"
    mkdir -p "$kit/bin"
    cp target/release/allcnnc "$kit/bin/allcnnc"
    cp "$exe" "$kit/bin/cuda_backend"
    strip "$kit/bin/allcnnc" "$kit/bin/cuda_backend"
    {
        git rev-parse HEAD 2>/dev/null || echo "no git"
        git status --porcelain --untracked-files=no 2>/dev/null | sed 's/^/modified: /'
        date -u +"built %Y-%m-%dT%H:%M:%SZ"
    } > "$kit/commit.txt"
}

if [ "${1:-}" = "--prepare" ]; then
    build_kit || exit 1
    tarball=${CIFAR_TARBALL:-../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz}
    if [ -f "$tarball" ]; then
        cp "$tarball" "$kit/cifar10-jpeg.tar.gz"
    elif [ -d data/cifar10-jpeg/train ]; then
        tar czf "$kit/cifar10-jpeg.tar.gz" -C data/cifar10-jpeg train test
    else
        echo "no CIFAR-10 archive ($tarball) or data/cifar10-jpeg: the kit has no data" >&2
    fi
    du -sh "$kit"/* >&2
    exit 0
fi

out=${1:?usage: scripts/device-check.sh --prepare | OUT_DIR [--archive FILE.tar.gz]}
archive=
if [ "${2:-}" = "--archive" ]; then
    archive=${3:?--archive needs a file name}
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
: > "$out/status.txt"
: > "$out/steps.log"
start=$(date +%s)
budget=${BUDGET_S:-540}
device=${DEVICE:-cuda}
steps=${STEPS:-50}

log() { echo "[$(date -u +%H:%M:%S) +$(($(date +%s) - start))s] $*" | tee -a "$out/steps.log"; }
status() { echo "$1 $2" >> "$out/status.txt"; }
left() { echo $((budget - ($(date +%s) - start))); }
wanted() { [ -z "${ONLY:-}" ] || [[ ",$ONLY," == *",$1,"* ]]; }
# limit WANT: WANT seconds, or what is left of the budget if less.
limit() {
    local l
    l=$(left)
    [ "$l" -lt "$1" ] && echo "$l" || echo "$1"
}
# room NAME MIN: whether at least MIN seconds are left; records a skip if not.
room() {
    if [ "$(left)" -lt "$2" ]; then
        log "$1 skipped: $(left) s of the budget left"
        status "$1" skipped-time
        return 1
    fi
}

finish() {
    if [ -n "$archive" ]; then
        mkdir -p "$(dirname "$archive")"
        tar czf "$archive" -C "$(dirname "$out")" --exclude=cache --exclude='*.safetensors' \
            "$(basename "$out")" 2>/dev/null
        for f in summary.txt summary.md results.json status.txt; do
            [ -f "$out/$f" ] && cp "$out/$f" "$(dirname "$archive")/"
        done
    fi
}
trap finish EXIT

# The driver and NVRTC from the CUDA installation (cudarc loads them at run
# time); NVRTC from PyTorch's wheels as a fallback.
for dir in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$dir" ] && export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
nvrtc_wheel=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null)
[ -n "$nvrtc_wheel" ] && [ -d "$nvrtc_wheel" ] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$nvrtc_wheel"
export ALLCNNC_CACHE_DIR="$out/cache"
export RUST_BACKTRACE=1

nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$out/gpu.txt" 2>&1 || true
python3 -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))" \
    > "$out/torch-version.txt" 2> "$out/torch-version.err" || true
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}" > "$out/environment.txt"

if [ ! -x "$kit/bin/allcnnc" ]; then
    if command -v cargo > /dev/null; then
        log "no device kit: building it (cargo)"
        build_kit > "$out/build.log" 2>&1
        status build $?
    else
        log "no device kit and no cargo: run scripts/device-check.sh --prepare first and carry device-kit"
        status build missing-kit
        exit 2
    fi
fi
cp "$kit/commit.txt" "$out/kit-commit.txt" 2>/dev/null
allcnnc=$kit/bin/allcnnc

data=${CIFAR:-}
if [ -z "$data" ]; then
    if [ -f "$kit/cifar10-jpeg.tar.gz" ]; then
        data=${TMPDIR:-/tmp}/allcnnc-cifar10-jpeg
        if [ ! -d "$data/test" ]; then
            mkdir -p "$data"
            tar xzf "$kit/cifar10-jpeg.tar.gz" -C "$data"
        fi
    else
        data=data/cifar10-jpeg
    fi
fi

if wanted tests && room gpu-tests 30; then
    log "GPU tests: the cuda instances of tests/cuda_backend.rs"
    timeout "$(limit 150)" "$kit/bin/cuda_backend" ::cuda --nocapture > "$out/gpu-tests.log" 2>&1
    status gpu-tests $?
fi

if wanted report && room compile-report 20; then
    log "compile --report --verify (NVRTC of this machine)"
    timeout "$(limit 60)" "$allcnnc" compile models/all-cnn-c.net -o "$out/build-all-cnn-c" --report --verify \
        > "$out/compile-report.txt" 2>&1
    status compile-report $?
fi

if wanted bench; then
    # TF32 is a tensor-core format: the CPU runs fp32, and bf16 where it has
    # AVX512-BF16.
    precisions="fp32 tf32 bf16"
    if [ "$device" = cpu ]; then
        precisions=fp32
        grep -qw avx512_bf16 /proc/cpuinfo && precisions="fp32 bf16"
    fi
    for batch in 128 256; do
        for precision in $precisions; do
            room "allcnnc-$batch-$precision" 20 || continue
            log "allcnnc bench, batch $batch, $precision"
            timeout "$(limit 60)" "$allcnnc" bench models/all-cnn-c.net --device "$device" --batch "$batch" \
                --precision "$precision" --steps "$steps" --profile --json \
                > "$out/allcnnc-$batch-$precision.json" 2> "$out/allcnnc-$batch-$precision.log"
            status "allcnnc-$batch-$precision" $?
        done
    done
fi

# PyTorch: strict fp32 (TF32 off), its default (TF32 convolutions on an
# H100), AMP bf16 channels-last; torch.compile separately (it compiles for
# a minute or more per batch size).
pytorch() {
    local name=$1 configs=$2 want=$3 batch
    for batch in 128 256; do
        room "$name-$batch" 30 || continue
        log "PyTorch $configs, batch $batch"
        timeout "$(limit "$want")" python3 bench/pytorch_allcnnc.py --device "$device" --batch "$batch" --steps "$steps" \
            --configs "$configs" > "$out/$name-$batch.jsonl" 2> "$out/$name-$batch.log"
        status "$name-$batch" $?
    done
}
wanted pytorch && pytorch pytorch fp32_strict,nchw,amp_bf16_channels_last 90

if wanted tta && room tta 60; then
    # Epochs that fit its share (TTA_S, default 150 s, or what is left): one
    # epoch is 50,000 training and 10,000 test images at the measured rates,
    # plus a setup allowance for decoding the JPEGs and fitting ZCA.
    tta_s=$(limit "${TTA_S:-150}")
    read -r precision epochs < <(python3 - "$out" "$((tta_s - 10))" "${TTA_PRECISION:-}" <<'PY'
import json, sys
out, seconds, fixed = sys.argv[1], float(sys.argv[2]), sys.argv[3]
best = None
for p in ("fp32", "tf32", "bf16"):
    try:
        r = json.load(open(f"{out}/allcnnc-128-{p}.json"))
    except Exception:
        continue
    if fixed and p != fixed:
        continue
    epoch = 50000 / r["train_images_per_s"] + 10000 / r["infer_images_per_s"] + 1.0
    if best is None or epoch < best[1]:
        best = (p, epoch)
p, epoch = best or (fixed or "fp32", 30.0)
print(p, max(1, min(60, int((seconds - 40) / (epoch * 1.15)))))
PY
)
    precision=${precision:-fp32}
    epochs=${epochs:-5}
    log "time to accuracy: All-CNN-C (models/all-cnn-c-short.net) on $data, $epochs epochs, $precision"
    echo "{\"precision\": \"$precision\", \"epochs\": $epochs, \"data\": \"$data\", \"extra_args\": \"${TTA_ARGS:-}\"}" \
        > "$out/tta-plan.json"
    tta_start=$(date +%s.%N)
    timeout -k 20 -s INT "$tta_s" "$allcnnc" train models/all-cnn-c-short.net --data "$data" \
        --out "$out/tta" --epochs "$epochs" --device "$device" --precision "$precision" --seed 1 \
        ${TTA_ARGS:-} > "$out/tta.log" 2>&1
    status tta $?
    python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$tta_start" \
        "$(date +%s.%N)" > "$out/tta-wall-seconds.txt"
fi

# torch.compile last but one: it compiles for a minute or more per batch size.
wanted compile && pytorch pytorch-compile compile 150

# Out-of-bounds and misaligned accesses that results alone may not show:
# the GPU tests (fewer random networks) under compute-sanitizer's memcheck,
# with what is left.
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
if wanted sanitize && [ -n "$sanitizer" ] && room sanitize 45; then
    log "compute-sanitizer memcheck on the GPU tests"
    PROPTEST_CASES=4 timeout "$(limit 90)" "$sanitizer" --tool memcheck --error-exitcode 3 \
        "$kit/bin/cuda_backend" ::cuda --test-threads 1 > "$out/sanitizer.log" 2>&1
    status sanitize $?
fi


log "results"
python3 - "$out" <<'PY' | tee "$out/summary.txt"
import json, os, sys
out = sys.argv[1]

def load(path, lines=False):
    try:
        text = open(os.path.join(out, path)).read()
        return [json.loads(l) for l in text.splitlines() if l.strip()] if lines else json.loads(text)
    except Exception:
        return None

def read(path):
    try:
        return open(os.path.join(out, path)).read().strip()
    except Exception:
        return None

status = dict(l.split(" ", 1) for l in open(os.path.join(out, "status.txt")).read().splitlines() if " " in l)
results = {"gpu": read("gpu.txt"), "torch": read("torch-version.txt"), "kit": read("kit-commit.txt"), "status": status,
           "bench": {}, "ratios": {}}
print("gpu:", results["gpu"])
print("torch:", results["torch"])
print("kit:", (results["kit"] or "").splitlines()[0] if results["kit"] else None)
for name in ("gpu-tests.log", "sanitizer.log"):
    lines = [l for l in (read(name) or "").splitlines()
             if l.startswith("test result") or "ERROR SUMMARY" in l or "FAILED" in l or "panicked" in l
             or "skipped" in l]
    results[name] = lines[:40]
    print(f"{name}: " + " | ".join(lines[:8]))
# Equal precision: our fp32 against PyTorch with TF32 off; our tf32 against
# PyTorch's default (cuDNN uses TF32 for convolutions on an H100) and
# torch.compile (same default); our bf16 against AMP bf16 channels-last.
equal = {"fp32": {"fp32_strict"}, "tf32": {"nchw", "compile"}, "bf16": {"amp_bf16_channels_last"}}
for batch in (128, 256):
    theirs = (load(f"pytorch-{batch}.jsonl", lines=True) or []) + \
             (load(f"pytorch-compile-{batch}.jsonl", lines=True) or [])
    results["bench"][batch] = {"pytorch": theirs}
    for t in theirs:
        print(f"batch {batch}: pytorch {t['config']:<24} train {t['train_images_per_s']:8.0f} img/s"
              f" ({t['train_gflops'] / 1000:.1f} TFLOP/s), infer {t['infer_images_per_s']:8.0f} img/s"
              f" ({t['infer_gflops'] / 1000:.1f} TFLOP/s)")
    for precision in ("fp32", "tf32", "bf16"):
        ours = load(f"allcnnc-{batch}-{precision}.json")
        results["bench"][batch][f"allcnnc_{precision}"] = ours
        if not ours:
            continue
        print(f"batch {batch}: allcnnc {precision:<22} train {ours['train_images_per_s']:8.0f} img/s"
              f" ({ours['train_gflops'] / 1000:.1f} TFLOP/s), infer {ours['infer_images_per_s']:8.0f} img/s"
              f" ({ours['infer_gflops'] / 1000:.1f} TFLOP/s)")
        for t in theirs:
            same = t["config"] in equal[precision]
            r = {"train": ours["train_images_per_s"] / t["train_images_per_s"],
                 "infer": ours["infer_images_per_s"] / t["infer_images_per_s"], "equal_precision": same}
            results["ratios"][f"{batch}/{precision}/{t['config']}"] = r
            print(f"    vs {t['config']:<24} train {r['train']:.2f}x  infer {r['infer']:.2f}x"
                  + ("   <- equal precision" if same else ""))
# Where the time goes: each kernel of one training step and one inference
# pass at batch 128, timed launch by launch (bench --profile).
for precision in ("fp32", "tf32", "bf16"):
    ours = load(f"allcnnc-128-{precision}.json") or {}
    kernels = ours.get("kernels") or []
    total = sum(k["seconds"] for k in kernels) or 1e-12
    if kernels:
        print(f"batch 128 {precision}: slowest kernels of {1e3 * total:.2f} ms (step + inference, synchronised):")
    for k in kernels[:8]:
        print(f"    {k['kernel']:<34} {1e3 * k['seconds']:8.3f} ms {100 * k['seconds'] / total:5.1f}%"
              f" {k['flops'] / max(k['seconds'], 1e-12) / 1e12:6.1f} TFLOP/s"
              f" {k['bytes'] / max(k['seconds'], 1e-12) / 1e9:7.1f} GB/s")
metrics = load("tta/metrics.jsonl", lines=True) or []
results["time_to_accuracy"] = {"plan": load("tta-plan.json"), "wall_seconds": read("tta-wall-seconds.txt"),
                               "epochs": metrics}
elapsed = 0.0
for m in metrics:
    elapsed += m.get("seconds", 0)
    print(f"tta epoch {m.get('epoch')}: test accuracy {100 * m.get('test_accuracy', 0):.2f}%"
          f" (train loss {m.get('train_loss', 0):.3f}), {elapsed:.1f} s of epochs")
if metrics:
    print(f"tta: {len(metrics)} epochs, wall {read('tta-wall-seconds.txt')} s (with data loading),"
          f" best test accuracy {100 * max(m.get('test_accuracy', 0) for m in metrics):.2f}%")
json.dump(results, open(os.path.join(out, "results.json"), "w"), indent=2)

# The same figures as a Markdown table, for bench/results/ and the README;
# each allcnnc row's ratios are against the faster (in training) PyTorch run
# of equal precision.
md = [f"GPU: {results['gpu']}; PyTorch: {results['torch']}; allcnnc: "
      f"{(results['kit'] or '').splitlines()[0] if results['kit'] else '?'}", "",
      "| batch | run | train img/s | train TFLOP/s | infer img/s | infer TFLOP/s | train ratio | infer ratio |",
      "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
for batch, runs in results["bench"].items():
    peers = {t["config"]: t for t in runs.get("pytorch", [])}
    for name, r in [(f"pytorch {c}", t) for c, t in peers.items()] + \
                   [(k.replace("_", " "), v) for k, v in runs.items() if k != "pytorch" and v]:
        ratio = ("", "")
        if name.startswith("allcnnc"):
            precision = name.split()[1]
            same = [peers[c] for c in sorted(equal[precision]) if c in peers]
            if same:
                best = max(same, key=lambda t: t["train_images_per_s"])
                ratio = (f"{r['train_images_per_s'] / best['train_images_per_s']:.2f}x vs {best['config']}",
                         f"{r['infer_images_per_s'] / best['infer_images_per_s']:.2f}x vs {best['config']}")
        md.append(f"| {batch} | {name} | {r['train_images_per_s']:.0f} | {r['train_gflops'] / 1000:.1f} | "
                  f"{r['infer_images_per_s']:.0f} | {r['infer_gflops'] / 1000:.1f} | {ratio[0]} | {ratio[1]} |")
if metrics:
    plan = results["time_to_accuracy"]["plan"] or {}
    best = max(metrics, key=lambda m: m.get("test_accuracy", 0))
    images = f"flags {plan['extra_args']}" if plan.get("extra_args") else "all 50,000 training images"
    md += ["", f"Time to accuracy (models/all-cnn-c-short.net, {plan.get('precision')}, {images}): "
           f"{len(metrics)} epochs, {read('tta-wall-seconds.txt')} s wall including data loading, "
           f"final test accuracy {100 * metrics[-1].get('test_accuracy', 0):.2f}%, best "
           f"{100 * best.get('test_accuracy', 0):.2f}% (epoch {best.get('epoch')})."]
open(os.path.join(out, "summary.md"), "w").write("\n".join(md) + "\n")
PY
log "done"
cat "$out/status.txt"
# Exit status: 1 when a step failed (skipped steps do not count).
! grep -qvE ' (0|skipped.*)$' "$out/status.txt"
