"""The rotation pass's order (rotation_order.py, which the GPU test holds the kernel to bit for bit) against
the graph's rotation (``w8a8_linear.activation_ref``, exact in float64): a few ulp of the row's largest
value apart, and Q of the two at most 1 LSB apart, rarely, at the real models' out_proj sizes."""
from __future__ import annotations

import pytest
import torch

from qmamba.export import hadamard, ops
from qmamba.runtime.w8a8_linear import activation_ref

from rotation_order import rotation_pass_order

# (K, norm_group, factors): 130m, 2.7b, 8b (8 groups), one factor, and small random orthogonal factors
CASES = {"130m": (1536, 0, None), "2.7b": (5120, 0, None), "8b-groups": (8192, 1024, None),
         "one-factor-128": (128, 64, None), "random-3x20": (60, 30, (3, 20)), "random-40": (40, 0, (40,))}


@pytest.mark.parametrize("name", list(CASES))
def test_kernel_order_is_the_rotation_within_a_few_ulp(name):
    k, group, orders = CASES[name]
    g = torch.Generator().manual_seed(k)
    x, w = torch.randn(3, 1, k, generator=g) * 2, torch.rand(k, generator=g) + 0.5
    rot = (list(hadamard.rotation_factors_fp32(k)) if orders is None else
           [torch.linalg.qr(torch.randn(f, f, generator=g, dtype=torch.float64))[0].float() for f in orders])
    got = rotation_pass_order(x, w, 1e-5, group, rot)
    exact = activation_ref(x.double(), w.double(), 1e-5, group, [f.double() for f in rot])
    err = ((got.double() - exact).abs() / exact.abs().amax(-1, keepdim=True)).max().item()
    assert err <= 2e-6, err
    s = torch.tensor(exact.abs().max().item() / 100)
    q_got, q_exact = ops.quantize(got, s), ops.quantize(exact.float(), s)
    diff = (q_got.int() - q_exact.int()).abs()
    assert diff.max() <= 1 and diff.float().mean() <= 1e-3
