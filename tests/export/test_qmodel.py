"""QuantMamba2LM: reordering, the float trace, prefill vs decode, checkpoints, the op seam."""
from __future__ import annotations

import pytest
import torch

from qmamba.export import ops
from qmamba.export.checkpoint import load_quantized, save_quantized
from qmamba.export.float_mixer import float_forward, state_absmax_all_tokens, trace_mixer
from qmamba.export.grouping import apply_layout

from qm_helpers import byte_tokens, contract_tables, tiny_mamba2


def _ids(text: bytes, start: int, n: int, batch: int = 1) -> torch.Tensor:
    return torch.stack([byte_tokens(text[start + b * n: start + (b + 1) * n]) for b in range(batch)])


def test_reordered_float_model_gives_the_same_logits(tiny_float, tiny_calibrated, shakespeare):
    ids = _ids(shakespeare, 5000, 96, batch=2)
    with torch.no_grad():
        ref = tiny_float(ids).logits
        got = tiny_calibrated.float_model(ids).logits
    # only fp32 summation order changes (in_proj/out_proj dot products over permuted channels)
    assert torch.allclose(got, ref, rtol=0, atol=2e-5 * ref.abs().max())
    # the layout really moved channels: some layer is not the identity
    assert any(not torch.equal(lay.channel_perm, torch.arange(lay.channel_perm.numel()))
               for lay in tiny_calibrated.layouts)
    # and apply_layout on its own is a pure permutation (the copy differs, the source is intact)
    again = apply_layout(tiny_float, tiny_calibrated.layouts)
    for a, b in zip(again.state_dict().values(), tiny_calibrated.float_model.state_dict().values()):
        assert torch.equal(a, b)


def test_float_trace_matches_transformers_mixer():
    m = tiny_mamba2(seed=3, n_groups=4, chunk_size=16)
    mixer = m.backbone.layers[1].mixer
    u = torch.randn(2, 40, 64)
    with torch.no_grad():
        ref = mixer(u)
    t = trace_mixer(mixer, u)
    assert torch.allclose(t.out, ref, atol=1e-5 * ref.abs().max())
    # the state absmax covers the final state, which a sequential scan gives
    assert t.state_absmax.shape == (8, 16, 16) and (t.state_absmax > 0).all()


def test_state_absmax_covers_every_token():
    torch.manual_seed(0)
    bt, L, h, p, n = 2, 45, 3, 4, 5
    x, Bh = torch.randn(bt, L, h, p), torch.randn(bt, L, h, n)
    dt, A = torch.rand(bt, L, h) * 0.5, -torch.rand(h) * 2
    S, amax = torch.zeros(bt, h, p, n), torch.zeros(h, p, n)
    for t in range(L):                                   # the plain recurrence, token by token
        S = torch.exp(dt[:, t] * A)[..., None, None] * S + (dt[:, t, :, None] * x[:, t])[..., None] * Bh[:, t, :, None, :]
        amax = torch.maximum(amax, S.abs().amax(0))
    assert torch.allclose(state_absmax_all_tokens(x, dt, A, Bh, chunk=8), amax, rtol=1e-5, atol=1e-6)


def test_float_forward_matches_transformers(tiny_float, shakespeare):
    ids = _ids(shakespeare, 100, 70, batch=2)
    with torch.no_grad():
        ref = tiny_float(ids).logits
        got = tiny_float.lm_head(float_forward(tiny_float, ids))
    assert torch.allclose(got, ref, atol=1e-5 * ref.abs().max())


def test_quantized_model_shapes_and_layout(tiny_calibrated):
    q = tiny_calibrated.model
    c = q.config
    assert (c.ngroups, c.n_head_groups, c.n_dim_groups) == (2, 4, 4)
    mx = q.layers[0].mixer
    assert mx.x_out_scales.shape == (2, 4, 4) and mx.ssm_state_scale.shape == (2, 4, 4, 16)
    assert mx.x_head_group_range[:, -1].tolist() == [4, 4]
    assert (mx.x_dim_group_range[..., -1] == 16).all()
    assert set(mx.conv_op_tensors()) == {"weight", "bias", "x_out_scales", "B_out_scales",
                                         "C_out_scales", "x_head_group_range", "x_dim_group_range"}


def test_op_names_are_the_contract(tiny_calibrated):
    """conv_op_* / ssd_op_* give exactly the inputs and attributes of docs/ops.md's tables."""
    spec = contract_tables()
    mx = tiny_calibrated.model.layers[0].mixer
    conv_in = [n for n, _ in spec["QuantConv1dSiLU"]["inputs"]]
    assert list(mx.conv_op_tensors()) == conv_in[1:8]
    assert set(mx.conv_op_attributes()) == set(spec["QuantConv1dSiLU"]["attributes"])
    ssd_in = [n for n, _ in spec["QuantSSD"]["inputs"]]
    assert list(mx.ssd_op_tensors()) == ssd_in[4:13]
    assert set(mx.ssd_op_attributes()) == set(spec["QuantSSD"]["attributes"])


