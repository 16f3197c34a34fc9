"""QuantConv1dSiLU's launcher and kernel, compiled for the CPU and run thread after thread against a
plain reference of docs/ops.md (host_emulation/conv_harness.cpp). Needs g++ only, so it runs where no
GPU is.

A copy of trt_plugins/kernels is patched in three places: the <<<>>> launch becomes a loop over the
grid, the ex2.approx / rcp.approx inline PTX becomes an emulation at the documented error bounds
(errors pushed to the bounds, and none), and counters are added on the rare path. Everything else
(the launcher's checks and slicing, the window, the estimate and its tie test, the exact sequence)
is the product source. x, B, C and conv_state_out must equal the reference bit for bit. Says nothing
about memory ordering, speed or the real MUFU results: the GPU suite (test_kernels_gpu.py) and
compute-sanitizer do that."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent / "host_emulation"

PATCHES = [
    ("quantConv1dSiLUKernel.cu", r"(quant_conv1d_silu_kernel<VEC, K, kFloatIn>)<<<(.*?)>>>\(a\);",
     r"emulate_launch(\1, \2, a);"),
    ("quantConv1dSiLUKernel.cu", r"  if \(near\) \{", "  ++g_steps;\n  if (near) {\n    ++g_slow_steps;"),
    ("convMath.cuh", r'asm\("ex2\.approx\.ftz\.f32 %0, %1;" : "=f"\(y\) : "f"\(x\)\);', "y = emu_ex2(x);"),
    ("convMath.cuh", r'asm\("rcp\.approx\.ftz\.f32 %0, %1;" : "=f"\(y\) : "f"\(x\)\);', "y = emu_rcp(x);"),
    ("convMath.cuh", r"(static __device__ __noinline__ int8_t silu_quantize_exact\(float v, float s\) \{)",
     r"\1\n  ++g_exact_calls;"),
]


def _patched_sources(dst: Path) -> None:
    shutil.copytree(ROOT / "trt_plugins" / "kernels", dst)
    shutil.copy(ROOT / "trt_plugins" / "include" / "qmamba_kernels.h", dst / "qmamba_kernels.h")
    for name, pattern, repl in PATCHES:
        text = (dst / name).read_text()
        text, n = re.subn(pattern, repl, text, count=1)
        assert n == 1, f"{name}: the source no longer has {pattern!r}; update the emulation patches"
        (dst / name).write_text(text)


@pytest.mark.slow
def test_conv_kernel_host_emulation(tmp_path):
    if shutil.which("g++") is None:
        pytest.skip("g++ not found")
    gen = tmp_path / "gen"
    _patched_sources(gen)
    flags = ["-std=c++17", "-O2", "-ffp-contract=off", "-fno-fast-math", "-I", str(HERE), "-I", str(gen)]
    emu = flags + ["-include", str(HERE / "device_shim.h")]
    steps = [["g++", *emu, "-x", "c++", str(gen / "quantConv1dSiLUKernel.cu"), "-c", "-o", str(tmp_path / "k.o")],
             ["g++", *flags, "-x", "c++", str(gen / "checks.cu"), "-c", "-o", str(tmp_path / "checks.o")],
             ["g++", *emu, str(HERE / "conv_harness.cpp"), str(tmp_path / "k.o"), str(tmp_path / "checks.o"),
              "-o", str(tmp_path / "harness")]]
    for cmd in steps:
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, f"{' '.join(cmd[-4:])}:\n{r.stderr[-4000:]}"
    r = subprocess.run([str(tmp_path / "harness")], capture_output=True, text=True, timeout=600)
    print(r.stdout[-2000:])
    assert r.returncode == 0 and "passed: 0 failures" in r.stdout, r.stdout[-4000:] + r.stderr[-2000:]
