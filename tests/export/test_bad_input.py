"""Bad input gets an error naming the layer (or op), the tensor and what is wrong."""
from __future__ import annotations

import copy

import pytest
import torch

from qmamba.export.calibrate import calibrate_model
from qmamba.export.checkpoint import load_quantized, save_quantized
from qmamba.export.float_mixer import mixer_dims
from qmamba.export.qmodel import QuantConfig, QuantMamba2LM
from qmamba.export.validate import QMambaInputError

from qm_helpers import tiny_mamba2


@pytest.fixture()
def model(tiny_calibrated):
    return copy.deepcopy(tiny_calibrated.model)


def test_forward_rejects_wrong_ids_and_states(model):
    ids = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(QMambaInputError, match="input_ids must be torch.int64, got torch.int32"):
        model(ids.int())
    with pytest.raises(QMambaInputError, match=r"input_ids must have shape \[\*, \*\], got \[4\]"):
        model(ids[0])
    with pytest.raises(QMambaInputError, match=r"input_ids must be in \[0, 256\), got \[0, 300\]"):
        model(torch.tensor([[0, 300]]))
    _, states = model(ids)
    bad = list(states)
    bad[1] = (states[1][0], states[1][1].float())
    with pytest.raises(QMambaInputError, match="layer 1: ssm_state must be torch.int8, got torch.float32"):
        model(ids[:, :1], bad)
    bad[1] = (states[1][0][:, :2], states[1][1])
    with pytest.raises(QMambaInputError, match=r"layer 1: conv_state must have shape \[1, 3, 192\], got \[1, 2, 192\]"):
        model(ids[:, :1], bad)
    with pytest.raises(QMambaInputError, match="states must hold 2 layers, got 1"):
        model(ids[:, :1], states[:1])


@pytest.mark.parametrize("name,value,message", [
    ("x_out_scales", float("nan"), "layer 1 mixer: x_out_scales has non-finite values"),
    ("x_out_scales", 0.0, "layer 1 mixer: x_out_scales must be > 0 everywhere"),
    ("ssm_state_scale", -1.0, "layer 1 mixer: ssm_state_scale must be > 0 everywhere"),
    ("B_out_scales", float("inf"), "layer 1 mixer: B_out_scales has non-finite values"),
])
def test_non_finite_or_non_positive_scales(model, name, value, message):
    t = getattr(model.layers[1].mixer, name)
    t.view(-1)[0] = value
    with pytest.raises(QMambaInputError, match=message):
        model.validate()


def test_bad_scalar_scale(model):
    model.layers[0].mixer.wx_scale.fill_(0.0)
    with pytest.raises(QMambaInputError, match="layer 0 mixer: scale wx_scale must be finite and > 0, got 0.0"):
        model.validate()
    with pytest.raises(QMambaInputError, match="QuantConv1dSiLU: scale wx_scale must be finite and > 0"):
        model(torch.zeros(1, 2, dtype=torch.long))


def test_bad_group_ranges(model):
    m = model.layers[0].mixer
    m.x_head_group_range[1] = torch.tensor([1, 3, 2, 4], dtype=torch.int32)
    with pytest.raises(QMambaInputError, match=r"layer 0 mixer: x_head_group_range\[1\] = \[1, 3, 2, 4\] "
                                               "must be strictly increasing"):
        model.validate()
    m.x_head_group_range[1] = torch.tensor([1, 2, 3, 5], dtype=torch.int32)
    with pytest.raises(QMambaInputError, match=r"x_head_group_range\[1\] = \[1, 2, 3, 5\] must end at "
                                               "heads per SSD group = 4"):
        model.validate()
    m.x_head_group_range[1] = torch.tensor([1, 2, 3, 4], dtype=torch.int32)
    m.x_dim_group_range[0, 2] = torch.tensor([4, 8, 12, 15], dtype=torch.int32)
    with pytest.raises(QMambaInputError, match=r"x_dim_group_range\[0, 2\] = \[4, 8, 12, 15\] must end at headdim = 16"):
        model.validate()
    m.x_dim_group_range[0, 2] = torch.tensor([0, 8, 12, 16], dtype=torch.int32)
    with pytest.raises(QMambaInputError, match="cumulative ends > 0"):
        model.validate()
    m.x_dim_group_range = m.x_dim_group_range.long()
    with pytest.raises(QMambaInputError, match="layer 0 mixer: x_dim_group_range must be torch.int32, got torch.int64"):
        model.validate()


def test_ngroups_must_divide_heads():
    f = tiny_mamba2(n_groups=2)
    f.backbone.layers[0].mixer.n_groups = 3
    with pytest.raises(QMambaInputError, match="layer 0: ngroups=3 does not divide nheads=8"):
        mixer_dims(f.backbone.layers[0].mixer)
    cfg = dict(vocab_size=256, d_model=64, n_layer=1, nheads=8, headdim=16, d_state=16, ngroups=3, d_conv=4)
    with pytest.raises(QMambaInputError, match="config: ngroups=3 does not divide nheads=8"):
        QuantMamba2LM(QuantConfig(**cfg))
    cfg.update(ngroups=2, n_head_groups=5)
    with pytest.raises(QMambaInputError, match="n_head_groups=5 exceeds the 4 heads per SSD group"):
        QuantMamba2LM(QuantConfig(**cfg))


def test_checkpoint_missing_key_and_wrong_dtype(model, tmp_path):
    from safetensors.torch import load_file, save_file

    save_quantized(model, tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    x = tensors.pop("layers.1.mixer.x_out_scales")
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(QMambaInputError, match=r"layer 1 mixer: x_out_scales is missing \(key layers.1.mixer.x_out_scales\)"):
        load_quantized(tmp_path)
    tensors["layers.1.mixer.x_out_scales"] = x.double()
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(QMambaInputError, match="layer 1 mixer: x_out_scales must be torch.float32, got torch.float64"):
        load_quantized(tmp_path)
    tensors["layers.1.mixer.x_out_scales"] = x[:, :2].contiguous()
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(QMambaInputError, match=r"layer 1 mixer: x_out_scales must have shape \[2, 4, 4\], got \[2, 2, 4\]"):
        load_quantized(tmp_path)
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        load_quantized(tmp_path / "nowhere")


def test_calibration_input_errors(tiny_float):
    with pytest.raises(QMambaInputError, match="data must be bytes or a LongTensor"):
        calibrate_model(tiny_float, "text as str", progress=False)
    with pytest.raises(QMambaInputError, match="fewer than one window of 256"):
        calibrate_model(tiny_float, b"short", progress=False)
    with pytest.raises(QMambaInputError, match="observer must be one of"):
        calibrate_model(tiny_float, b"x" * 300, observer="mse", progress=False)
    with pytest.raises(QMambaInputError, match="n_head_groups=5 exceeds the 4 heads per SSD group"):
        calibrate_model(tiny_float, b"x" * 300, n_head_groups=5, progress=False)
    with pytest.raises(QMambaInputError, match="hadamard needs d_ssm"):
        calibrate_model(tiny_mamba2(hidden_size=36, num_heads=8, head_dim=9), b"x" * 300,
                        hadamard=True, progress=False)
