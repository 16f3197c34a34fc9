"""QuantSSD decode's launcher and kernel compiled for the CPU and run with a host thread per CUDA thread
(host_emulation/thread_shim.h: block barriers and warp shuffles for real), against the sequential reference
``quant_ssd_ref``: y within 1e-5 relative (fp32; fp16 y within its rounding), ``ssm_state_out`` within 1 LSB
and equal but for a few ties (docs/ops.md). Every piece width (16, 8, 4 bytes, bytewise), two pieces a thread,
the SSD group's state scales in shared memory and read from global memory (a table too large for a block's
share), batch rows split over blocks or run as many stages of one block, part-full last stages: a piece read
from the wrong place, a stage's buffer or a lookup table overlapping another, a row left out, each shows here
without a GPU. The copy of trt_plugins/kernels is patched where it launches (emulate_threads) and where it
declares its dynamic shared memory (a host buffer, NaN at the start). Says nothing about speed or memory
ordering on a GPU: test_kernels_gpu.py and compute-sanitizer do."""
from __future__ import annotations

import pytest
import torch

import kernel_cases as kc
from host_emulation_build import assert_ssd_matches_reference, run_ssd_harness, thread_harness
from qmamba.export.layer_sizes import LayerShape

Y_BOUND = 1e-5        # fp32 y: the reference's order, only the sum over d_state differs
Y_BOUND_FP16 = 1e-3   # fp16 y: its own rounding (2^-11 relative) on top
TIE_FRACTION = 0.005  # state elements that may land on the other side of a rounding tie

PATCHES = [
    (r'#include "launch.cuh"', '#include "launch_shim.h"'),
    (r"extern __shared__ __align__\(16\) float smem\[\];", "float* smem = emu::dynamic_shared.data();"),
    (r"launch_dependent\(dev, kernel, dim3\(static_cast<unsigned>\(blocks\)\), dim3\(threads\), smem, stream, a\);",
     "emulate_threads(kernel, dim3(static_cast<unsigned>(blocks)), threads, smem, a);"),
]

# name: (layer, batch, fp16 y, SMs the launcher sees). With few SMs a block runs all batch rows in stages of 4;
# with many the rows are split over blocks. d_state 128 and 16 put the SSD group's state scales in shared
# memory; 256 (16 threads a row) and 132 (33 four-byte pieces) need more than a block's share and read them
# from global memory.
CASES = {
    "n128-16byte": (LayerShape(ngroups=2, nheads=8, headdim=64, d_state=128), 5, False, 4),
    "n128-16byte-split": (LayerShape(ngroups=2, nheads=8, headdim=64, d_state=128), 11, False, 64),
    "g8-n16": (LayerShape(ngroups=8, nheads=32, headdim=32, d_state=16), 9, False, 16),
    "n24-8byte": (LayerShape(ngroups=2, nheads=4, headdim=128, d_state=24), 5, False, 8),
    "n20-4byte": (LayerShape(ngroups=1, nheads=4, headdim=64, d_state=20), 13, False, 2),
    "n132-two-pieces": (LayerShape(ngroups=2, nheads=6, headdim=64, d_state=132), 3, False, 8),
    "n17-bytewise": (LayerShape(ngroups=1, nheads=4, headdim=32, d_state=17), 7, False, 4),
    "n256-fp16-y": (LayerShape(ngroups=1, nheads=2, headdim=128, d_state=256), 2, True, 4),
}


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return thread_harness(tmp_path_factory.mktemp("ssd_decode"), "quantSSDDecodeKernel.cu", PATCHES,
                          "ssd_decode_harness.cpp", more_sources=("ssdChecks.cu",))


@pytest.mark.parametrize("with_state", [True, False])
@pytest.mark.parametrize("name", list(CASES))
def test_decode_in_host_emulation_matches_reference(harness, tmp_path, name, with_state):
    s, bt, fp16, sms = CASES[name]
    gen = torch.Generator().manual_seed(kc.case_seed(name, with_state, "decode emulation"))
    t, a = kc.ssd_case(s, bt, 1, gen, with_state=with_state, device="cpu")
    y, state = run_ssd_harness(harness, tmp_path, t, a, 0, fp16, sms)
    assert_ssd_matches_reference(name, t, a, y, state, Y_BOUND_FP16 if fp16 else Y_BOUND, TIE_FRACTION)


@pytest.mark.parametrize("with_state", [True, False])
@pytest.mark.parametrize("name", ["n128-16byte", "n17-bytewise"])
def test_decode_with_state_scales_under_the_normal_floats(harness, tmp_path, name, with_state):
    """State scales of 1e-40 (1 / s is inf) and 5e-39: Q divides there, so a state of exactly 0 stays 0 (the
    reciprocal multiply made it -128) and the decayed states match the reference bit for bit."""
    s, bt, fp16, sms = CASES[name]
    gen = torch.Generator().manual_seed(kc.case_seed(name, with_state, "decode subnormal scales"))
    t, a = kc.ssd_case(s, bt, 1, gen, with_state=with_state, device="cpu")
    t = kc.with_subnormal_state_scales(t, a)
    y, state = run_ssd_harness(harness, tmp_path, t, a, 0, fp16, sms)
    assert_ssd_matches_reference(name, t, a, y, state, Y_BOUND, TIE_FRACTION)
    from qmamba.export.ops import quant_ssd_ref
    _, state_ref = quant_ssd_ref(**t, **a)
    assert torch.equal(state[..., :2], state_ref[..., :2])
    assert (state[..., :2] == 0).any()


@pytest.fixture(scope="module")
def lookups_first_harness(tmp_path_factory):
    """The kernel as sm_90 compiles it (kPdlDevice true: the lookups before pdl_wait(), stage 0's loads after)."""
    patches = [(r'#include "launch.cuh"', '#include "launch_shim.h"\n#define kPdlDevice true'), *PATCHES[1:]]
    return thread_harness(tmp_path_factory.mktemp("ssd_decode_pdl"), "quantSSDDecodeKernel.cu", patches,
                          "ssd_decode_harness.cpp", more_sources=("ssdChecks.cu",))


@pytest.mark.parametrize("name", ["n128-16byte-split", "n17-bytewise", "n132-two-pieces"])
def test_decode_with_the_lookups_first_is_the_same(harness, lookups_first_harness, tmp_path, name):
    """The order of the programmatic-launch build (the lookups and constants first, stage 0's loads after the wait)
    gives the same y and state, bit for bit, as the order the other builds use."""
    s, bt, fp16, sms = CASES[name]
    gen = torch.Generator().manual_seed(kc.case_seed(name, "decode order"))
    t, a = kc.ssd_case(s, bt, 1, gen, with_state=True, device="cpu")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    y, state = run_ssd_harness(harness, tmp_path / "a", t, a, 0, fp16, sms)
    y2, state2 = run_ssd_harness(lookups_first_harness, tmp_path / "b", t, a, 0, fp16, sms)
    assert torch.equal(y, y2) and torch.equal(state, state2)
