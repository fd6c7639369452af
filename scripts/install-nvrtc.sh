#!/usr/bin/env bash
# Installs NVIDIA's NVRTC 13.0 (runtime compiler) and the CUDA headers from
# PyPI wheels into .nvrtc/ (git-ignored), so that `allcnnc compile --verify`
# and the NVRTC tests can compile the generated CUDA on a machine without a
# GPU or a CUDA installation.
#
# Pinned to 13.0.x: the GPU machines run driver 580 (CUDA 13.0), which JITs
# PTX ISA up to 9.0; newer NVRTC wheels emit newer PTX that it refuses.
#
# Usage: source it (or eval its output) to get the environment:
#   eval "$(scripts/install-nvrtc.sh)"
# It prints `export` lines for LD_LIBRARY_PATH and ALLCNNC_CUDA_INCLUDE on
# stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

dir="$PWD/.nvrtc"
lib="$dir/nvidia/cu13/lib"
include="$dir/nvidia/cu13/include"

if [ ! -e "$lib/libnvrtc.so.13" ]; then
    echo "installing NVRTC 13.0 into $dir" >&2
    python3 -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$dir" nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.96 >&2
    # The alternative builds are unused and large.
    rm -f "$lib"/*.alt.so*
fi
# cudarc opens `libnvrtc.so` before `libnvrtc.so.13`.
ln -sf libnvrtc.so.13 "$lib/libnvrtc.so"

echo "export LD_LIBRARY_PATH=\"$lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
echo "export ALLCNNC_CUDA_INCLUDE=\"$include\""
