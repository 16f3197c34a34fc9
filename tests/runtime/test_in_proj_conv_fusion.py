"""fuse_in_proj_convs (runtime/in_proj_conv_fusion.py), checked without TensorRT: each layer's xBC quantization and
QuantConv1dSiLU of the exported prefill graph becomes one QmambaInProjConv node reading in_proj's output, after
scale_after_split (the pieces' scale Muls become its col_scale) and after weight_channel_scales (no Muls: no
col_scale); the node's fields describe what it replaced (in_proj_conv_ref on ONNX Runtime's in_proj output against
ONNX Runtime's conv outputs on the exported graph); a graph that differs from the exporter's pattern is left as it
is, with the reason; the decode graph (a conv_state) is left alone; TensorRT 8's Q/DQ rules hold around the node."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qmamba.export.onnx_export import export_onnx
from qmamba.runtime.graph_index import attributes
from qmamba.runtime.in_proj_conv import OP_NAME, in_proj_conv_ref
from qmamba.runtime.in_proj_conv_fusion import fuse_in_proj_convs
from qmamba.runtime.scale_after_split import scale_after_split
from qmamba.runtime.weight_channel_scale import weight_channel_scales

from tiny_models import tiny_quantized_model
from trt_helpers import ort_session

CASES = [("g1", False), ("g8", False), ("g8", True)]


@pytest.fixture(scope="module", params=CASES, ids=[f"{k}{'-hadamard' if h else ''}" for k, h in CASES])
def case(request, tmp_path_factory):
    kind, had = request.param
    out = tmp_path_factory.mktemp(f"{kind}_{had}")
    model = tiny_quantized_model(kind, hadamard=had)
    export_onnx(model, out, force=True)
    return model, onnx.load(str(out / "prefill.onnx")), onnx.load(str(out / "decode.onnx"))


def _copy(model):
    return onnx.ModelProto.FromString(model.SerializeToString())


def _fused(model):
    return [n for n in model.graph.node if n.op_type == OP_NAME]


@pytest.mark.parametrize("channel_scales", [False, True], ids=["scale-after-split", "weight-channel-scales"])
def test_each_layer_becomes_one_node_reading_in_proj_output(case, channel_scales):
    model, prefill, _ = case
    g = weight_channel_scales(_copy(prefill)) if channel_scales else _copy(prefill)
    g = scale_after_split(g)
    before = [n.op_type for n in g.graph.node]
    notes = {}
    after = fuse_in_proj_convs(_copy(g), notes)
    n_layer = len(model.layers)
    assert notes == {"in_proj_conv": f"{OP_NAME} in {n_layer} of {n_layer} layers"}
    nodes = _fused(after)
    ops = [n.op_type for n in after.graph.node]
    assert len(nodes) == n_layer and "QuantConv1dSiLU" not in ops and "Concat" not in ops
    assert ops.count("QuantizeLinear") == before.count("QuantizeLinear") - 3 * n_layer
    assert ops.count("Mul") == before.count("Mul") - (0 if channel_scales else 3 * n_layer)
    made = {o: n for n in after.graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in after.graph.initializer}
    for i, node in enumerate(nodes):
        mixer, p = model.layers[i].mixer, f"layers.{i}.mixer"
        a = attributes(node)
        assert node.domain == "qmamba" and node.name == f"{p}.conv/{OP_NAME}"
        assert list(node.output) == [f"{p}.conv.x", f"{p}.conv.B", f"{p}.conv.C", f"conv_state_out.{i}"]
        # in_proj's output, which the Split (still there for z and dt) reads too
        assert made[node.input[0]].op_type == "MatMul"
        assert "Split" in {n.op_type for n in after.graph.node if node.input[0] in n.input}
        assert a["xbc_offset"] == mixer.d_ssm
        assert list(node.input[1:3]) == [f"{p}.conv_weight.int8", f"{p}.conv_bias.int8"]
        if channel_scales:
            assert a["col_scale"] == 0 and len(node.input) == 8
        else:
            col = inits[node.input[8]]
            assert a["col_scale"] == 1 and col.dtype == np.float32 and col.shape == (mixer.conv_dim,)
            # in_proj's output scale of the xBC columns: input_scale * weight_scale[n], the graph's fp32 product
            lin = mixer.in_proj
            full = (lin.input_scale.float() * lin.weight_scale.float()).numpy().astype(np.float32)
            np.testing.assert_array_equal(col, full[mixer.d_ssm:mixer.d_ssm + mixer.conv_dim])


def test_the_nodes_fields_describe_the_replaced_graph(case, tmp_path):
    """ONNX Runtime on the exported graph: in_proj's output (the Split's input) in, the conv's outputs out;
    in_proj_conv_ref made from the node's inputs and fields gives them (QuantConv1dSiLU's exp may differ by an ulp
    between torch and ONNX Runtime: an output on a rounding tie may differ by one)."""
    import torch

    _, prefill, _ = case
    g = scale_after_split(_copy(prefill))
    after = fuse_in_proj_convs(_copy(g))
    inits = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in after.graph.initializer}
    nodes = _fused(after)
    probe = _copy(g)
    probe.graph.output.extend(helper.make_tensor_value_info(n.input[0], TensorProto.FLOAT, None) for n in nodes)
    probe.graph.output.extend(helper.make_tensor_value_info(x, TensorProto.INT8, None)  # outputs, weight, bias
                              for n in nodes for x in (*n.output[:3], *n.input[1:3]))
    onnx.save(probe, tmp_path / "probe.onnx")
    sess = ort_session(tmp_path / "probe.onnx")
    feed = {"input_ids": np.random.default_rng(7).integers(0, 256, (2, 37)).astype(np.int64)}
    values = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
    for node in nodes:
        a = attributes(node)
        xbc_offset = a.pop("xbc_offset")
        a.pop("col_scale")
        args = [torch.from_numpy(values[x]) for x in node.input[:3]] + [inits[x] for x in node.input[3:8]]
        col = inits[node.input[8]] if len(node.input) > 8 else None
        got = in_proj_conv_ref(*args, col, xbc_offset=xbc_offset, **a)
        for out, name in zip(got[:3], node.output[:3]):
            want = values[name].astype(np.int32)
            diff = np.abs(out.numpy().astype(np.int32) - want)
            assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3, (node.name, name)


def test_the_decode_graph_is_left_alone(case):
    """The decode graph's conv reads its conv_state: no node, and the note says why."""
    model, _, decode = case
    notes = {}
    after = fuse_in_proj_convs(_copy(decode), notes)
    n_layer = len(model.layers)
    assert not _fused(after)
    assert notes == {"in_proj_conv": f"{OP_NAME} in 0 of {n_layer} layers; left as they are: {n_layer} "
                                     f"(a conv_state input)"}