def test_prefill_then_one_decode_step_equals_longer_prefill(tiny_calibrated, shakespeare):
    """docs/ops.md "Decode equals prefill": L tokens + 1 decode step vs L + 1 tokens at once."""
    q = tiny_calibrated.model
    ids = _ids(shakespeare, 300, 41, batch=2)          # inside the calibration text
    full, s_full = q(ids)
    _, s = q(ids[:, :40])
    step, s_step = q(ids[:, 40:41], s)
    # layer 0 sees identical inputs: conv state exact; the SSM state went through one extra
    # int8 rounding (|err| <= 0.5 LSB before the final rounding), so it is within 1 LSB
    assert torch.equal(s_step[0][0], s_full[0][0])
    d0 = (s_step[0][1].int() - s_full[0][1].int()).abs()
    assert d0.max() <= 1
    # later layers see that difference through layer 0's output: still within 1 LSB almost
    # everywhere, and the logits agree closely
    for (c1, h1), (c2, h2) in zip(s_step, s_full):
        assert ((c1.int() - c2.int()).abs() <= 1).all()
        assert ((h1.int() - h2.int()).abs() <= 1).float().mean() > 0.99
    err = (step[:, 0] - full[:, -1]).abs().max() / full[:, -1].abs().max()
    assert err < 0.02, err


def test_l_decode_steps_track_prefill(tiny_calibrated, shakespeare):
    """L single-token steps vs one prefill of L tokens. A decode step rounds the SSM state after
    every token; each rounding adds <= 0.5 LSB that then decays by exp(dt*A) <= 1, so the states
    drift apart by a few LSB at most (bounded by 0.5 * L), not by chance saturations."""
    q = tiny_calibrated.model
    L = 24
    ids = _ids(shakespeare, 700, L)
    pre, s_pre = q(ids)
    states, outs = None, []
    for t in range(L):
        o, states = q(ids[:, t:t + 1], states)
        outs.append(o)
    dec = torch.cat(outs, dim=1)
    assert torch.equal(states[0][0], s_pre[0][0])              # conv state of layer 0: exact
    for (_, h1), (_, h2) in zip(states, s_pre):
        d = (h1.int() - h2.int()).abs()
        assert d.max() <= 0.5 * L and d.float().mean() < 1.0
    rel = (dec - pre).norm() / pre.norm()
    assert rel < 0.05, rel
    assert (dec.argmax(-1) == pre.argmax(-1)).float().mean() > 0.9


def test_checkpoint_round_trip_is_bit_exact(tiny_calibrated, shakespeare, tmp_path):
    q = tiny_calibrated.model
    save_quantized(q, tmp_path / "ck")
    q2 = load_quantized(tmp_path / "ck")
    assert q2.config == q.config
    for (k, a), (k2, b) in zip(q.state_dict().items(), q2.state_dict().items()):
        assert k == k2 and a.dtype == b.dtype and torch.equal(a, b), k
    ids = _ids(shakespeare, 900, 33)
    assert torch.equal(q(ids)[0], q2(ids)[0])


def test_ops_backend_seam(tiny_calibrated, shakespeare):
    q = tiny_calibrated.model
    ids = _ids(shakespeare, 0, 8)
    q(ids)
    assert q.last_ops_backend == "reference"
    mx = q.layers[0].mixer
    # the model's conv/SSD steps are the reference twins themselves
    z, xBC, dt = mx.in_proj_step(mx.in_proj.quantize_input(q.layers[0].norm(q.embedding(ids))))
    x, B, C, _ = mx.conv_step(xBC)
    x2, B2, C2, _ = ops.quant_conv1d_silu_ref(xBC, *mx.conv_op_tensors().values(), **mx.conv_op_attributes())
    assert torch.equal(x, x2) and torch.equal(B, B2) and torch.equal(C, C2)
    try:
        import qmamba.export.kernels  # noqa: F401
        have_kernels = torch.cuda.is_available()
    except ImportError:
        have_kernels = False
    if not have_kernels:
        q.ops_backend = "kernels"
        try:
            with pytest.raises((RuntimeError, ValueError)):
                q(ids)
        finally:
            q.ops_backend = "reference"


@pytest.mark.parametrize("device", [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU")])])
def test_calibration_runs_on_the_float_models_device(tiny_float, shakespeare, device):
    """calibrate() with the Hadamard rotation on a float model that lives on ``device``: the
    windows and the rotation go there, the W8A8 model comes back there (every buffer), and
    x_quantization_error takes tokens from anywhere."""
    import copy

    from qmamba.export import hadamard as had
    from qmamba.export.calibrate import calibrate, x_quantization_error
    from qmamba.models import ensure_grouped_norm

    assert had.rotation_matrix(128, device=device).device.type == device
    # Per-group gated norm whatever the installed transformers does (5.17, the GPU device's, normalizes
    # over all d_ssm): the reference logits must be the function the W8A8 model quantizes.
    float_model = ensure_grouped_norm(copy.deepcopy(tiny_float).to(device))
    cal = calibrate(float_model, shakespeare, num_samples=4, seq_len=64, hadamard=True,
                    progress=False)
    assert {t.device.type for t in cal.model.buffers()} == {device}
    assert {t.device.type for t in cal.float_model.parameters()} == {device}
    ids = _ids(shakespeare, 2000, 64, batch=2)                 # CPU tokens: moved by the callee
    assert all(0 < e < 0.1 for e in x_quantization_error(cal, ids))
    with torch.no_grad():
        ref = float_model(ids.to(device)).logits
    got, _ = cal.model(ids.to(device))
    assert got.device.type == device
    assert float((got - ref).norm() / ref.norm()) < 0.15
