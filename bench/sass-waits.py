#!/usr/bin/env python3
"""Whether a tensor-core K loop's global loads stay in flight across its mma.

Disassembles a generated module's cubin (`allcnnc compile MODEL --verify
--precision tf32|bf16 -o DIR` writes DIR/NAME.cubin, sm_90 by default) with
nvdisasm and, per kernel with tensor-core instructions (HMMA), looks at the
K loop's gathering pass: the instructions from the barrier that publishes a
step's tiles to the step's first HMMA. It counts the global loads issued
there (LDG) and the instructions there that read a register one of those
loads writes. Each such instruction makes the warp wait for that load (a
global memory latency) before it reaches its HMMAs, which is what the
two-deep K loop (`pipelined_k_steps` in the prelude) is meant to avoid: 0
means the loads overlap the step's multiplications.

A static reading of the SASS, not a timing: it shows where a warp must
wait, not for how long. The analysis is a heuristic over one straight-line
region per kernel (the gathering pass before the first HMMA).

Needs nvdisasm, which PyPI ships as `nvidia-cuda-nvdisasm` (13.2 or later
disassembles the sm_90 cubins NVRTC 13.0 writes):

    python3 -m pip install --target .nvdisasm nvidia-cuda-nvdisasm==13.2.86
    python3 bench/sass-waits.py DIR/NAME.cubin [--nvdisasm PATH]
"""

import argparse
import os
import re
import subprocess
import sys


def kernels(sass):
    """Kernel name -> its instructions (text without the address)."""
    out, name = {}, None
    for line in sass.splitlines():
        m = re.match(r"\s*\.text\.(\w+):", line)
        if m:
            name = m.group(1)
            out[name] = []
            continue
        m = re.search(r"/\*[0-9a-f]{4,}\*/\s+(.*?)\s*;", line)
        if name and m:
            out[name].append(m.group(1))
    return out


def opcode(ins):
    parts = ins.split()
    return parts[1] if parts[0].startswith("@") else parts[0]


def waits(ins):
    """(loads, dependent instructions) in the region barrier .. first HMMA."""
    first = next((i for i, s in enumerate(ins) if "HMMA" in s), None)
    if first is None:
        return None
    bars = [i for i, s in enumerate(ins[:first]) if "BAR.SYNC" in s]
    if not bars:
        return None
    pending, loads, dependent = set(), 0, 0
    for s in ins[bars[-1]:first]:
        op = opcode(s)
        regs = [int(r) for r in re.findall(r"\bR(\d+)\b", s)]
        if op.startswith("LDG"):
            loads += 1
            width = 4 if ".128" in op else 2 if ".64" in op else 1
            pending.update(range(regs[0], regs[0] + width))
            continue
        # Instructions that write a register list it first; the rest read.
        writes_first = not op.startswith(("ST", "BRA", "ISETP", "FSETP", "BAR", "BSYNC", "BSSY"))
        sources = regs[1:] if writes_first else regs
        if any(r in pending for r in sources):
            dependent += 1
    return loads, dependent


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cubin", help="a generated module's cubin (compile --verify)")
    parser.add_argument("--nvdisasm", default=".nvdisasm/nvidia/cu13/bin/nvdisasm")
    args = parser.parse_args()
    if not os.path.exists(args.nvdisasm):
        sys.exit(f"no nvdisasm at {args.nvdisasm}: see this script's doc for how to install it")
    sass = subprocess.run([args.nvdisasm, "-c", args.cubin], check=True, capture_output=True, text=True).stdout
    print(f"{'kernel':28} {'loads':>5} {'waiting':>7}  (K loop's gathering pass, barrier to first HMMA)")
    for name, ins in kernels(sass).items():
        counted = waits(ins)
        if counted:
            print(f"{name:28} {counted[0]:5} {counted[1]:7}")


if __name__ == "__main__":
    main()
