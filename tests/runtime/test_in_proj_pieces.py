"""in_proj_pieces (runtime/in_proj_pieces.py, `qmamba build --in-proj-pieces`): the prefill graph's in_proj as
one MatMul per piece, x | B | C and dt quantized by a QuantizeLinear of scale 1 after theirs, checked without
TensorRT: the pieces' weights and scales, ONNX Runtime's values before and after (equal up to rounding ties),
how far the folded scale moves an int8 value, what it leaves alone, TensorRT 8's Q/DQ rules on the rewritten
graph, and TensorRT-RTX (where installed) parsing and building it."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qmamba.export.onnx_export import export_onnx
from qmamba.runtime.build import trt_graph
from qmamba.runtime.in_proj_pieces import in_proj_pieces
from qmamba.runtime.weight_channel_scale import weight_channel_scales

from tiny_models import tiny_quantized_model
from trt_helpers import ort_session, random_feed


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("g8")
    export_onnx(tiny_quantized_model("g8", hadamard=True), out, force=True)
    return onnx.load(str(out / "prefill.onnx"))


def _copy(model):
    return onnx.ModelProto.FromString(model.SerializeToString())


def _made(model):
    return {o: n for n in model.graph.node for o in n.output}


def _inits(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _weight_of(matmul, made, inits):
    """(int8 W [N, K], per-channel fp32 scale [N]) behind a MatMul's transposed DequantizeLinear weight."""
    dq = made[made[matmul.input[1]].input[0]]
    return inits[dq.input[0]], inits[dq.input[1]]


def _probe(model, names, feed, path):
    """ONNX Runtime's int8 values of the tensors ``names`` of ``model`` on ``feed``."""
    probe = _copy(model)
    probe.graph.output.extend(helper.make_tensor_value_info(x, TensorProto.INT8, None) for x in names)
    onnx.save(probe, path)
    sess = ort_session(path)
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))


def test_in_proj_becomes_one_matmul_per_piece(exported):
    before = weight_channel_scales(_copy(exported))
    notes = {}
    after = in_proj_pieces(_copy(before), notes)
    n_layer = sum(n.op_type == "QuantSSD" for n in exported.graph.node)
    assert notes["in_proj_pieces"] == f"{n_layer} linears as {3 * n_layer} MatMuls, {2 * n_layer} of them with int8 outputs"
    assert not [n for n in after.graph.node if n.op_type in ("Split", "Concat")]
    made_b, made_a, inits_b, inits_a = _made(before), _made(after), _inits(before), _inits(after)
    for i in range(n_layer):
        p = f"layers.{i}.mixer"
        split = made_b[f"{p}.in_proj.z"]
        w, c = _weight_of(made_b[split.input[0]], made_b, inits_b)
        scale = {k: inits_b[made_b[made_b[f"{p}.xBC_q"].input[j]].input[1]] for j, k in enumerate("xBC")}
        scale["dt"] = inits_b[made_b[f"{p}.dt_q"].input[1]]
        sizes = numpy_helper.to_array(next(t for t in before.graph.initializer if t.name == split.input[1])).tolist()
        ends = np.cumsum([0, *sizes])
        rows = {k: slice(ends[j], ends[j + 1]) for j, k in enumerate(("z", "x", "B", "C", "dt"))}

        z_mm = made_a[f"{p}.in_proj.z"]
        assert z_mm.op_type == "MatMul"
        wz, cz = _weight_of(z_mm, made_a, inits_a)
        np.testing.assert_array_equal(wz, w[rows["z"]])
        np.testing.assert_array_equal(cz, c[rows["z"]])
        for out, pieces in ((f"{p}.xBC_q", "xBC"), (f"{p}.dt_q", ["dt"])):
            q = made_a[out]
            assert q.op_type == "QuantizeLinear" and inits_a[q.input[1]] == np.float32(1.0)
            assert inits_a[q.input[2]] == 0 and inits_a[q.input[2]].dtype == np.int8
            wq, cq = _weight_of(made_a[q.input[0]], made_a, inits_a)
            np.testing.assert_array_equal(wq, np.concatenate([w[rows[k]] for k in pieces]))
            want = np.concatenate([np.divide(c[rows[k]], scale[k], dtype=np.float32) for k in pieces])
            assert cq.dtype == np.float32
            np.testing.assert_array_equal(cq, want)


