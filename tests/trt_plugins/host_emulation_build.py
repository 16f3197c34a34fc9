"""Builds a kernel source of trt_plugins/kernels for the CPU with a host thread per CUDA thread
(host_emulation/thread_shim.h), for the host emulation tests of the kernels whose threads talk to each other,
and runs the QuantSSD harnesses on a case (host_emulation/ssd_harness_io.h's format)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
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


SSD_INPUTS = ("x", "dt", "B", "C", "A_log", "D", "dt_bias", "x_out_scales", "B_out_scales", "C_out_scales",
              "x_head_group_range", "x_dim_group_range", "ssm_state_scale")


def run_ssd_harness(harness: Path, tmp: Path, t: dict, a: dict, chunk: int, fp16: bool, sms: int):
    """(y float32 [batch, seqlen, h*p], ssm_state_out int8) of a QuantSSD harness on the CPU tensors ``t`` and
    attributes ``a`` (kernel_cases.ssd_case), with the chunk length, y's dtype and the SMs its launcher sees."""
    import torch

    bt, L = t["x"].shape[:2]
    nhg, ndg = t["x_out_scales"].shape[1:]
    has_state = t["ssm_state"] is not None
    head = [bt, L, a["ngroups"], a["nheads"], a["headdim"], a["d_state"], nhg, ndg, chunk, int(has_state),
            int(fp16), sms]
    with open(tmp / "in.bin", "wb") as f:
        f.write(np.array(head, np.int32).tobytes())
        f.write(np.array([a["dt_scale"], a["dt_min"], a["dt_max"]], np.float32).tobytes())
        f.writelines(t[k].contiguous().numpy().tobytes() for k in (*SSD_INPUTS, *(["ssm_state"] if has_state else [])))
    r = subprocess.run([str(harness), str(tmp / "in.bin"), str(tmp / "out.bin")], capture_output=True, text=True,
                       timeout=900, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    raw = np.fromfile(tmp / "out.bin", np.uint8)
    ybytes = bt * L * a["nheads"] * a["headdim"] * (2 if fp16 else 4)
    y = raw[:ybytes].view(np.float16 if fp16 else np.float32).astype(np.float32).reshape(bt, L, -1)
    state = raw[ybytes:].view(np.int8).reshape(bt, a["nheads"], a["headdim"], a["d_state"])
    return torch.from_numpy(y.copy()), torch.from_numpy(state.copy())


def assert_ssd_matches_reference(name: str, t: dict, a: dict, y, state, y_bound: float, tie_fraction: float = 1.0):
    """A harness's y and ssm_state_out against ``quant_ssd_ref`` on the same inputs: y finite and within
    ``y_bound`` (relative L2), the state within 1 LSB and off by one on at most ``tie_fraction`` of it."""
    import torch

    from qmamba.export.ops import quant_ssd_ref

    y_ref, state_ref = quant_ssd_ref(**t, **a)
    assert torch.isfinite(y).all(), "non-finite y (a value never written, or read before it was?)"
    err = ((y - y_ref).norm() / y_ref.norm()).item()
    assert err <= y_bound, f"{name}: y relative error {err:.2e}"
    diff = (state.int() - state_ref.int()).abs()
    assert diff.max().item() <= 1, f"{name}: ssm_state_out off by {diff.max().item()} LSB"
    share = (diff > 0).float().mean().item()
    assert share <= tie_fraction, f"{name}: {share:.3%} of the state on the other side of a tie"
