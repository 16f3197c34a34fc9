"""`qmamba build` and the TensorRT-RTX check validate the exported graphs before TensorRT is loaded:
a NaN parameter or a zero scale is refused with the initializer's name, and nothing is written."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from qmamba.cli import main
from qmamba.errors import BadInputError, MissingFileError
from qmamba.runtime import build, trt_rtx, trt_runner
from qmamba.runtime.onnx_validate import validate_onnx_model

from tiny_models import exported_tiny_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return exported_tiny_model("g1", tmp_path_factory.mktemp("validated"))[1]


@pytest.fixture()
def no_tensorrt(monkeypatch):
    """Fails the test if anything reaches for TensorRT, its runner or the plugin library."""
    def reached(*_args, **_kwargs):
        raise AssertionError("TensorRT was reached before the graph was validated")
    for module, name in ((trt_runner, "tensorrt_python"), (trt_runner, "plugin_library"),
                         (trt_runner, "runner_library"), (trt_rtx, "load_trt_rtx")):
        monkeypatch.setattr(module, name, reached)


def _with_value(onnx_dir, out_dir, graph: str, name: str, value: float):
    """A copy of the export folder whose initializer ``name`` in ``graph`` has ``value`` first."""
    out_dir.mkdir()
    for f in onnx_dir.iterdir():
        (out_dir / f.name).write_bytes(f.read_bytes())
    model = onnx.load(str(out_dir / f"{graph}.onnx"))
    init = next(t for t in model.graph.initializer if t.name == name)
    arr = numpy_helper.to_array(init).copy()
    arr.reshape(-1)[0] = value
    init.CopyFrom(numpy_helper.from_array(arr, name))
    onnx.save(model, str(out_dir / f"{graph}.onnx"))
    return out_dir


@pytest.mark.parametrize("graph, name, value, words", [
    ("prefill", "layers.0.mixer.A_log", np.nan, "initializer layers.0.mixer.A_log holds 1 non-finite"),
    ("decode", "layers.1.mixer.x_out_scales", 0.0, "scale layers.1.mixer.x_out_scales"),
])
def test_build_refuses_bad_parameters_before_tensorrt(exported, tmp_path, no_tensorrt, capsys,
                                                      graph, name, value, words):
    bad = _with_value(exported, tmp_path / "onnx", graph, name, value)
    with pytest.raises(BadInputError, match=words):
        build.build_engines(bad, tmp_path / "engines")
    assert main(["build", str(bad), "-o", str(tmp_path / "engines")]) == 2
    assert words in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]


def test_trt_rtx_refuses_a_nan_parameter_before_loading(exported, tmp_path, no_tensorrt):
    bad = _with_value(exported, tmp_path / "onnx", "prefill", "layers.1.mixer.D", np.nan)
    with pytest.raises(BadInputError, match="initializer layers.1.mixer.D"):
        trt_rtx.parse_and_build(bad / "prefill.onnx")


def test_validate_names_a_missing_file(tmp_path):
    with pytest.raises(MissingFileError, match="prefill.onnx: no such ONNX file"):
        validate_onnx_model(tmp_path / "prefill.onnx")
