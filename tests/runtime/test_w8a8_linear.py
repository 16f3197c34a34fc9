"""QmambaW8A8Linear's reference twin (runtime/w8a8_linear.py) against the model's own modules
(export/quant_modules.py QuantLinear and QuantRMSNorm), the weight packing, and its input checks."""
from __future__ import annotations

import pytest
import torch

from qmamba.export import ops
from qmamba.export.quant_modules import QuantLinear, QuantRMSNorm
from qmamba.export.validate import QMambaInputError
from qmamba.runtime.w8a8_linear import pack_int8_words, unpack_int8_words, w8a8_linear_ref


def _layer(k: int, n: int, seed: int = 0) -> QuantLinear:
    g = torch.Generator().manual_seed(seed)
    return QuantLinear.from_float(torch.randn(n, k, generator=g), input_scale=0.03)


@pytest.mark.parametrize("k", [1, 3, 4, 5, 64, 257])
def test_packing_round_trips_and_pads_with_zeros(k):
    w = torch.randint(-128, 128, (7, k), dtype=torch.int8)
    words = pack_int8_words(w)
    assert words.dtype == torch.int32 and words.shape == (7, -(-k // 4))
    assert torch.equal(unpack_int8_words(words, k), w)
    assert torch.equal(words.view(torch.int8)[:, k:], torch.zeros(7, words.shape[1] * 4 - k, dtype=torch.int8))
    assert int(pack_int8_words(torch.tensor([[1, -1, 0, 2]], dtype=torch.int8))) == 0x0200FF01  # byte j = column j


@pytest.mark.parametrize("k,n,rows", [(64, 48, 1), (257, 33, 3), (5, 9, 8), (128, 300, 2)])
@pytest.mark.parametrize("residual", [False, True])
def test_plain_linear_equals_quant_linear(k, n, rows, residual):
    lin = _layer(k, n)
    x = torch.randn(rows, 1, k) * 2
    res = torch.randn(rows, 1, n) if residual else None
    want = lin(lin.quantize_input(x))
    if residual:
        want = res + want
    got = w8a8_linear_ref(x, pack_int8_words(lin.weight), lin.output_scale(), lin.input_scale.reshape(1),
                          residual=res)
    assert torch.equal(got, want)


@pytest.mark.parametrize("k,n,rows", [(64, 48, 2), (257, 33, 3)])
def test_norm_linear_equals_rms_norm_then_quant_linear(k, n, rows):
    lin, norm = _layer(k, n, 1), QuantRMSNorm(k, 1e-5)
    norm.weight = torch.rand(k) + 0.5
    x = torch.randn(rows, 1, k) * 3
    want = lin(lin.quantize_input(norm(x)))
    got = w8a8_linear_ref(x, pack_int8_words(lin.weight), lin.output_scale(), lin.input_scale, norm.weight, 1e-5)
    # rsqrt vs 1 / sqrt may round the norm by an ulp: at most one activation crosses a rounding tie.
    q_want, q_got = lin.quantize_input(norm(x)), ops.quantize(
        (x * torch.reciprocal(torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5))) * norm.weight, lin.input_scale)
    assert (q_want.int() - q_got.int()).abs().max() <= 1
    if torch.equal(q_want, q_got):
        assert torch.equal(got, want)


@pytest.mark.parametrize("change,message", [
    (lambda a: a.update(x=a["x"].double()), "x must be torch.float32"),
    (lambda a: a.update(x=a["x"][0]), "x must have shape"),
    (lambda a: a.update(weight=a["weight"][:, :-1]), "weight must have shape"),
    (lambda a: a.update(weight=a["weight"].view(torch.int8)), "weight must be torch.int32"),
    (lambda a: a.update(out_scale=a["out_scale"][:-1]), "out_scale must have shape"),
    (lambda a: a.update(input_scale=torch.tensor([0.1, 0.2])), "input_scale must hold one value"),
    (lambda a: a.update(input_scale=torch.tensor([0.0])), "input_scale must be > 0"),
    (lambda a: a.update(input_scale=torch.tensor([float("nan")])), "input_scale has non-finite values"),
    (lambda a: a.update(norm_weight=torch.ones(3)), "norm_weight must have shape"),
    (lambda a: a.update(residual=torch.zeros(2, 1, 5)), "residual must have shape"),
    (lambda a: a.update(rotation=(4, 2, torch.eye(4)), norm_weight=torch.ones(16)), "f1 = 2 must make K = 16"),
    (lambda a: a.update(rotation=(2, 12, torch.eye(2)), norm_weight=torch.ones(16)), "f1 must be a power of two"),
    (lambda a: a.update(rotation=(4, 4, torch.ones(4, 2)), norm_weight=torch.ones(16)), r"F_0 must have shape \[4, 4\]"),
    (lambda a: a.update(rotation=(4, 4, torch.eye(4).double()), norm_weight=torch.ones(16)), "must be torch.float32"),
    (lambda a: a.update(rotation=(1, 16, None)), "a rotation needs the norm"),
])
def test_bad_input_is_named(change, message):
    lin = _layer(16, 8)
    args = dict(x=torch.randn(2, 1, 16), weight=pack_int8_words(lin.weight), out_scale=lin.output_scale(),
                input_scale=lin.input_scale.reshape(1))
    change(args)
    with pytest.raises(QMambaInputError, match=message):
        w8a8_linear_ref(**args)


@pytest.mark.parametrize("n", [12, 128, 384, 1536, 5120])
def test_rotation_is_the_hadamard_rotation_after_the_norm(n):
    """The twin's rotation in QmambaGatedNorm's form (``hadamard_rotation``) equals ``export/hadamard.rotate`` of
    the normed row (the model's own rotation), and Q of it the model's quantized out_proj input but at rounding
    ties."""
    from qmamba.export import hadamard
    from qmamba.runtime.gated_norm import hadamard_rotation
    from qmamba.runtime.w8a8_linear import activation_ref

    g = torch.Generator().manual_seed(n)
    x, w = torch.randn(3, 1, n, generator=g), torch.rand(n, generator=g) + 0.5
    got = activation_ref(x, w, 1e-5, 0, hadamard_rotation(n))
    want = hadamard.rotate(activation_ref(x, w, 1e-5, 0))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    q_got, q_want = ops.quantize(got, torch.tensor(0.01)), ops.quantize(want, torch.tensor(0.01))
    assert (q_got.int() - q_want.int()).abs().max() <= 1
