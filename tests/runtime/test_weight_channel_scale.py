"""weight_channel_scales (runtime/weight_channel_scale.py, `qmamba build --weight-channel-scales`): each W8A8
linear's output scale leaves its Mul for the weight's per-channel DequantizeLinear, checked without TensorRT:
which linears it takes and which it leaves, the new scale is the Mul's fp32 constant, ONNX Runtime gives the
same logits and states within fp32 rounding, TensorRT 8's Q/DQ rules still hold, and TensorRT-RTX (where
installed) parses and builds the rewritten graph."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qmamba.export.onnx_export import export_onnx
from qmamba.runtime.build import trt_graph
from qmamba.runtime.weight_channel_scale import weight_channel_scales

from tiny_models import tiny_quantized_model
from trt_helpers import ort_before_and_after, random_feed


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("g8")
    export_onnx(tiny_quantized_model("g8", hadamard=True), out, force=True)
    return {kind: onnx.load(str(out / f"{kind}.onnx")) for kind in ("prefill", "decode")}


def _copy(model):
    return onnx.ModelProto.FromString(model.SerializeToString())


def _linears(model):
    """(MatMul, the Mul of its output or None) of every MatMul whose weight is a transposed DequantizeLinear."""
    g = model.graph
    made = {o: n for n in g.node for o in n.output}
    users = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    out = []
    for n in g.node:
        if n.op_type == "MatMul" and made.get(n.input[1]) is not None and made[n.input[1]].op_type == "Transpose":
            mul = [u for u in users.get(n.output[0], []) if u.op_type == "Mul"]
            out.append((n, mul[0] if mul else None, made[made[n.input[1]].input[0]]))
    return out


@pytest.mark.parametrize("kind", ["prefill", "decode"])
def test_every_linear_takes_its_scale_into_the_weight(exported, kind, tmp_path):
    before = exported[kind]
    notes = {}
    after = weight_channel_scales(_copy(before), notes)
    old, new = _linears(before), _linears(after)
    n_layer = sum(n.op_type == "QuantSSD" for n in before.graph.node)
    assert len(old) == len(new) == 2 * n_layer + 1  # in_proj, out_proj, lm_head
    assert notes["weight_channel_scales"] == f"in the weights' DequantizeLinear of {len(new)} linears"
    inits = {t.name: numpy_helper.to_array(t) for t in after.graph.initializer}
    before_inits = {t.name: numpy_helper.to_array(t) for t in before.graph.initializer}
    for (mm, mul, dq), (mm2, mul2, dq2) in zip(old, new):
        assert mul is not None and mul2 is None and mm2.output[0] == mul.output[0]
        axis = next(a.i for a in dq2.attribute if a.name == "axis")
        scale = inits[dq2.input[1]]
        s_in, s_w = (before_inits[x] for x in next(n for n in before.graph.node if n.output[0] == mul.input[1]).input)
        assert axis == 0 and scale.dtype == np.float32 and scale.shape == (inits[dq2.input[0]].shape[0],)
        np.testing.assert_array_equal(scale, np.multiply(s_in, s_w, dtype=np.float32))
    seqlen = 1 if kind == "decode" else 29
    got, want = ort_before_and_after(before, after, random_feed(before, 2, seqlen, seed=5), tmp_path)
    logits, logits_ref = got[0], want[0]
    # each w * c rounded before the sum instead of the exact integer sum times c: fp32 rounding of the logits
    assert np.abs(logits - logits_ref).max() <= 1e-4 * np.abs(logits_ref).max()
    for a, b in zip(got[1:], want[1:]):  # int8 states: a rounding tie may move by one step
        assert np.abs(a.astype(np.int32) - b.astype(np.int32)).max() <= 1


def _linear_graph(extra_reader: bool, scale_dims=(3,)):
    """x [2, 4] -> MatMul(DQ(q), Transpose(DQ(W [3, 4]))) -> Mul(c) -> y, optionally with the MatMul's output
    also a graph output."""
    w = numpy_helper.from_array(np.arange(-6, 6, dtype=np.int8).reshape(3, 4), "w")
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    c = numpy_helper.from_array(np.full(scale_dims, 0.5, np.float32), "c")
    nodes = [helper.make_node("DequantizeLinear", ["w", "one"], ["wd"], name="dq"),
             helper.make_node("Transpose", ["wd"], ["wt"], perm=[1, 0], name="t"),
             helper.make_node("MatMul", ["x", "wt"], ["acc"], name="mm"),
             helper.make_node("Mul", ["acc", "c"], ["y"], name="mul")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_reader:
        outputs.append(helper.make_tensor_value_info("acc", TensorProto.FLOAT, None))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])], outputs,
                          [w, one, c])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("extra_reader, scale_dims", [(True, (3,)), (False, (1,)), (False, ())],
                         ids=["matmul-output-read-elsewhere", "scale-not-per-column", "scalar-scale"])
def test_what_it_leaves_alone(extra_reader, scale_dims):
    model = _linear_graph(extra_reader, scale_dims)
    notes = {}
    after = weight_channel_scales(_copy(model), notes)
    assert after.SerializeToString() == model.SerializeToString()
    assert notes["weight_channel_scales"] == "in the weights' DequantizeLinear of 0 linears"


def test_tensorrt8_graph_keeps_its_rules_and_tensorrt_rtx_builds_it(exported, tmp_path):
    """With the option, trt_graph for TensorRT 8 gives every per-channel weight DequantizeLinear a zero point
    shaped like its scale (the parser needs one), and no Mul follows a linear's MatMul; TensorRT-RTX parses and
    builds the TensorRT 10 graph of the prefill."""
    for major in (8, 10):
        notes = {}
        model = trt_graph(_copy(exported["prefill"]), major, notes=notes, channel_scales=True)
        inits = {t.name: t for t in model.graph.initializer}
        for mm, mul, dq in _linears(model):
            assert mul is None
            assert len(dq.input) == 3 and list(inits[dq.input[2]].dims) == list(inits[dq.input[1]].dims)
            assert inits[dq.input[2]].data_type == TensorProto.INT8
        assert not [n for n in model.graph.node if n.op_type == "Split"
                    and any(u.op_type == "Mul" and u.name.endswith("/scale") for u in model.graph.node
                            if set(u.input) & set(n.output))]
    try:
        from qmamba.runtime.trt_rtx import load_trt_rtx, parse_and_build
        load_trt_rtx()
    except ImportError:
        return
    onnx.save(model, tmp_path / "trt10.onnx")
    assert parse_and_build(str(tmp_path / "trt10.onnx")).plan_bytes > 0
