"""``qmamba inspect`` on the real layer-0 scales of the published quamba2-130m-w8a8 checkpoint."""
from __future__ import annotations

import json

import pytest
import torch

from qmamba.cli import main
from qmamba.export.inspect import format_report, quantization_kind, report

# Layer 0's x_out_scales [head group][dim group] in the released Quamba2 130m checkpoint's scales.
RELEASED_130M_X = [[0.0078, 0.0112, 0.0316, 0.0518],
               [0.0065, 0.0063, 0.0208, 0.0166],
               [0.0066, 0.0111, 0.0214, 0.0093],
               [0.0057, 0.0191, 0.0131, 0.0137]]


def write_quamba2_layer0(directory, x_out_scales=RELEASED_130M_X, B_out_scale=0.0753):
    P = "backbone.layers.0.mixer.conv1d."
    sd = {P + "x_out_scales": torch.tensor([x_out_scales]), P + "B_out_scales": torch.tensor([B_out_scale]),
          P + "C_out_scales": torch.tensor([0.1190]), P + "x_scale": 0.0643, P + "wx_scale": 0.0092}
    (directory / "config.json").write_text(json.dumps({"d_model": 768, "n_layer": 1,
                                                       "ssm_cfg": {"layer": "W8A8QMamba2"}}))
    torch.save(sd, directory / "pytorch_model.bin")


def test_report_of_released_scales(tmp_path):
    write_quamba2_layer0(tmp_path)
    L0 = report(tmp_path)["layers"][0]
    assert L0["kind"] == "head x dim groups" and L0["x_out_scales_shape"] == [1, 4, 4]
    st = L0["x_out_scales"]
    assert (st["min"], st["max"]) == pytest.approx((0.0057, 0.0518))
    assert st["mean"] == pytest.approx(0.0158, abs=5e-5) and st["std"] == pytest.approx(0.0119, abs=5e-5)
    # The released checkpoints' scales: 2.7x across head groups (0.0518 vs 0.0191), 6.6x across dim groups (0.0518 vs 0.0078)
    assert L0["head_group_spread"] == pytest.approx(0.0518 / 0.0191, rel=1e-5)
    assert L0["dim_group_spread"] == pytest.approx(0.0518 / 0.0078, rel=1e-5)
    assert L0["mean_x_out_over_wx"] == pytest.approx(1.72, abs=0.005)
    text = format_report(report(tmp_path))
    assert "head group 0: 0.0078 0.0112 0.0316 0.0518" in text


def test_kind_from_shape():
    assert quantization_kind(()) == "per-tensor"
    assert quantization_kind((1,)) == "per-tensor"
    assert quantization_kind((1536,)) == "per-channel"
    assert quantization_kind((1, 4, 4)) == "head x dim groups"
    assert quantization_kind((8, 4, 4)) == "SSD group x head x dim groups"


def test_non_finite_and_zero_scales_are_flagged(tmp_path, capsys):
    x = [row[:] for row in RELEASED_130M_X]
    x[1][2], x[3][0] = float("nan"), 0.0
    write_quamba2_layer0(tmp_path, x, B_out_scale=float("inf"))
    assert main(["inspect", str(tmp_path), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)  # strict JSON: no bare NaN / Infinity tokens
    L0 = rep["layers"][0]
    assert L0["x_out_scales"]["mean"] is None and L0["x_out_scales_grid"][0][1][2] is None
    assert L0["B_out_scales"] == [None]
    assert "layers[0].x_out_scales_grid[0][1][2]" in rep["non_finite"]
    assert "layers[0].B_out_scales[0]" in rep["non_finite"]
    assert L0["scale_problems"] == ["x_out_scales: 1 non-finite, 1 <= 0 of 16", "B_out_scales: 1 non-finite of 1"]
    assert main(["inspect", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "WARNING layer 0: x_out_scales: 1 non-finite, 1 <= 0 of 16" in text
    assert "WARNING layer 0: B_out_scales: 1 non-finite of 1" in text


def test_valid_scales_have_no_problems(tmp_path, capsys):
    write_quamba2_layer0(tmp_path)
    assert main(["inspect", str(tmp_path), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["non_finite"] == [] and rep["layers"][0]["scale_problems"] == []
