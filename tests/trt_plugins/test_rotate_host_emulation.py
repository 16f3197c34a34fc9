"""QmambaW8A8Linear's rotation pass compiled for the CPU and run with a host thread per CUDA thread
(host_emulation/thread_shim.h: block barriers and warp shuffles for real), against rotation_order.py, the
order the GPU test holds the kernel to: bit for bit. Needs g++ (C++20) only. The copy of
trt_plugins/kernels is patched in three places: launch.cuh (programmatic dependent launch) becomes no-ops,
the launch becomes emulate_threads, the dynamic shared memory a host buffer. Says nothing about speed or
memory ordering on a GPU: test_kernels_gpu.py and compute-sanitizer do that."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch

from qmamba.export import hadamard

from host_emulation_build import thread_harness
from rotation_order import rotation_pass_order

PATCHES = [
    (r'#include "launch.cuh"', '#include "launch_shim.h"'),
    (r"launch_dependent\(dev, w8a8_rotate_kernel, grid, dim3\(kRotateThreads\), (rotation_shared_bytes\(K, f0\)), stream, a\);",
     r"emulate_threads(w8a8_rotate_kernel, grid, kRotateThreads, \1, a);"),
    (r"extern __shared__ float smem\[\];", "float* smem = emu::dynamic_shared.data();"),
]

# (rows, K, norm_group or None (no norm), factor orders or "hadamard"): 130m-like (12 x 128), one factor, factors
# not multiples of the 16 columns a block takes, 2.7b's row (40 x 128) with one row.
CASES = [(2, 1536, 0, "hadamard"), (3, 128, 64, "hadamard"), (3, 60, 30, (3, 20)), (2, 40, None, (40,)),
         (1, 5120, 0, "hadamard")]


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return thread_harness(tmp_path_factory.mktemp("rotate"), "w8a8LinearRotate.cu", PATCHES, "rotate_harness.cpp")


@pytest.mark.parametrize("case", CASES, ids=[f"{c[1]}-{c[3]}" for c in CASES])
def test_rotation_pass_in_host_emulation_is_its_order(harness, case, tmp_path):
    rows, k, group, orders = case
    g = torch.Generator().manual_seed(k)
    x = torch.randn(rows, 1, k, generator=g) * 2
    w = torch.rand(k, generator=g) + 0.5 if group is not None else None
    rot = (list(hadamard.rotation_factors_fp32(k)) if orders == "hadamard" else
           [torch.linalg.qr(torch.randn(f, f, generator=g, dtype=torch.float64))[0].float() for f in orders])
    f0, f1 = (rot[0].shape[0], rot[1].shape[0]) if len(rot) == 2 else (1, rot[0].shape[0])
    with open(tmp_path / "in.bin", "wb") as f:
        f.write(np.array([rows, k, f0, f1, group or 0, int(w is not None)], np.int32).tobytes())
        f.write(np.array([1e-5], np.float32).tobytes())
        for t in [x, *([w] if w is not None else []), *rot]:
            f.write(t.contiguous().numpy().astype(np.float32).tobytes())
    r = subprocess.run([str(harness), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    got = torch.from_numpy(np.fromfile(tmp_path / "out.bin", np.float32).reshape(x.shape))
    want = rotation_pass_order(x, w, 1e-5, group or 0, rot)
    assert torch.equal(got, want), (got - want).abs().max().item()