def test_onnxruntime_agrees_up_to_rounding_ties(exported, tmp_path):
    before = weight_channel_scales(_copy(exported))
    after = in_proj_pieces(_copy(before))
    feed = random_feed(exported, 4, 200, seed=5)
    names = [f"layers.{i}.mixer.{k}" for i in range(2) for k in ("xBC_q", "dt_q", "z_q")]
    got = _probe(after, names, feed, tmp_path / "after.onnx")
    want = _probe(before, names, feed, tmp_path / "before.onnx")
    for name in names:
        d = np.abs(got[name].astype(np.int32) - want[name].astype(np.int32))
        assert d.max() <= 1 and np.count_nonzero(d) <= 1e-3 * d.size, (name, d.max(), np.count_nonzero(d))
    logits, logits_ref = got["logits"], want["logits"]
    assert np.abs(logits - logits_ref).max() <= 0.05 * np.abs(logits_ref).max()


def _quantized_both_ways(acc, c, s):
    """(reference, folded, the reference's quotient): docs/ops.md's ``round(fp32(acc * c) / s)`` after the linear's
    output scale, and the GEMM's ``round(acc * fp32(c / s))``, both saturated to int8."""
    v = np.multiply(acc, c, dtype=np.float32)
    quotient = np.divide(v, s, dtype=np.float32)
    reference = np.clip(np.rint(quotient), -128, 127)
    folded = np.clip(np.rint(np.multiply(acc, np.divide(c, s, dtype=np.float32), dtype=np.float32)), -128, 127)
    return reference, folded, quotient


def test_folded_scale_moves_a_value_only_at_a_rounding_tie():
    """Over a million accumulators at the scales of real layers the two agree; over a million made to land
    next to a tie (acc = round((k + 1/2) * s / c)) they differ by one where the reference's quotient is within
    two fp32 ulp of the tie, and nowhere else."""
    rng = np.random.default_rng(0)
    n = 1 << 20
    c = (10.0 ** rng.uniform(-7, -4, n)).astype(np.float32)  # s_in * s_w of a column
    acc = rng.integers(-(1 << 21), 1 << 21, n).astype(np.float32)  # exact: |acc| < 2^24
    s = np.float32(np.percentile(np.abs(np.multiply(acc, c, dtype=np.float32)), 99.9) / 127)
    reference, folded, _ = _quantized_both_ways(acc, c, s)
    np.testing.assert_array_equal(folded, reference)

    s = np.float32(0.0123)
    acc = np.rint((rng.integers(-127, 127, n) + 0.5) * float(s) / c.astype(np.float64)).astype(np.float32)
    reference, folded, quotient = _quantized_both_ways(acc, c, s)
    moved = folded != reference
    assert np.abs(folded - reference).max() == 1 and 0 < np.count_nonzero(moved) < 0.1 * n
    q = quotient[moved].astype(np.float64)
    distance_to_tie = np.abs(np.abs(q - np.floor(q)) - 0.5)
    assert np.all(distance_to_tie <= 2 * np.spacing(np.abs(quotient[moved])))


