"""validate_onnx_model refuses an exported graph whose parameters are not finite or whose scales
are not > 0, naming the file and the initializer."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from qmamba.errors import BadInputError
from qmamba.runtime.onnx_validate import validate_onnx_model

from tiny_models import exported_tiny_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    _, out = exported_tiny_model("g1", tmp_path_factory.mktemp("params"))
    return out


def set_initializer(src, dst, name: str, value: float, index=0):
    """Copies the ONNX file ``src`` to ``dst`` with element ``index`` of initializer ``name`` set."""
    model = onnx.load(str(src))
    init = next(t for t in model.graph.initializer if t.name == name)
    arr = numpy_helper.to_array(init).copy()
    arr.reshape(-1)[index] = value
    init.CopyFrom(numpy_helper.from_array(arr, name))
    onnx.save(model, str(dst))
    return dst


@pytest.mark.parametrize("graph, name, value, message", [
    ("prefill", "layers.0.mixer.A_log", np.nan,
     r"prefill.onnx: initializer layers.0.mixer.A_log holds 1 non-finite value\(s\) \(first nan at index \[0\]\)"),
    ("decode", "layers.1.mixer.x_out_scales", 0.0,
     r"decode.onnx: scale layers.1.mixer.x_out_scales \(a scale of node layers.1.mixer.conv \(QuantConv1dSiLU\)\) "
     r"must be > 0, got 0.0 at index \[0, 0, 0\]"),
    ("prefill", "lm_head.weight_scale", np.inf, r"initializer lm_head.weight_scale holds 1 non-finite"),
    ("prefill", "layers.0.mixer.in_proj.input_scale", -0.5,
     r"scale layers.0.mixer.in_proj.input_scale \(a scale of node .*QuantizeLinear\)\) must be > 0, got -0.5"),
    ("decode", "embedding.scale", -1.0, r"scale embedding.scale .*DequantizeLinear.* must be > 0, got -1.0"),
    ("decode", "layers.0.mixer.in_proj.weight_scale", 0.0,
     r"scale layers.0.mixer.in_proj.weight_scale \(named as a scale\) must be > 0"),
    ("prefill", "layers.1.mixer.ssm_state_scale", -np.inf, r"initializer layers.1.mixer.ssm_state_scale holds"),
    ("prefill", "norm_f.weight", np.nan, r"initializer norm_f.weight holds"),
])
def test_bad_parameters_are_refused_by_name(exported, tmp_path, graph, name, value, message):
    bad = set_initializer(exported / f"{graph}.onnx", tmp_path / f"{graph}.onnx", name, value, index=0)
    with pytest.raises(BadInputError, match=message):
        validate_onnx_model(bad)


def test_the_exported_graphs_pass(exported):
    for graph in ("prefill", "decode"):
        assert validate_onnx_model(exported / f"{graph}.onnx") == {"QuantConv1dSiLU": 2, "QuantSSD": 2}
