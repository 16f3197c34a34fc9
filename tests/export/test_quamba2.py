"""Quamba2 W8A8 checkpoints: written here with the exact key layout of enyac-group/Quamba
(``W8A8QMamba2``: conv1d / qchunk_scan / norm / had / in_proj / out_proj, W8O16Embedding,
QRMSNorm, W8A8B16O16Linear lm_head, ``torch.save`` with Python-float scalars), for a 130m-like
(g = 1, Hadamard of order 12 * 2^k) and an 8b-like (g = 8) shape, then loaded and run."""
from __future__ import annotations

import json

import pytest
import torch

from qmamba.export.calibrate import calibrate
from qmamba.export.inspect import format_report, report
from qmamba.export.quamba2 import load_quamba2
from qmamba.export.validate import QMambaInputError

from qm_helpers import byte_tokens, tiny_mamba2

SHAPES = {
    # d_ssm = 48 = 12 * 4 like 130m's 1536 = 12 * 128; one SSD group
    "130m-like": dict(hidden_size=24, num_heads=8, head_dim=6, n_groups=1, state_size=8),
    # eight SSD groups of 4 heads like 8b (ngroups 8); d_ssm = 128, a power of two
    "8b-like": dict(hidden_size=64, num_heads=32, head_dim=4, n_groups=8, state_size=8),
}


def _pad16(n: int) -> int:
    return (16 - n % 16) % 16


def _quamba_linear_weight(w_int8: torch.Tensor) -> torch.Tensor:
    """Quamba2 stores int8 ``[out, in]`` padded to 16 rows and transposed: ``[in, out + pad]``."""
    pad = _pad16(w_int8.shape[0])
    return torch.nn.functional.pad(w_int8, (0, 0, 0, pad)).t()


def _per_tensor(q_lin) -> tuple[torch.Tensor, float]:
    """Quamba2's out_proj / lm_head have one weight scale: requantize our per-row weights."""
    w = q_lin.weight.float() * q_lin.weight_scale[:, None]
    s = float(w.abs().max()) / 127.0
    return torch.round(w / s).clamp(-128, 127).to(torch.int8), s


