"""``qmamba bisect``'s CPU parts: which tensors it marks, the marked graph on ONNX Runtime, the prompts
and its errors. (The engine side needs TensorRT and a GPU.)"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from qmamba.cli import main
from qmamba.runtime.bisect import PROMPT_SHIFT, float_intermediates, marked, ort_run, two_prompts
from qmamba.runtime.ort import make_session


def small_graph() -> onnx.ModelProto:
    """x -> Relu -> Mul(2) -> Cast(int8) -> Cast(float) -> Add(x) -> y, with a Constant node."""
    nodes = [
        helper.make_node("Constant", [], ["two"], value=helper.make_tensor("v", TensorProto.FLOAT, [], [2.0])),
        helper.make_node("Relu", ["x"], ["relu_out"]),
        helper.make_node("Mul", ["relu_out", "two"], ["scaled"]),
        helper.make_node("Cast", ["scaled"], ["as_int8"], to=TensorProto.INT8),
        helper.make_node("Cast", ["as_int8"], ["back"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["back", "x"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_marks_float_intermediates_in_graph_order():
    model = small_graph()
    # Not the Constant, not the int8 tensor, not the graph output.
    assert float_intermediates(model) == ["relu_out", "scaled", "back"]
    assert float_intermediates(model, only="^(relu|back)") == ["relu_out", "back"]


def test_marked_graph_runs_and_returns_the_intermediates(tmp_path):
    model = small_graph()
    names = float_intermediates(model)
    path = tmp_path / "marked.onnx"
    onnx.save(marked(model, names), str(path))
    assert [o.name for o in model.graph.output] == ["y"]  # the original is left alone
    x = np.array([[-1.0, 0.5, 2.0], [3.0, -4.0, 0.25]], np.float32)
    got = ort_run(make_session(path), {"x": x})
    assert set(got) == {"y", *names}
    np.testing.assert_array_equal(got["relu_out"], np.maximum(x, 0))
    np.testing.assert_array_equal(got["scaled"], 2 * np.maximum(x, 0))
    np.testing.assert_array_equal(got["y"], got["back"] + x)


def test_two_overlapping_prompts(tmp_path):
    text = tmp_path / "t.txt"
    text.write_bytes(bytes(range(32, 127)))
    ids = two_prompts(text, 3, 10)
    assert ids.dtype == np.int64 and ids.shape == (2, 10)
    assert ids[0, 0] == 32 + 3 and ids[1, 0] == 32 + 3 + PROMPT_SHIFT
    np.testing.assert_array_equal(ids[0, PROMPT_SHIFT:], ids[1, :-PROMPT_SHIFT])


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["bisect", str(tmp_path)]) == 2   # not an export folder: bad input
    assert "qmamba bisect: error:" in capsys.readouterr().err
    text = tmp_path / "short.txt"
    text.write_bytes(b"too short")
    with pytest.raises(ValueError, match=r"short.txt holds 9 bytes; at least 45 are needed"):
        two_prompts(text, 0, 40)
    with pytest.raises(ValueError, match="--length"):
        two_prompts(text, 0, 0)
    with pytest.raises(ValueError, match="--offset must be >= 0"):
        two_prompts(text, -1, 4)
