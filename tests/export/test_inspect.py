"""``qmamba inspect`` on the real layer-0 scales of quamba2-130m-w8a8."""
from __future__ import annotations

import json

import pytest
import torch

from qmamba.export.inspect import format_report, quantization_kind, report

SEED_130M_X = [[0.0078, 0.0112, 0.0316, 0.0518],
               [0.0065, 0.0063, 0.0208, 0.0166],
               [0.0066, 0.0111, 0.0214, 0.0093],
               [0.0057, 0.0191, 0.0131, 0.0137]]


def test_report_of_seed_values(tmp_path):
    P = "backbone.layers.0.mixer.conv1d."
    sd = {P + "x_out_scales": torch.tensor([SEED_130M_X]), P + "B_out_scales": torch.tensor([0.0753]),
          P + "C_out_scales": torch.tensor([0.1190]), P + "x_scale": 0.0643, P + "wx_scale": 0.0092}
    (tmp_path / "config.json").write_text(json.dumps({"d_model": 768, "n_layer": 1,
                                                      "ssm_cfg": {"layer": "W8A8QMamba2"}}))
    torch.save(sd, tmp_path / "pytorch_model.bin")
    L0 = report(tmp_path)["layers"][0]
    assert L0["kind"] == "head x dim groups" and L0["x_out_scales_shape"] == [1, 4, 4]
    st = L0["x_out_scales"]
    assert (st["min"], st["max"]) == pytest.approx((0.0057, 0.0518))
    assert st["mean"] == pytest.approx(0.0158, abs=5e-5) and st["std"] == pytest.approx(0.0119, abs=5e-5)
    # SEED.md: 2.7x across head groups (0.0518 vs 0.0191), 6.6x across dim groups (0.0518 vs 0.0078)
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
