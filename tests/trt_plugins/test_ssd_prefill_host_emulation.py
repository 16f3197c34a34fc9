"""QuantSSD prefill's launcher and its three kernels compiled for the CPU and run with a host thread per CUDA
thread (host_emulation/thread_shim.h: block barriers, the two-warp barriers of phase 3 and warp shuffles for
real) and each tensor-core mma a warp-wide exchange of the lanes' fragments (host_emulation/tensor_core_shim.h
stands in for tensorCore.cuh), against the sequential reference ``quant_ssd_ref``: y within 1e-5 relative
(fp32; fp16 y within its rounding), ``ssm_state_out`` within 1 LSB (docs/ops.md; at L 2 the calibrated
state scale puts many entries on a rounding tie). A fragment read from the
wrong lane, a strip or slab left out or summed twice, a shared-memory region overlapping another: each shows
here without a GPU. The copy of trt_plugins/kernels is patched where it launches (emulate_threads) and where
it declares its dynamic shared memory (a host buffer, NaN at the start: a value read before it is written
shows). Says nothing about speed or memory ordering on a GPU: test_kernels_gpu.py and compute-sanitizer do."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch

import kernel_cases as kc
from host_emulation_build import thread_harness
from qmamba.export.layer_sizes import LayerShape
from qmamba.export.ops import quant_ssd_ref

Y_BOUND = 1e-5        # fp32 y against the fp32 sequential reference (the design's order: ~1e-6)
Y_BOUND_FP16 = 1e-3   # fp16 y: its own rounding (2^-11 relative) on top

SHARED = r"extern __shared__ float4 smem_f4\[\];"
EMU_SHARED = "float4* smem_f4 = reinterpret_cast<float4*>(emu::dynamic_shared.data());"
PATCHES = [
    (SHARED, EMU_SHARED),  # phase 1
    (SHARED, EMU_SHARED),  # phase 3
    (r"kernel<<<static_cast<unsigned>\(blocks\), threads, smem, stream>>>\(a\);",
     "emulate_threads(kernel, dim3(static_cast<unsigned>(blocks)), threads, smem, a);"),
    (r"quant_ssd_state_pass_kernel<<<static_cast<unsigned>\(pass_blocks\), kPassThreads, 0, s>>>\(a\);",
     "emulate_threads(quant_ssd_state_pass_kernel, dim3(static_cast<unsigned>(pass_blocks)), kPassThreads, 0, a);"),
]

# name: (layer, batch, L, chunk, fp16 y, SMs the launcher sees). d_state 40 takes the bytewise loads (VEC 1);
# headdim 64 with few SMs takes 64-dim slices (P 64), headdim 32 32-dim ones; L not a multiple of the chunk
# leaves a short last chunk; chunk 64 runs two warp pairs a block, 32 one; the default chunk of 128 with 64-dim
# slices (the 8b and 2.7b layers' shape: 4 pairs, 8-wide tiles of 64 columns) and the longest chunk, 256 (8 pairs,
# named barriers 1 to 8).
CASES = {
    "n64-chunk32-P32": (LayerShape(ngroups=2, nheads=4, headdim=32, d_state=64), 1, 70, 32, False, 2),
    "n40-bytewise": (LayerShape(ngroups=2, nheads=4, headdim=32, d_state=40), 2, 45, 32, False, 2),
    "headdim64-P64-chunk64": (LayerShape(ngroups=1, nheads=2, headdim=64, d_state=32), 1, 100, 64, False, 1),
    "fp16-y": (LayerShape(ngroups=1, nheads=2, headdim=32, d_state=32), 1, 37, 32, True, 2),
    "n128-chunk128-P64": (LayerShape(ngroups=1, nheads=2, headdim=64, d_state=128), 1, 300, 128, False, 1),
    "chunk256-fp16-y": (LayerShape(ngroups=1, nheads=2, headdim=32, d_state=64), 1, 300, 256, True, 2),
    "L2": (LayerShape(ngroups=1, nheads=2, headdim=32, d_state=32), 2, 2, 32, False, 2),
}


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return thread_harness(tmp_path_factory.mktemp("ssd_prefill"), "quantSSDPrefillKernel.cu", PATCHES,
                          "ssd_prefill_harness.cpp", stand_ins={"tensorCore.cuh": "tensor_core_shim.h"},
                          more_sources=("ssdChecks.cu",))


def run_harness(harness, tmp_path, t: dict, a: dict, chunk: int, fp16: bool, sms: int):
    bt, L = t["x"].shape[:2]
    nhg, ndg = t["x_out_scales"].shape[1:]
    has_state = t["ssm_state"] is not None
    head = [bt, L, a["ngroups"], a["nheads"], a["headdim"], a["d_state"], nhg, ndg, chunk, int(has_state),
            int(fp16), sms]
    with open(tmp_path / "in.bin", "wb") as f:
        f.write(np.array(head, np.int32).tobytes())
        f.write(np.array([a["dt_scale"], a["dt_min"], a["dt_max"]], np.float32).tobytes())
        for k in ("x", "dt", "B", "C", "A_log", "D", "dt_bias", "x_out_scales", "B_out_scales", "C_out_scales",
                  "x_head_group_range", "x_dim_group_range", "ssm_state_scale", *(["ssm_state"] if has_state else [])):
            f.write(t[k].contiguous().numpy().tobytes())
    r = subprocess.run([str(harness), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")], capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    raw = np.fromfile(tmp_path / "out.bin", np.uint8)
    ny = bt * L * a["nheads"] * a["headdim"]
    ybytes = ny * (2 if fp16 else 4)
    y = raw[:ybytes].view(np.float16 if fp16 else np.float32).astype(np.float32).reshape(bt, L, -1)
    state = raw[ybytes:].view(np.int8).reshape(bt, a["nheads"], a["headdim"], a["d_state"])
    return torch.from_numpy(y.copy()), torch.from_numpy(state.copy())


@pytest.mark.parametrize("with_state", [True, False])
@pytest.mark.parametrize("name", list(CASES))
def test_prefill_in_host_emulation_matches_reference(harness, tmp_path, name, with_state):
    s, bt, L, chunk, fp16, sms = CASES[name]
    gen = torch.Generator().manual_seed(kc.case_seed(name, with_state, "emulation"))
    t, a = kc.ssd_case(s, bt, L, gen, with_state=with_state, device="cpu")
    y, state = run_harness(harness, tmp_path, t, a, chunk, fp16, sms)
    y_ref, state_ref = quant_ssd_ref(**t, **a)
    assert torch.isfinite(y).all(), "non-finite y (a value never written, or read before it was?)"
    err = ((y - y_ref).norm() / y_ref.norm()).item()
    assert err <= (Y_BOUND_FP16 if fp16 else Y_BOUND), f"{name}: y relative error {err:.2e}"
    diff = (state.int() - state_ref.int()).abs()
    assert diff.max().item() <= 1, f"{name}: ssm_state_out off by {diff.max().item()} LSB"