def _int8_with_scale(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s = v.abs().max() / 127.0
    return torch.round(v / s).to(torch.int8), s.float().reshape(())


def write_quamba2(model, directory, grouped: bool = True) -> dict:
    """Writes ``model`` as a Quamba2 W8A8 checkpoint (the same keys, dtypes and layouts)."""
    c = model.config
    sd: dict = {}
    sd["backbone.embedding.weight"] = model.embedding.weight.clone()
    sd["backbone.embedding.scales"] = model.embedding.scale.half()
    for i, layer in enumerate(model.layers):
        P = f"backbone.layers.{i}."
        m = layer.mixer
        s_u = float(m.in_proj.input_scale)
        sd[P + "norm.weight"] = layer.norm.weight.half()
        sd[P + "norm.output_scale"] = s_u
        sizes = m.in_proj_split_sizes()
        seg = torch.cat([torch.full((n,), float(getattr(m, f"{k}_scale")))
                         for k, n in zip(("z", "x", "B", "C", "dt"), sizes)])
        sd[P + "mixer.in_proj.weight"] = _quamba_linear_weight(m.in_proj.weight)
        sd[P + "mixer.in_proj.a"] = torch.tensor([[s_u]])
        b = m.in_proj.weight_scale / seg
        sd[P + "mixer.in_proj.b"] = torch.nn.functional.pad(b, (0, _pad16(b.numel())))[None]
        C = P + "mixer.conv1d."
        sd[C + "weight"], sd[C + "bias"] = m.conv_weight.clone(), m.conv_bias.clone()
        for k in ("x_scale", "B_scale", "C_scale", "wx_scale", "wB_scale", "wC_scale",
                  "bx_scale", "bB_scale", "bC_scale"):
            sd[C + k] = float(getattr(m, k))
        S = P + "mixer.qchunk_scan."
        if grouped:
            sd[C + "x_head_group_range"] = m.x_head_group_range.clone()
            sd[C + "x_dim_group_range"] = m.x_dim_group_range.clone()
            sd[C + "x_out_scales"] = m.x_out_scales.clone()
            sd[S + "x_scales"] = m.x_out_scales.clone()
            sd[S + "x_head_group_range"] = m.x_head_group_range.clone()
            sd[S + "x_dim_group_range"] = m.x_dim_group_range.clone()
            sd[S + "ssm_state_scale"] = m.ssm_state_scale.clone()
            sd[S + "B_scale"], sd[S + "C_scale"] = m.B_out_scales.clone(), m.C_out_scales.clone()
        else:
            sd[C + "x_out_scales"] = m.x_out_scales.reshape(-1)[:1].clone()
            sd[S + "x_scales"] = m.x_out_scales.reshape(-1)[:1].clone()
            sd[S + "ssm_state_scale"] = m.ssm_state_scale.reshape(-1)[:1].clone()
            sd[S + "B_scale"], sd[S + "C_scale"] = m.B_out_scales[:1].clone(), m.C_out_scales[:1].clone()
        sd[C + "B_out_scales"], sd[C + "C_out_scales"] = m.B_out_scales.clone(), m.C_out_scales.clone()
        sd[S + "dt_bias"] = m.dt_bias.half()
        sd[S + "A_log"], sd[S + "A_log_scale"] = _int8_with_scale(m.A_log)
        sd[S + "D"], sd[S + "D_scale"] = _int8_with_scale(m.D)
        sd[S + "dt_scale"] = m.dt_scale.clone()
        sd[P + "mixer.norm.weight"] = m.norm.weight.half()
        sd[P + "mixer.norm.z_scale"] = float(m.z_scale)
        sd[P + "mixer.norm.output_scale"] = None            # use_float16_output=True
        s_o = float(m.out_proj.input_scale)
        sd[P + ("mixer.had.x_H_scale" if c.hadamard else "mixer.had.scale")] = s_o
        w, s = _per_tensor(m.out_proj)
        sd[P + "mixer.out_proj.weight"] = _quamba_linear_weight(w)
        sd[P + "mixer.out_proj.a"], sd[P + "mixer.out_proj.b"] = torch.tensor([[s_o]]), torch.tensor([[s]])
        sd[P + "mixer.out_proj.alpha"] = s * s_o
    s_f = float(model.lm_head.input_scale)
    sd["backbone.norm_f.weight"] = model.norm_f.weight.half()
    sd["backbone.norm_f.output_scale"] = s_f
    w, s = _per_tensor(model.lm_head)
    sd["lm_head.weight"] = _quamba_linear_weight(w)
    sd["lm_head.a"], sd["lm_head.b"], sd["lm_head.alpha"] = torch.tensor([[s_f]]), torch.tensor([[s]]), s * s_f
    conf = {"d_model": c.d_model, "d_intermediate": 0, "n_layer": c.n_layer, "vocab_size": c.vocab_size,
            "ssm_cfg": {"layer": "W8A8QMamba2", "d_state": c.d_state, "headdim": c.headdim,
                        "ngroups": c.ngroups, "expand": 2, "d_conv": c.d_conv},
            "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
            "pad_vocab_size_multiple": 8, "tie_embeddings": False, "norm_cfg": {"norm": "QRMSNorm"},
            "embedding_cfg": {"layer": "W8O16Embedding"}, "lm_head_cfg": {"layer": "W8A8B16O16Linear"},
            "is_hybrid": False}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(conf))
    torch.save(sd, directory / "pytorch_model.bin")
    return sd


@pytest.fixture(scope="module", params=list(SHAPES))
def quamba2_case(request, shakespeare, tmp_path_factory):
    f = tiny_mamba2(seed=1, num_hidden_layers=2, expand=2, conv_kernel=4, chunk_size=32,
                    **SHAPES[request.param])
    q = calibrate(f, shakespeare, num_samples=4, seq_len=128, hadamard=True, progress=False).model
    d = tmp_path_factory.mktemp(request.param)
    sd = write_quamba2(q, d)
    return request.param, q, d, sd


