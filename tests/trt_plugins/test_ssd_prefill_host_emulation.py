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

import pytest
import torch

import kernel_cases as kc
from host_emulation_build import assert_ssd_matches_reference, run_ssd_harness, thread_harness
from qmamba.export.layer_sizes import LayerShape

Y_BOUND = 1e-5        # fp32 y against the fp32 sequential reference (the design's order: ~1e-6)
Y_BOUND_FP16 = 1e-3   # fp16 y: its own rounding (2^-11 relative) on top

SHARED = r"extern __shared__ float4 smem_f4\[\];"
EMU_SHARED = "float4* smem_f4 = reinterpret_cast<float4*>(emu::dynamic_shared.data());"
PATCHES = [
    (SHARED, EMU_SHARED),  # phase 1
    (SHARED, EMU_SHARED),  # phase 3
    (r"kernel<<<static_cast<unsigned>\(blocks\), threads, smem, stream>>>\(a\);",
     "emulate_threads(kernel, dim3(static_cast<unsigned>(blocks)), threads, smem, a);"),
    (r"quant_ssd_state_pass_kernel<1><<<static_cast<unsigned>\(pass_blocks\), kPassWarps \* 32, 0, s>>>\(a\);",
     "emulate_threads(quant_ssd_state_pass_kernel<1>, dim3(static_cast<unsigned>(pass_blocks)), kPassWarps * 32, 0, a);"),
    (r"quant_ssd_state_pass_kernel<2><<<static_cast<unsigned>\(pass_blocks\), kPassWarps \* 32, 0, s>>>\(a\);",
     "emulate_threads(quant_ssd_state_pass_kernel<2>, dim3(static_cast<unsigned>(pass_blocks)), kPassWarps * 32, 0, a);"),
]

# name: (layer, batch, L, chunk, fp16 y, SMs the launcher sees). d_state 40 takes the bytewise loads (VEC 1);
# headdim 64 with few SMs takes 64-dim slices (P 64), headdim 32 32-dim ones; L not a multiple of the chunk
# leaves a short last chunk; chunk 64 runs two warp pairs a block, 32 one; the default chunk of 128 with 64-dim
# slices (the 8b and 2.7b layers' shape: 4 pairs, 8-wide tiles of 64 columns) and the longest chunk, 256 (8 pairs,
# named barriers 1 to 8); d_state 256, where each lane of the state pass holds two quads of a row; d_state 80,
# rows of six 16-byte pieces (a block's threads not a multiple of them); d_state 16, one 32 x 32 tile of phase 1
# (its state columns padded from 16 to 32).
CASES = {
    "n64-chunk32-P32": (LayerShape(ngroups=2, nheads=4, headdim=32, d_state=64), 1, 70, 32, False, 2),
    "n40-bytewise": (LayerShape(ngroups=2, nheads=4, headdim=32, d_state=40), 2, 45, 32, False, 2),
    "headdim64-P64-chunk64": (LayerShape(ngroups=1, nheads=2, headdim=64, d_state=32), 1, 100, 64, False, 1),
    "fp16-y": (LayerShape(ngroups=1, nheads=2, headdim=32, d_state=32), 1, 37, 32, True, 2),
    "n128-chunk128-P64": (LayerShape(ngroups=1, nheads=2, headdim=64, d_state=128), 1, 300, 128, False, 1),
    "chunk256-fp16-y": (LayerShape(ngroups=1, nheads=2, headdim=32, d_state=64), 1, 300, 256, True, 2),
    "L2": (LayerShape(ngroups=1, nheads=2, headdim=32, d_state=32), 2, 2, 32, False, 2),
    "n256-two-quads-a-lane": (LayerShape(ngroups=1, nheads=2, headdim=32, d_state=256), 1, 80, 32, False, 2),
    "n80-six-pieces-a-row": (LayerShape(ngroups=1, nheads=2, headdim=32, d_state=80), 1, 75, 64, False, 2),
    "n16-one-tile": (LayerShape(ngroups=2, nheads=4, headdim=32, d_state=16), 1, 50, 32, False, 2),
}


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return thread_harness(tmp_path_factory.mktemp("ssd_prefill"), "quantSSDPrefillKernel.cu", PATCHES,
                          "ssd_prefill_harness.cpp", stand_ins={"tensorCore.cuh": "tensor_core_shim.h"},
                          more_sources=("ssdChecks.cu",))


@pytest.mark.parametrize("with_state", [True, False])
@pytest.mark.parametrize("name", list(CASES))
def test_prefill_in_host_emulation_matches_reference(harness, tmp_path, name, with_state):
    s, bt, L, chunk, fp16, sms = CASES[name]
    gen = torch.Generator().manual_seed(kc.case_seed(name, with_state, "emulation"))
    t, a = kc.ssd_case(s, bt, L, gen, with_state=with_state, device="cpu")
    y, state = run_ssd_harness(harness, tmp_path, t, a, chunk, fp16, sms)
    assert_ssd_matches_reference(name, t, a, y, state, Y_BOUND_FP16 if fp16 else Y_BOUND)



# M's entries go to f16 times a power of two (mscale): B and C scales far from the calibrated ones (with_bc_scaled)
# put the unscaled entries past f16's largest or under its normal range; an entry lost or overflowed shows in y.
@pytest.mark.parametrize("factor", [1e3, 1e-4])
def test_prefill_in_host_emulation_scales_m_into_f16_range(harness, tmp_path, factor):
    s = LayerShape(ngroups=1, nheads=2, headdim=64, d_state=128)
    gen = torch.Generator().manual_seed(kc.case_seed("m-scale", factor, "emulation"))
    t, a = kc.ssd_case(s, 1, 150, gen, with_state=False, device="cpu")
    t = kc.with_bc_scaled(t, a, factor)
    y, state = run_ssd_harness(harness, tmp_path, t, a, 128, False, 1)
    assert_ssd_matches_reference(f"B, C scales x {factor:g}", t, a, y, state, Y_BOUND)
