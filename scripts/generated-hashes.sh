#!/usr/bin/env bash
# Prints the SHA-256 of every file `allcnnc compile` writes (CUDA source,
# device plan, runtime plan, IR, summary) for every bundled model in every
# precision: a refactoring that must not change the generated code compares
# this output before and after.
#
# Usage: scripts/generated-hashes.sh [ALLCNNC_BINARY]   (default: target/release/allcnnc)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/allcnnc}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for model in models/*.net; do
    name=$(basename "$model" .net)
    for precision in fp32 tf32 bf16; do
        dir="$out/$name-$precision"
        "$bin" compile "$model" -o "$dir" --precision "$precision" >/dev/null 2>&1
        (cd "$dir" && find . -type f | sort | xargs sha256sum | sed "s|  ./|  $name-$precision/|")
    done
done