@pytest.mark.parametrize("how, why", [
    ("x scale", "the QuantizeLinear before x is not of the conv's x_scale with an int8 zero point 0"),
    ("concat read twice", "xBC is not a Concat of three pieces along the channels read by the conv alone"),
    ("mul read twice", "a piece's scale Mul has other readers"),
    ("no d_state", "the conv has no d_state"),
])
def test_what_differs_is_left_as_it_is(case, how, why):
    """Layer 0 changed; the other layers still fuse, and the note says what kept layer 0."""
    model, prefill, _ = case
    g = scale_after_split(_copy(prefill))
    made = {o: n for n in g.graph.node for o in n.output}
    conv = next(n for n in g.graph.node if n.op_type == "QuantConv1dSiLU")
    concat = made[conv.input[0]]
    q_x = made[concat.input[0]]
    if how == "x scale":
        bad = numpy_helper.from_array(np.array(0.5, np.float32), "bad_x_scale")
        g.graph.initializer.append(bad)
        q_x.input[1] = "bad_x_scale"
    elif how == "concat read twice":
        g.graph.output.append(helper.make_tensor_value_info(concat.output[0], TensorProto.INT8, None))
    elif how == "mul read twice":
        mul = made[q_x.input[0]]
        g.graph.output.append(helper.make_tensor_value_info(mul.output[0], TensorProto.FLOAT, None))
    else:
        kept = [a for a in conv.attribute if a.name != "d_state"]
        del conv.attribute[:]
        conv.attribute.extend(kept)
    notes = {}
    after = fuse_in_proj_convs(g, notes)
    n_layer = len(model.layers)
    assert len(_fused(after)) == n_layer - 1
    assert notes["in_proj_conv"] == f"{OP_NAME} in {n_layer - 1} of {n_layer} layers; left as they are: 1 ({why})"
    assert [n.op_type for n in after.graph.node].count("QuantConv1dSiLU") == 1


def test_tensorrt8_rules_hold_around_the_node(case):
    """trt_graph for TensorRT 8 with the fusion: the node's int8 inputs (weight, bias) come straight from a
    QuantizeLinear, its int8 outputs go straight into a DequantizeLinear (the pair before QuantSSD)."""
    from qmamba.runtime.build import trt_graph

    _, prefill, _ = case
    notes = {}
    g = trt_graph(_copy(prefill), 8, notes=notes, norm_plugin=True, in_proj_split=True)
    assert notes["in_proj_conv"].startswith(f"{OP_NAME} in ")
    made = {o: n for n in g.graph.node for o in n.output}
    readers = {}
    for n in g.graph.node:
        for x in n.input:
            readers.setdefault(x, []).append(n)
    for node in _fused(g):
        assert made[node.input[0]].op_type == "MatMul"
        assert [made[x].op_type for x in node.input[1:3]] == ["QuantizeLinear", "QuantizeLinear"]
        for out in node.output[:3]:
            assert {r.op_type for r in readers[out]} == {"DequantizeLinear"}, out