def test_quamba2_checkpoint_loads_and_runs(quamba2_case, shakespeare):
    name, q, d, sd = quamba2_case
    loaded = load_quamba2(d)
    c = loaded.config
    assert (c.ngroups, c.n_head_groups, c.n_dim_groups, c.hadamard) == (q.config.ngroups, 4, 4, True)
    for i, (a, b) in enumerate(zip(loaded.layers, q.layers)):
        for k in ("conv_weight", "conv_bias", "x_out_scales", "B_out_scales", "C_out_scales",
                  "x_head_group_range", "x_dim_group_range", "ssm_state_scale"):
            assert torch.equal(getattr(a.mixer, k), getattr(b.mixer, k)), (i, k)
        assert torch.equal(a.mixer.in_proj.weight, b.mixer.in_proj.weight)
        assert torch.allclose(a.mixer.in_proj.weight_scale, b.mixer.in_proj.weight_scale, rtol=1e-6)
        assert float(a.mixer.x_scale) == float(b.mixer.x_scale)
    ids = byte_tokens(shakespeare[2000:2064])[None]
    ref, _ = q(ids)
    got, states = loaded(ids)
    # differences only from what Quamba2 stores coarser: fp16 norm weights / dt_bias / embedding
    # scales, int8 A_log and D, one weight scale for out_proj and lm_head
    rel = (got - ref).norm() / ref.norm()
    assert rel < 0.1, (name, rel)
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() > 0.8
    step, _ = loaded(byte_tokens(shakespeare[2064:2065])[None], states)
    full, _ = loaded(byte_tokens(shakespeare[2000:2065])[None])
    assert (step[0, -1] - full[0, -1]).abs().max() < 0.05 * full[0, -1].abs().max()


def test_inspect_tells_the_kind_from_the_shape(quamba2_case):
    name, q, d, _ = quamba2_case
    rep = report(d)
    assert rep["format"] == "quamba2" and rep["n_layer"] == 2
    L0 = rep["layers"][0]
    if name == "130m-like":
        assert L0["x_out_scales_shape"] == [1, 4, 4] and L0["kind"] == "head x dim groups"
    else:
        assert L0["x_out_scales_shape"] == [8, 4, 4]
        assert L0["kind"] == "SSD group x head x dim groups" and L0["B_out_scales_shape"] == [8]
    x = q.layers[0].mixer.x_out_scales
    assert L0["x_out_scales"]["max"] == pytest.approx(float(x.max()))
    row_max = x.amax(2)
    assert L0["head_group_spread"] == pytest.approx(float((row_max.amax(1) / row_max.amin(1)).max()))
    assert L0["dim_group_spread"] == pytest.approx(float((x.amax(2) / x.amin(2)).max()))
    assert "layer 0 x_out_scales[0]:" in format_report(rep)


def test_quamba2_missing_or_inconsistent_keys(quamba2_case, tmp_path):
    _, q, _, sd = quamba2_case
    bad = dict(sd)
    del bad["backbone.layers.1.mixer.conv1d.x_out_scales"]
    d = tmp_path / "missing"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"d_model": q.config.d_model, "n_layer": 2,
                                               "ssm_cfg": {"ngroups": q.config.ngroups}}))
    torch.save(bad, d / "pytorch_model.bin")
    with pytest.raises(QMambaInputError, match=r"layer 1 mixer.conv1d: x_out_scales is missing"):
        load_quamba2(d)
    bad = dict(sd)
    bad["backbone.layers.0.mixer.qchunk_scan.x_scales"] = sd["backbone.layers.0.mixer.qchunk_scan.x_scales"] * 2
    torch.save(bad, d / "pytorch_model.bin")
    with pytest.raises(QMambaInputError, match=r"layer 0 mixer.conv1d: x_out_scales and layer 0 "
                                               r"mixer.qchunk_scan: x_scales must hold the same"):
        load_quamba2(d)


def test_per_tensor_quamba2_checkpoint(shakespeare, tmp_path):
    f = tiny_mamba2(seed=2, **SHAPES["130m-like"])
    q = calibrate(f, shakespeare, num_samples=2, seq_len=128, per_tensor=True, progress=False).model
    write_quamba2(q, tmp_path, grouped=False)
    loaded = load_quamba2(tmp_path)
    assert loaded.config.per_tensor and loaded.layers[0].mixer.x_out_scales.shape == (1, 1, 1)
    assert report(tmp_path)["layers"][0]["kind"] == "per-tensor"
    ids = byte_tokens(shakespeare[:32])[None]
    assert torch.isfinite(loaded(ids)[0]).all()
