"""QmambaGatedNorm's launcher and kernel compiled for the CPU and run with a host thread per CUDA thread
(host_emulation/thread_shim.h: block barriers and warp shuffles for real), against the float64 twin
``gated_norm_ref``: each row within 1e-5 relative (fp32 against float64). Needs g++ (C++20) only. The copy of
trt_plugins/kernels is patched in three places: launch.cuh (programmatic dependent launch) becomes no-ops, the
launch becomes emulate_threads, the dynamic shared memory a host buffer (NaN at the start: a read of a value
never written shows). The launcher sees few SMs, so that blocks take several rows. Says nothing about speed or
memory ordering on a GPU: test_kernels_gpu.py and compute-sanitizer do that."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch

import kernel_cases as kc
from host_emulation_build import thread_harness
from qmamba.runtime.gated_norm import gated_norm_ref

BOUND = 1e-5

PATCHES = [
    (r'#include "launch.cuh"', '#include "launch_shim.h"'),
    (r"launch_dependent\(dev, kernel, grid, dim3\(kThreads\), smem, reinterpret_cast<cudaStream_t>\(stream\), a\);",
     "emulate_threads(kernel, grid, kThreads, smem, a);"),
    (r"extern __shared__ float4 shared4\[\];", "float4* shared4 = reinterpret_cast<float4*>(emu::dynamic_shared.data());"),
]

# (case, misaligned tensors: the scalar paths, SMs the launcher sees)
RUNS = [(name, False, 2) for name in kc.GATED_NORM_CASES] + [
    ("130m-12x128", True, 2), ("dense-3x64-8-groups", True, 3), ("plain-8-groups-z-as-is", True, 2),
    ("plain-one-group", False, 132), ("no-gate-plain-odd-K-3-groups", True, 2), ("no-gate-sylvester-128", True, 1),
    ("col-scale-2.7b-40x128", True, 2), ("col-scale-z-as-is-24-groups-of-4", True, 3)]


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return thread_harness(tmp_path_factory.mktemp("gated_norm"), "gatedNormKernel.cu", PATCHES,
                          "gated_norm_harness.cpp")


def run_harness(harness, tmp_path, t: dict, a: dict, misaligned: bool, sms: int) -> torch.Tensor:
    y, z_col, zw = t["y"], t.get("z_col_scale"), a.get("z_row_width", 0)
    rows, k = y.numel() // y.shape[-1], y.shape[-1]
    f0, f1, first = a["rotation"] or (1, 1, None)
    with open(tmp_path / "in.bin", "wb") as f:
        f.write(np.array([rows, k, a["group_size"], f0, f1, int(misaligned), sms, int(t["z"] is not None),
                          int(z_col is not None), zw], np.int32).tobytes())
        # z_scale NaN without z: the launcher does not read it
        f.write(np.array([a["eps"], a["z_scale"] if t["z"] is not None else np.nan], np.float32).tobytes())
        for x in [t["y"], t["z"], z_col, t["weight"], first]:
            if x is None:
                continue
            f.write(x.contiguous().numpy().astype(np.float32).tobytes())
    r = subprocess.run([str(harness), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return torch.from_numpy(np.fromfile(tmp_path / "out.bin", np.float32).reshape(y.shape))


@pytest.mark.parametrize("name, misaligned, sms", RUNS,
                         ids=[f"{n}{'-misaligned' if m else ''}-{s}sm" for n, m, s in RUNS])
def test_gated_norm_in_host_emulation_matches_twin(harness, tmp_path, name, misaligned, sms):
    t, a = kc.gated_norm_case(*kc.GATED_NORM_CASES[name])
    got = run_harness(harness, tmp_path, t, a, misaligned, sms)
    assert torch.isfinite(got).all(), "non-finite output (a value never written?)"
    err = kc.row_rel_err(got, gated_norm_ref(**t, **a))
    assert err <= BOUND, f"{name}: row relative error {err:.2e}"


def test_host_emulation_decides_z_ties_by_division(harness, tmp_path):
    """z on a rounding tie of z / z_scale (and one ulp beside it) quantizes as the IEEE division decides: with a
    division by its reciprocal some of these would land one step away, far beyond the bound."""
    t, a = kc.gated_norm_case(2, 256, 256, None, 0.1)
    s = torch.tensor(0.1, dtype=torch.float32)
    ties = (torch.arange(-128, 128).float() + 0.5) * s
    t["z"] = torch.stack([ties, torch.nextafter(ties, torch.tensor(float("inf")))]).reshape(2, 1, 256)
    got = run_harness(harness, tmp_path, t, a, False, 2)
    assert kc.row_rel_err(got, gated_norm_ref(**t, **a)) <= BOUND


def test_host_emulation_gates_with_a_subnormal_z_scale(harness, tmp_path):
    """A z_scale below the normal floats has no finite reciprocal: the gate is computed per channel there (the
    table's index would take 0 * inf for z = 0), so zeros stay zeros and the rest saturates, as the division does."""
    t, a = kc.gated_norm_case(2, 96, 4, None, 1e-39)
    z = t["z"].clone()
    z.view(-1)[::3] = 0.0
    t["z"] = z
    got = run_harness(harness, tmp_path, t, a, False, 2)
    assert kc.row_rel_err(got, gated_norm_ref(**t, **a)) <= BOUND


@pytest.mark.parametrize("name, tail, misaligned", [("col-scale-2.7b-40x128", 5456, False),
                                                    ("130m-12x128", 1816, False), ("plain-8-groups-z-as-is", 7, True)])
def test_host_emulation_reads_z_from_a_wider_row(harness, tmp_path, name, tail, misaligned):
    """z_row_width: z is the first K columns of rows of K + tail floats (in_proj's whole output z | x | B | C | dt);
    the columns after z are NaN, so reading one of them shows. An odd width takes the scalar path."""
    t, a = kc.gated_norm_case(*kc.GATED_NORM_CASES[name])
    z = t["z"]
    t["z"] = torch.cat([z, torch.full((*z.shape[:-1], tail), float("nan"))], -1)
    a = {**a, "z_row_width": z.shape[-1] + tail}
    got = run_harness(harness, tmp_path, t, a, misaligned, 2)
    assert torch.isfinite(got).all()
    assert kc.row_rel_err(got, gated_norm_ref(**t, **a)) <= BOUND
