#!/usr/bin/env python3
"""Whether a tensor-core K loop's global loads stay in flight across its mma.

Compiles a generated module (`allcnnc compile MODEL --precision tf32|bf16 -o
DIR` writes DIR/NAME.cu) to an sm_90 cubin with NVRTC, disassembles it with
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

Needs NVRTC (`eval "$(scripts/install-nvrtc.sh)"`) and nvdisasm, which
PyPI ships as `nvidia-cuda-nvdisasm` (13.2 or later disassembles the sm_90
cubins NVRTC 13.0 writes):

    python3 -m pip install --target .nvdisasm nvidia-cuda-nvdisasm==13.2.86
    python3 bench/sass-waits.py DIR/NAME.cu [--nvdisasm PATH]
"""

import argparse
import ctypes
import os
import re
import subprocess
import sys
import tempfile


def cubin(source_path):
    lib_dir = next(
        (d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d and os.path.exists(os.path.join(d, "libnvrtc.so.13"))),
        None,
    )
    if lib_dir is None:
        sys.exit('libnvrtc.so.13 not on LD_LIBRARY_PATH: run eval "$(scripts/install-nvrtc.sh)" first')
    include = os.environ.get("ALLCNNC_CUDA_INCLUDE")
    if not include:
        sys.exit('ALLCNNC_CUDA_INCLUDE is not set: run eval "$(scripts/install-nvrtc.sh)" first')
    lib = ctypes.CDLL(os.path.join(lib_dir, "libnvrtc.so.13"))
    prog = ctypes.c_void_p()
    source = open(source_path, "rb").read()
    if lib.nvrtcCreateProgram(ctypes.byref(prog), source, b"module.cu", 0, None, None) != 0:
        sys.exit("nvrtcCreateProgram failed")
    # The options the runtime compiles with (runtime/src/cuda/nvrtc.rs).
    options = [b"--gpu-architecture=sm_90", b"--std=c++17", ("--include-path=" + include).encode()]
    array = (ctypes.c_char_p * len(options))(*options)
    status = lib.nvrtcCompileProgram(prog, len(options), array)
    size = ctypes.c_size_t()
    if status != 0:
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        sys.exit(log.value.decode(errors="replace"))
    lib.nvrtcGetCUBINSize(prog, ctypes.byref(size))
    data = ctypes.create_string_buffer(size.value)
    if lib.nvrtcGetCUBIN(prog, data) != 0:
        sys.exit("nvrtcGetCUBIN failed")
    return data.raw


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
    parser.add_argument("source", help="a generated module's .cu")
    parser.add_argument("--nvdisasm", default=".nvdisasm/nvidia/cu13/bin/nvdisasm")
    args = parser.parse_args()
    if not os.path.exists(args.nvdisasm):
        sys.exit(f"no nvdisasm at {args.nvdisasm}: see this script's doc for how to install it")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin(args.source))
        f.flush()
        sass = subprocess.run([args.nvdisasm, "-c", f.name], check=True, capture_output=True, text=True).stdout
    print(f"{'kernel':28} {'loads':>5} {'waiting':>7}  (K loop's gathering pass, barrier to first HMMA)")
    for name, ins in kernels(sass).items():
        counted = waits(ins)
        if counted:
            print(f"{name:28} {counted[0]:5} {counted[1]:7}")


if __name__ == "__main__":
    main()
