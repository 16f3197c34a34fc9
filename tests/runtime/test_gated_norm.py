"""QmambaGatedNorm's reference twin (runtime/gated_norm.py) against the model's own modules (the mixer's
gate_norm_step and rotate_step: z quantized, QuantGatedRMSNorm, hadamard.rotate), and the rotation's form."""
from __future__ import annotations

import pytest
import torch

from qmamba.export import hadamard, ops
from qmamba.export.quant_modules import QuantGatedRMSNorm
from qmamba.export.validate import QMambaInputError
from qmamba.runtime.gated_norm import gated_norm_ref, hadamard_rotation, sylvester


def _modules(y, z, weight, group_size, z_scale, rotate):
    """The mixer's own steps: z_q = Q(z), norm(y, float(z_q) * z_scale), then the rotation (qmixer.py)."""
    norm = QuantGatedRMSNorm(y.shape[-1], group_size, 1e-5)
    norm.weight.copy_(weight)
    zq = ops.quantize(z, torch.tensor(z_scale)).float() * z_scale if z_scale else z
    g = norm(y, zq)
    return hadamard.rotate(g) if rotate else g


@pytest.mark.parametrize("k, ngroups, rotate", [(1536, 1, True), (5120, 1, True), (8192, 8, True), (128, 2, True),
                                                (96, 1, True), (40, 1, True), (5120, 8, False), (99, 3, False)])
@pytest.mark.parametrize("z_scale", [0.0, 0.05])
def test_twin_is_the_mixers_gated_norm_and_rotation(k, ngroups, rotate, z_scale):
    g = torch.Generator().manual_seed(k)
    y, z = torch.randn(3, 2, k, generator=g) * 2, torch.randn(3, 2, k, generator=g) * 3
    w = torch.rand(k, generator=g) + 0.5
    want = _modules(y, z, w, k // ngroups, z_scale, rotate)
    rotation = hadamard_rotation(k) if rotate else None
    for dtype in (torch.float64, torch.float32):
        got = gated_norm_ref(y, z, w, group_size=k // ngroups, eps=1e-5, z_scale=z_scale, rotation=rotation,
                             dtype=dtype)
        assert got.dtype == dtype
        err = ((got.double() - want.double()).norm(dim=-1) / want.double().norm(dim=-1)).max().item()
        assert err <= 1e-6, (dtype, err)


@pytest.mark.parametrize("k, form", [(1536, (12, 128)), (5120, (40, 128)), (8192, (64, 128)), (128, (1, 128)),
                                     (64, (1, 64)), (96, (96, 1)), (40, (40, 1)), (192, (12, 16))])
def test_hadamard_rotation_form(k, form):
    f0, f1, first = hadamard_rotation(k)
    assert (f0, f1) == form
    factors = hadamard.rotation_factors_fp32(k)
    if f0 > 1:
        assert torch.equal(first, factors[0])
    else:
        assert first is None
    if f1 > 1:  # the last factor is the normalized Sylvester matrix, as the op assumes
        assert torch.equal(sylvester(f1), factors[-1])


def test_hadamard_rotation_refuses_three_factors():
    with pytest.raises(QMambaInputError, match="3 factors"):
        hadamard_rotation(32768)


def test_twin_with_a_dense_first_factor_is_its_kronecker_product():
    g = torch.Generator().manual_seed(3)
    y, z, w = torch.randn(5, 192, generator=g), torch.randn(5, 192, generator=g), torch.rand(192, generator=g) + 0.5
    first = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))[0].float()
    plain = gated_norm_ref(y, z, w, group_size=24, eps=1e-5, z_scale=0.1)
    got = gated_norm_ref(y, z, w, group_size=24, eps=1e-5, z_scale=0.1, rotation=(3, 64, first))
    want = plain @ torch.kron(first.double().contiguous(), sylvester(64, torch.float64))
    assert torch.allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("k, ngroups, rotate", [(5120, 1, True), (8192, 8, True), (99, 3, False)])
def test_twin_without_z_is_the_rms_norm_of_y_and_the_rotation(k, ngroups, rotate):
    """z None: no gate (g = y), z_scale not read; the rest as with a gate (QuantGatedRMSNorm's RMS and weight,
    hadamard.rotate)."""
    g = torch.Generator().manual_seed(k)
    y, w = torch.randn(3, 2, k, generator=g) * 2, torch.rand(k, generator=g) + 0.5
    group = k // ngroups
    yg = y.double().reshape(3, 2, ngroups, group)
    normed = (yg / torch.sqrt((yg * yg).mean(-1, keepdim=True) + 1e-5)).reshape(y.shape) * w.double()
    want = hadamard.rotate(normed.float()).double() if rotate else normed
    got = gated_norm_ref(y, None, w, group_size=group, eps=1e-5, z_scale=float("nan"),
                         rotation=hadamard_rotation(k) if rotate else None)
    err = ((got - want).norm(dim=-1) / want.norm(dim=-1)).max().item()
    assert err <= 1e-6, err


@pytest.mark.parametrize("z_scale", [0.0, 0.05])
def test_twin_with_a_column_scale_is_z_multiplied_first(z_scale):
    """z_col_scale: z times it in fp32 first (in_proj's output scale on its unscaled z piece, the graph's Mul),
    bit for bit what the twin gives for z multiplied beforehand; without z it is not read."""
    g = torch.Generator().manual_seed(5)
    y, acc = torch.randn(3, 2, 192, generator=g), torch.randint(-900, 900, (3, 2, 192), generator=g).float()
    w, col = torch.rand(192, generator=g) + 0.5, (torch.rand(192, generator=g) + 0.5) * 0.01
    args = dict(group_size=24, eps=1e-5, z_scale=z_scale, rotation=hadamard_rotation(192))
    assert torch.equal(gated_norm_ref(y, acc, w, z_col_scale=col, **args), gated_norm_ref(y, acc * col, w, **args))
    assert torch.equal(gated_norm_ref(y, None, w, z_col_scale=torch.ones(5), **args),
                       gated_norm_ref(y, None, w, **args))
