"""Builds a kernel source of trt_plugins/kernels for the CPU with a host thread per CUDA thread
(host_emulation/thread_shim.h), for the host emulation tests of the kernels whose threads talk to each other."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent / "host_emulation"


def thread_harness(tmp: Path, source: str, patches: list[tuple[str, str]], harness: str,
                   stand_ins: dict[str, str] | None = None, more_sources: tuple[str, ...] = ()) -> Path:
    """The executable of host_emulation/<harness> linked with a copy of trt_plugins/kernels/<source> (each
    pattern of ``patches`` replaced once: launch.cuh's programmatic dependent launch by no-ops, the launch by
    emulate_threads, the dynamic shared memory by a host buffer), checks.cu and the kernel sources named in
    ``more_sources``. ``stand_ins`` maps a header of the copy to the host_emulation file that replaces it
    (tensorCore.cuh's inline PTX). Skips without g++."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not found")
    gen = tmp / "gen"
    shutil.copytree(ROOT / "trt_plugins" / "kernels", gen)
    shutil.copy(ROOT / "trt_plugins" / "include" / "qmamba_kernels.h", gen / "qmamba_kernels.h")
    for header, stand_in in (stand_ins or {}).items():
        shutil.copy(HERE / stand_in, gen / header)
    text = (gen / source).read_text()
    for pattern, repl in patches:
        text, n = re.subn(pattern, repl, text, count=1)
        assert n == 1, f"{source} no longer has {pattern!r}; update the emulation patches"
    (gen / source).write_text(text)
    flags = ["-std=c++20", "-O1", "-ffp-contract=off", "-fno-fast-math", "-pthread", "-I", str(HERE), "-I", str(gen),
             "-include", str(HERE / "thread_shim.h")]
    cmd = ["g++", *flags, "-x", "c++", str(gen / source), "-x", "c++", str(gen / "checks.cu"),
           *[str(gen / extra) for extra in more_sources], "-x", "c++", str(HERE / harness), "-o", str(tmp / "harness")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    return tmp / "harness"
