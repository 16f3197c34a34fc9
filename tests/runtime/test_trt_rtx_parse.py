"""TensorRT-RTX (CPU only) parses qmamba's ONNX graphs with the function bodies and builds a plan."""
from __future__ import annotations

import importlib.util

import onnx
import pytest

from qmamba.export import onnx_ops
from qmamba.runtime.trt_rtx import parse_and_build

from op_cases import OP_SHAPES, conv_case, ssd_case
from tiny_models import exported_tiny_model, tiny_quantized_model

pytestmark = [pytest.mark.tensorrt, pytest.mark.skipif(
    importlib.util.find_spec("tensorrt_rtx_bindings") is None,
    reason="TensorRT-RTX (tensorrt-rtx-cu13) is not installed")]


@pytest.mark.parametrize("op", list(onnx_ops.OPS))
@pytest.mark.parametrize("with_state", [False, True])
def test_single_op_graph_builds(tmp_path, op, with_state):
    case = conv_case if op == "QuantConv1dSiLU" else ssd_case
    acts, params, attrs = case(OP_SHAPES["8b-narrow"], 1, 5, with_state)
    path = tmp_path / f"{op}.onnx"
    onnx.save(onnx_ops.single_op_model(op, with_state, acts, params, attrs), path)
    report = parse_and_build(path)
    assert set(report.inputs) == set(acts)
    assert report.plan_bytes > 0


@pytest.mark.parametrize("kind", ["prefill", "decode"])
def test_two_factor_hadamard_graph_builds(tmp_path, kind):
    """The rotation as Reshape / MatMul by each Kronecker factor (a [f, f] factor broadcast against
    [batch, seq, f, post]) parses and builds."""
    from qmamba.export.onnx_export import export_onnx

    export_onnx(tiny_quantized_model("g1-384", n_layer=1, hadamard=True), tmp_path / "onnx")
    assert parse_and_build(tmp_path / "onnx" / f"{kind}.onnx").plan_bytes > 0


def test_function_free_graph_is_refused_without_plugin(tmp_path):
    """Without the body (and with no plugin registered) the parser must fail, naming the op."""
    acts, params, attrs = ssd_case(OP_SHAPES["8b-narrow"], 1, 5, False)
    path = tmp_path / "ssd.onnx"
    onnx.save(onnx_ops.single_op_model("QuantSSD", False, acts, params, attrs, functions=False), path)
    with pytest.raises(RuntimeError, match="QuantSSD"):
        parse_and_build(path)


@pytest.fixture(scope="module", params=["g1", "g8"])
def exported(request, tmp_path_factory):
    return exported_tiny_model(request.param, tmp_path_factory.mktemp(f"trt_rtx_{request.param}"))


@pytest.mark.parametrize("kind", ["prefill", "decode"])
def test_whole_model_graph_builds(exported, kind):
    """Both graphs of a two-layer model, function bodies inlined (two instances of each)."""
    model, out = exported
    report = parse_and_build(out / f"{kind}.onnx")
    n_states = 2 * model.config.n_layer
    assert len(report.inputs) == (1 if kind == "prefill" else 1 + n_states)
    assert report.inputs["input_ids"] == (-1, -1)
    assert report.plan_bytes > 0
