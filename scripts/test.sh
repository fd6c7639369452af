#!/usr/bin/env bash
# The tests, as the README runs them on a fresh machine: installs what they
# need, runs the whole workspace's tests, and closes with one summary line
# (passed, failed, skipped) and every skipped test by name with its reason.
#
# What it sets up:
# - Debian packages: dataset-fashion-mnist (the end-to-end tests train on it),
#   fonts-dejavu-core (labels of figures and curves), g++ (the emulator
#   builds the generated CUDA kernels for host threads); installed with
#   apt-get when missing (needs root; otherwise it stops and says what to
#   install);
# - NVRTC 13.0 and the CUDA headers from PyPI into .nvrtc/
#   (scripts/install-nvrtc.sh), for the tests that compile the generated
#   CUDA for sm_90;
# - the real CIFAR-10 images, unpacked into data/cifar10-jpeg/ from the
#   archive beside the repository (../shared/data/cifar10-jpeg/) when there
#   is one.
#
# The only skips left on a machine set up this way are the tests that need
# a GPU (their `::cuda` instances) when there is none. Extra arguments go to
# `cargo test` (e.g. `scripts/test.sh --test full_size`).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(dataset-fashion-mnist fonts-dejavu-core g++)
missing=()
for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "scripts/test.sh: the tests need ${missing[*]}: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
    echo "installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

eval "$(scripts/install-nvrtc.sh)"

archive=../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz
if [ ! -d data/cifar10-jpeg/train ] && [ -f "$archive" ]; then
    echo "unpacking $archive into data/cifar10-jpeg" >&2
    mkdir -p data/cifar10-jpeg.partial
    tar -xzf "$archive" -C data/cifar10-jpeg.partial
    mv data/cifar10-jpeg.partial data/cifar10-jpeg
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export ALLCNNC_SKIP_LOG="$work/skips"
: >"$ALLCNNC_SKIP_LOG"
started=$(date +%s)
set +e
cargo test --workspace --release --no-fail-fast "$@" 2>&1 | tee "$work/log"
status=${PIPESTATUS[0]}
set -e

# libtest counts a skipped test as passed: take the skips out of the passes.
sum() { grep -E '^test result:' "$work/log" | sed -E "s/.* ([0-9]+) $1.*/\\1/" | awk '{ s += $1 } END { print s + 0 }'; }
passed=$(sum passed)
failed=$(sum failed)
ignored=$(sum ignored)
sort -u "$ALLCNNC_SKIP_LOG" >"$work/skipped"
skipped=$(wc -l <"$work/skipped")
echo
if [ "$skipped" -gt 0 ]; then
    echo "skipped tests (named, with the reason):"
    sed 's/^/  /' "$work/skipped"
fi
if [ "$ignored" -gt 0 ]; then
    echo "$ignored ignored: timing runs started by hand (--ignored)"
fi
echo "took $(( $(date +%s) - started )) s"
echo "tests: $((passed - skipped)) passed, $failed failed, $skipped skipped"
exit "$status"
