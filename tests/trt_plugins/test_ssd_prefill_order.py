"""The QuantSSD prefill kernel's arithmetic order, emulated on the CPU (ssd_prefill_order.py), against
the sequential fp32 reference, and the int8-to-f16 conversion its tile loads rely on.

These run without a GPU: they check the kernel's design (where it rounds, how it splits the f16
operands, in which order it sums), not the compiled kernel; test_kernels_gpu.py checks that.
"""
from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest
import torch

import kernel_cases as kc
from qmamba.export.layer_sizes import LayerShape
from qmamba.export.ops import _ssd_inputs, quant_ssd_ref
from ssd_prefill_order import quant_ssd_prefill_order

TENSOR_CORE = pathlib.Path(__file__).resolve().parents[2] / "trt_plugins" / "kernels" / "tensorCore.cuh"
STATE_TIE_DELTA = 0.05   # docs/ops.md: a chunked fp32 implementation's S_L / s within this of the reference's
Y_DESIGN_BOUND = 1e-5    # the emulated order's y (measured <= 1e-6); the GPU test's bar is 2e-3

CASES = {
    "n64-chunk128": (LayerShape(ngroups=2, nheads=4, headdim=32, d_state=64), 2, 300, 128),
    "n128-headdim64-chunk64": (LayerShape(ngroups=1, nheads=2, headdim=64, d_state=128), 1, 257, 64),
    "n40-chunk32": (LayerShape(ngroups=2, nheads=4, headdim=32, d_state=40), 2, 97, 32),
    "n16-chunk100": (LayerShape(ngroups=2, nheads=4, headdim=32, d_state=16), 1, 333, 100),
    "L2": (LayerShape(ngroups=1, nheads=2, headdim=32, d_state=64), 2, 2, 128),
    "n128-chunk256": (LayerShape(ngroups=1, nheads=2, headdim=64, d_state=128), 1, 600, 256),
    "headdim128-n256": (LayerShape(ngroups=1, nheads=2, headdim=128, d_state=256), 1, 130, 64),
}


def reference_state_lsb(t, a) -> torch.Tensor:
    """S_L / ssm_state_scale of the sequential recurrence, before rounding."""
    xh, Bh, _, dtv, A, _, S, sscale = _ssd_inputs(
        t["x"], t["dt"], t["B"], t["C"], t["A_log"], t["D"], t["dt_bias"], t["x_out_scales"],
        t["B_out_scales"], t["C_out_scales"], t["x_head_group_range"], t["x_dim_group_range"],
        t["ssm_state_scale"], t["ssm_state"], a["dt_scale"], a["dt_min"], a["dt_max"], a["ngroups"],
        a["nheads"], a["headdim"], a["d_state"])
    for k in range(xh.shape[1]):
        S = torch.exp(dtv[:, k] * A)[:, :, None, None] * S + (
            (dtv[:, k, :, None] * xh[:, k])[..., None] * Bh[:, k, :, None, :])
    return S / sscale


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("with_state", [True, False])
def test_prefill_order_meets_the_contract(name, with_state):
    s, bt, L, chunk = CASES[name]
    gen = torch.Generator().manual_seed(kc.case_seed(name, with_state, "order"))
    t, a = kc.ssd_case(s, bt, L, gen, with_state=with_state, device="cpu")
    y, st, lsb = quant_ssd_prefill_order(**t, **a, chunk_size=chunk)
    y_ref, st_ref = quant_ssd_ref(**t, **a)
    err = ((y - y_ref).norm() / y_ref.norm()).item()
    unsat = reference_state_lsb(t, a).abs() < 127.5
    dev = (lsb - reference_state_lsb(t, a)).abs()[unsat].max().item()
    diff = (st.int() - st_ref.int()).abs()
    print(f"\n{name} state={with_state}: y rel err {err:.1e}, S_L / s within {dev:.1e} LSB, "
          f"int8 state differs on {(diff > 0).float().mean().item():.2e}")
    assert err <= Y_DESIGN_BOUND
    assert dev <= STATE_TIE_DELTA
    assert diff.max().item() <= 1


def byte_perm(x: int, y: int, s: int) -> int:
    """__byte_perm(x, y, s): byte k of the result is byte (s >> 4k) & 7 of the 8 bytes y:x."""
    src = x | (y << 32)
    return sum(((src >> (8 * ((s >> (4 * k)) & 7))) & 0xFF) << (8 * k) for k in range(4))


def test_int8_to_f16_pairs_are_exact():
    """int8x4_to_f16x2 (tensorCore.cuh, which the host emulation replaces): its two __byte_perm and its f16x2
    subtraction, as written, give each of the 256 int8 values as the f16 of the same value, in byte order."""
    body = TENSOR_CORE.read_text().split("void int8x4_to_f16x2(", 1)[1].split("\n}\n", 1)[0]
    biased_xor = int(re.search(r"w \^ (0x[0-9a-f]+)u", body).group(1), 16)
    perms = re.findall(r"__byte_perm\(biased, (0x[0-9a-f]+)u, (0x[0-9a-f]+)\)", body)
    sub = re.findall(r"sub\.rn\.f16x2[^;]*;\" : \"=r\"\((lo|hi)\) : \"r\"\((a|b)\), \"r\"\((0x[0-9a-f]+)u\)", body)
    assert len(perms) == 2 and len(sub) == 2, body
    assert [(out, src) for out, src, _ in sub] == [("lo", "a"), ("hi", "b")], sub

    def halves(word: int) -> list[float]:
        return [float(h) for h in np.array([word & 0xFFFF, word >> 16], np.uint16).view(np.float16)]

    for v in range(-128, 128):
        for k in range(4):
            w = (v & 0xFF) << (8 * k)
            biased = w ^ biased_xor
            got = []
            for (y, sel), (_, _, c) in zip(perms, sub):
                pair = np.array(halves(byte_perm(biased, int(y, 16), int(sel, 16))), np.float16)
                got += [float(x) for x in (pair - np.array(halves(int(c, 16)), np.float16)).astype(np.float16)]
            assert got == [float(v if j == k else 0) for j in range(4)], (v, k, got)