def _linear_graph(q_pieces=(1,), concat=(), dq_reader=(), extra_input=False):
    """x [2, 4] -> MatMul(x, Transpose(DQ(W [6, 4], c [6], axis=0))) -> Split [2, 2, 2]; piece i in q_pieces goes
    through QuantizeLinear(0.25) (then a DequantizeLinear when i in dq_reader), the pieces in ``concat`` are
    Concatenated after it (with one more graph input when extra_input); every other tensor ends as an output."""
    w = numpy_helper.from_array(np.arange(-12, 12, dtype=np.int8).reshape(6, 4), "w")
    c = numpy_helper.from_array(np.full(6, 0.5, np.float32), "c")
    sizes = numpy_helper.from_array(np.array([2, 2, 2], np.int64), "sizes")
    s = numpy_helper.from_array(np.array(0.25, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "zero")
    nodes = [helper.make_node("DequantizeLinear", ["w", "c"], ["wd"], name="dq", axis=0),
             helper.make_node("Transpose", ["wd"], ["wt"], perm=[1, 0], name="t"),
             helper.make_node("MatMul", ["x", "wt"], ["acc"], name="mm"),
             helper.make_node("Split", ["acc", "sizes"], ["p0", "p1", "p2"], name="split", axis=-1)]
    outputs, inputs = [], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])]
    for i in range(3):
        if i not in q_pieces:
            outputs.append(helper.make_tensor_value_info(f"p{i}", TensorProto.FLOAT, None))
            continue
        nodes.append(helper.make_node("QuantizeLinear", [f"p{i}", "s", "zero"], [f"q{i}"], name=f"q{i}"))
        if i in dq_reader:
            nodes.append(helper.make_node("DequantizeLinear", [f"q{i}", "s", "zero"], [f"d{i}"], name=f"d{i}"))
            outputs.append(helper.make_tensor_value_info(f"d{i}", TensorProto.FLOAT, None))
        elif i not in concat:
            outputs.append(helper.make_tensor_value_info(f"q{i}", TensorProto.INT8, None))
    if concat:
        extra = ["extra"] if extra_input else []
        if extra_input:
            inputs.append(helper.make_tensor_value_info("extra", TensorProto.INT8, [2, 1]))
        nodes.append(helper.make_node("Concat", [f"q{i}" for i in concat] + extra, ["cat"], name="cat", axis=-1))
        outputs.append(helper.make_tensor_value_info("cat", TensorProto.INT8, None))
    g = helper.make_graph(nodes, "g", inputs, outputs, [w, c, sizes, s, zero])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("graph_args, note", [
    (dict(q_pieces=(1,)), "1 linears as 3 MatMuls, 1 of them with int8 outputs"),
    (dict(q_pieces=(0, 1, 2), concat=(1, 2)), "1 linears as 2 MatMuls, 2 of them with int8 outputs"),
    (dict(q_pieces=(0, 2), dq_reader=(0,)), "1 linears as 3 MatMuls, 1 of them with int8 outputs"),
], ids=["one-quantized-piece", "concat-of-two", "dequantized-piece-stays-float"])
def test_small_graph_values_are_unchanged(graph_args, note, tmp_path):
    """Values chosen off every tie (c / s = 2 exactly): the rewritten graph gives ONNX Runtime's outputs
    bit for bit."""
    model = _linear_graph(**graph_args)
    notes = {}
    after = in_proj_pieces(_copy(model), notes)
    assert notes["in_proj_pieces"] == note
    assert not [n for n in after.graph.node if n.op_type in ("Split", "Concat")]
    feed = {"x": np.array([[1, -2, 3, 0.5], [-4, 2, 0.25, 1]], np.float32)}
    onnx.save(model, tmp_path / "before.onnx")
    onnx.save(after, tmp_path / "after.onnx")
    want = ort_session(tmp_path / "before.onnx").run(None, feed)
    got = ort_session(tmp_path / "after.onnx").run(None, feed)
    assert [o.name for o in after.graph.output] == [o.name for o in model.graph.output]
    for a, b in zip(got, want):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("graph_args", [dict(q_pieces=()), dict(q_pieces=(1, 2), concat=(1, 2), extra_input=True),
                                        dict(q_pieces=(0,), dq_reader=(0,))],
                         ids=["nothing-quantized", "concat-with-another-input", "only-a-dequantized-piece"])
def test_what_it_leaves_alone(graph_args):
    model = _linear_graph(**graph_args)
    notes = {}
    after = in_proj_pieces(_copy(model), notes)
    assert after.SerializeToString() == model.SerializeToString()
    assert notes["in_proj_pieces"] == "0 linears as 0 MatMuls, 0 of them with int8 outputs"


def test_tensorrt8_graph_keeps_its_rules_and_tensorrt_rtx_builds_it(exported, tmp_path):
    """trt_graph with ``pieces`` (channel scales implied): the conv's input and QuantSSD's dt come straight from
    the GEMMs' QuantizeLinear (no DequantizeLinear/QuantizeLinear pair added on TensorRT 8), QmambaGatedNorm
    reads z from its MatMul with z's quantization inside, every per-channel weight DequantizeLinear has a zero
    point shaped like its scale; TensorRT-RTX parses and builds the TensorRT 10 graph of the prefill."""
    notes = {}
    model = trt_graph(_copy(exported), 8, notes=notes, norm_plugin=True, pieces=True)
    assert notes["in_proj_pieces"] == "2 linears as 6 MatMuls, 4 of them with int8 outputs"
    assert notes["weight_channel_scales"] == "in the weights' DequantizeLinear of 5 linears"
    made, inits = _made(model), {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "QuantConv1dSiLU" or node.op_type == "QuantSSD":
            first = node.input[0] if node.op_type == "QuantConv1dSiLU" else node.input[1]
            assert made[first].op_type == "QuantizeLinear" and made[made[first].input[0]].op_type == "MatMul"
        if node.op_type == "QmambaGatedNorm" and len(node.input) > 2:
            assert made[node.input[1]].op_type == "MatMul"
            assert next(a.f for a in node.attribute if a.name == "z_scale") > 0
        if node.op_type == "DequantizeLinear" and any(a.name == "axis" for a in node.attribute):
            assert list(inits[node.input[2]].dims) == list(inits[node.input[1]].dims)
    try:
        from qmamba.runtime.trt_rtx import load_trt_rtx, parse_and_build
        load_trt_rtx()
    except ImportError:
        return
    onnx.save(trt_graph(_copy(exported), 10, pieces=True), tmp_path / "trt10.onnx")
    assert parse_and_build(str(tmp_path / "trt10.onnx")).plan_bytes > 0
