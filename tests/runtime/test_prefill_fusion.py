"""fuse_prefill_gated_norms (runtime/prefill_fusion.py), checked without TensorRT: each layer's gated norm and
Hadamard rotation of the exported prefill graph becomes one QmambaGatedNorm node, and each RMSNorm before in_proj
and lm_head one such node without a gate, whose inputs and fields are the model's; the fields describe what the
replaced nodes compute (ONNX Runtime on the exported graph against QuantGatedRMSNorm and hadamard.rotate, or
QuantRMSNorm, built from the node alone); anything that differs from the exporter's pattern is left as it is;
`qmamba build` fuses the prefill graph only, and --no-prefill-norm-plugin keeps it."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qmamba.export.onnx_export import export_onnx
from qmamba.runtime.graph_index import attributes
from qmamba.runtime.prefill_fusion import OP_NAME, fuse_prefill_gated_norms, plugin_rotation, sylvester
from qmamba.runtime.scale_after_split import scale_after_split

from tiny_models import tiny_quantized_model
from trt_helpers import ort_probe

# (tiny model, Hadamard): ngroups 1 and 8, no rotation, a Sylvester factor of 128 alone, two factors 12 x 32.
CASES = [("g1", False), ("g8", False), ("g8", True), ("g1-384", True)]
ROTATION_NOTE = {("g1", False): "no rotation", ("g8", False): "no rotation", ("g8", True): "Hadamard 128",
                 ("g1-384", True): "Hadamard 12 x 32"}


@pytest.fixture(scope="module", params=CASES, ids=[f"{k}{'-hadamard' if h else ''}" for k, h in CASES])
def case(request, tmp_path_factory):
    kind, had = request.param
    out = tmp_path_factory.mktemp(f"{kind}_{had}")
    model = tiny_quantized_model(kind, hadamard=had)
    export_onnx(model, out, force=True)
    return request.param, model, onnx.load(str(out / "prefill.onnx"))


def _copy(model):
    return onnx.ModelProto.FromString(model.SerializeToString())


def _fused(model, gate: int | None = None):
    """The QmambaGatedNorm nodes (with that gate field when given)."""
    return [n for n in model.graph.node if n.op_type == OP_NAME and gate in (None, attributes(n)["gate"])]


def _note(n_layer, rotation, rms_norms=None):
    """fuse_prefill_gated_norms' note when every layer's gated norm and every RMSNorm (one a layer and the final
    one, unless given) went."""
    rms = n_layer + 1 if rms_norms is None else rms_norms
    return f"{OP_NAME} in {n_layer} of {n_layer} layers ({rotation}) and {rms} of {rms} RMSNorms"


def test_each_layer_becomes_one_node_with_the_models_values(case):
    (kind, had), model, prefill = case
    notes = {}
    after = fuse_prefill_gated_norms(_copy(prefill), notes)
    n_layer = len(model.layers)
    assert notes == {"prefill_gated_norm": _note(n_layer, ROTATION_NOTE[kind, had])}
    nodes = _fused(after, gate=1)
    assert len(nodes) == n_layer and len(_fused(after)) == 2 * n_layer + 1
    ops, before = [n.op_type for n in after.graph.node], [n.op_type for n in prefill.graph.node]
    assert not {"Sigmoid", "Reshape", "ReduceMean", "Sqrt", "Reciprocal"} & set(ops)
    assert ops.count("MatMul") == 2 * n_layer + 1  # in_proj, out_proj, lm_head: no rotation MatMul left
    for op in ("QuantizeLinear", "DequantizeLinear"):  # z's pair goes, the linears' stay
        assert ops.count(op) == before.count(op) - n_layer, op
    before_made = {o: n for n in prefill.graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in after.graph.initializer}
    for i, node in enumerate(nodes):
        mixer, p = model.layers[i].mixer, f"layers.{i}.mixer"
        a = attributes(node)
        assert node.domain == "qmamba" and node.name == f"{p}.norm/{OP_NAME}"
        assert list(node.input[:3]) == [f"{p}.ssd.y", f"{p}.in_proj.z", f"{p}.norm.weight"]
        # the output is what out_proj's QuantizeLinear reads, under its exported name
        assert [c.op_type for c in after.graph.node if node.output[0] in c.input] == ["QuantizeLinear"]
        assert before_made[node.output[0]].op_type == ("Reshape" if mixer.hadamard and a["rotation_first"] > 1
                                                       else "MatMul" if mixer.hadamard else "Mul")
        np.testing.assert_array_equal(inits[node.input[2]], mixer.norm.weight.numpy())
        assert (a["channels"], a["group_size"]) == (mixer.d_ssm, mixer.norm.group_size)
        assert np.float32(a["eps"]) == np.float32(mixer.norm.eps)
        assert np.float32(a["z_scale"]) == mixer.z_scale.numpy() and a["gate"] == 1 and a["z_col_scale"] == 0
        if not had:
            assert (a["rotation_first"], a["rotation_last"], len(node.input)) == (1, 1, 3)
        elif a["rotation_first"] > 1:  # two factors: F_0 is an input, shared by the layers
            assert (a["rotation_first"], a["rotation_last"]) == (12, 32)
            assert node.input[3] == f"{OP_NAME}.rotation.384.0" and nodes[0].input[3] == node.input[3]
        else:
            assert (a["rotation_last"], len(node.input)) == (128, 3)


def test_the_scaled_z_piece_comes_unscaled_with_its_column_scale(case):
    """After scale_after_split (as qmamba build runs it) each layer's z is Mul(Split piece, fp32 [d_ssm] slice of
    in_proj's scale): the node reads the piece and the slice (z_col_scale = 1) and that Mul goes; the other
    pieces keep theirs."""
    (kind, had), model, prefill = case
    split = scale_after_split(_copy(prefill))
    muls = [n for n in split.graph.node if n.op_type == "Mul" and n.name.endswith("/scale")]
    notes = {}
    after = fuse_prefill_gated_norms(_copy(split), notes)
    assert notes == {"prefill_gated_norm": _note(len(model.layers), ROTATION_NOTE[kind, had])}
    nodes = _fused(after, gate=1)
    made = {o: n for n in after.graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in after.graph.initializer}
    for i, node in enumerate(nodes):
        p, a = f"layers.{i}.mixer", attributes(node)
        assert a["z_col_scale"] == 1 and a["z_scale"] > 0
        assert list(node.input[:2]) == [f"{p}.ssd.y", f"{p}.in_proj.z.unscaled"] and node.input[3] == f"{p}.norm.weight"
        assert made[node.input[1]].op_type == "Split" and node.input[2].endswith(".slice0")  # z: the first piece
        assert inits[node.input[2]].dtype == np.float32 and inits[node.input[2]].shape == (a["channels"],)
    left = [n for n in after.graph.node if n.op_type == "Mul" and n.name.endswith("/scale")]
    assert len(left) == len(muls) - len(nodes)
    assert not {n.output[0] for n in left} & {f"layers.{i}.mixer.in_proj.z" for i in range(len(nodes))}


@pytest.mark.parametrize("split_first", [True, False], ids=["scale-after-split", "exported"])
def test_z_from_in_proj_whole_rows(case, split_first):
    """z_whole_row: the node reads the Split's input with z_row_width its width: after scale_after_split
    in_proj's unscaled output (with the z slice's scale), on the exported graph in_proj's scaled output (the Mul
    before the Split); the Split stays for the other pieces; the note says in how many."""
    (kind, had), model, prefill = case
    g = scale_after_split(_copy(prefill)) if split_first else _copy(prefill)
    notes = {}
    after = fuse_prefill_gated_norms(g, notes, z_whole_row=True)
    n_layer = len(model.layers)
    whole = n_layer
    rms = n_layer + 1
    assert notes == {"prefill_gated_norm": f"{OP_NAME} in {n_layer} of {n_layer} layers ({ROTATION_NOTE[kind, had]}),"
                                           f" z from in_proj's whole rows in {whole} and {rms} of {rms} RMSNorms"}
    made = {o: n for n in after.graph.node for o in n.output}
    width = 2 * model.layers[0].mixer.d_ssm + 2 * model.layers[0].mixer.ngroups * model.layers[0].mixer.d_state \
        + model.layers[0].mixer.nheads
    for node in _fused(after, gate=1):
        a = attributes(node)
        assert a["z_row_width"] == width and a["z_col_scale"] == int(split_first), node.name
        assert made[node.input[1]].op_type == ("MatMul" if split_first else "Mul"), node.name
        assert "Split" in {n.op_type for n in after.graph.node if node.input[1] in n.input}


def test_a_scaled_z_read_elsewhere_keeps_its_mul(case):
    """Layer 0's scaled z is also a graph output: its Mul stays and the node reads its output (z_col_scale = 0);
    layer 1 takes its Mul along."""
    _, _, prefill = case
    model = scale_after_split(_copy(prefill))
    model.graph.output.append(helper.make_tensor_value_info("layers.0.mixer.in_proj.z", TensorProto.FLOAT, None))
    first, second = _fused(fuse_prefill_gated_norms(model), gate=1)
    assert first.input[1] == "layers.0.mixer.in_proj.z" and attributes(first)["z_col_scale"] == 0
    assert attributes(second)["z_col_scale"] == 1 and len(second.input) == len(first.input) + 1


@pytest.mark.parametrize("split_first, whole_row", [(False, False), (True, False), (True, True)],
                         ids=["exported", "scale-after-split", "z-from-whole-rows"])
def test_the_nodes_fields_describe_the_replaced_graph(case, tmp_path, split_first, whole_row):
    """ONNX Runtime on the exported graph (y and the z piece in, out_proj's QuantizeLinear input out; after
    scale_after_split the unscaled z piece) against the reference made from the node alone: z times its column
    scale (with z_col_scale), z's Q/DQ with its z_scale, QuantGatedRMSNorm with its channels, group_size, eps
    and weight, then the rotation its F_0 and Sylvester order give (which is the model's: hadamard.rotate)."""
    import torch

    from qmamba.export import hadamard, ops
    from qmamba.export.quant_modules import QuantGatedRMSNorm

    _, _, prefill = case
    if split_first:
        prefill = scale_after_split(_copy(prefill))
    after = fuse_prefill_gated_norms(_copy(prefill), z_whole_row=whole_row)
    nodes = _fused(after, gate=1)
    inits = {t.name: numpy_helper.to_array(t) for t in after.graph.initializer}
    values = _probe(prefill, {x for n in nodes for x in (n.input[0], n.input[1], n.output[0])}, tmp_path)
    for node in nodes:
        a = attributes(node)
        assert a["z_col_scale"] == int(split_first)
        k, f0, f1 = a["channels"], a["rotation_first"], a["rotation_last"]
        weight, *rest = node.input[2 + a["z_col_scale"]:]
        first = inits[rest[0]].astype(np.float64) if f0 > 1 else np.eye(1)
        last = sylvester(f1).astype(np.float64) if f1 > 1 else np.eye(1)
        rotated = f0 * f1 > 1
        if rotated:
            np.testing.assert_allclose(np.kron(first, last), hadamard.rotation_matrix(k, torch.float64).numpy(),
                                       rtol=0, atol=1e-7)
        y, z = (torch.from_numpy(values[x]) for x in node.input[:2])
        assert a.get("z_row_width", 0) == (z.shape[-1] if whole_row else 0) and z.shape[-1] >= k
        z = z[..., :k]
        if a["z_col_scale"]:
            z = z * torch.from_numpy(inits[node.input[2]].copy())  # one fp32 product, as the kernel makes it
        scale = torch.tensor(a["z_scale"], dtype=torch.float32)
        z_gate = ops.quantize(z, scale).float() * scale if a["z_scale"] > 0 else z
        norm = QuantGatedRMSNorm(k, a["group_size"], a["eps"])
        norm.weight.copy_(torch.from_numpy(inits[weight].copy()))
        g = norm(y, z_gate)
        want = (hadamard.rotate(g) if rotated else g).numpy()
        got = values[node.output[0]]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=4e-6 * np.abs(want).max(), err_msg=node.name)


def _probe(model, names, tmp_path):
    """ONNX Runtime's values of the tensors ``names`` of ``model`` (the exported graph) for two random rows."""
    feed = {"input_ids": np.random.default_rng(5).integers(0, 256, (2, 37)).astype(np.int64)}
    return ort_probe(model, names, feed, tmp_path)


def test_each_rms_norm_becomes_one_node_without_a_gate(case):
    """The block's RMSNorm before in_proj and the final one before lm_head: inputs the residual (which the
    residual Add still reads) and the weight, gate = 0, one group of the model's width, the model's eps."""
    _, model, prefill = case
    after = fuse_prefill_gated_norms(_copy(prefill))
    nodes = _fused(after, gate=0)
    n_layer = len(model.layers)
    norms = [(f"layers.{i}.norm", b.norm) for i, b in enumerate(model.layers)] + [("norm_f", model.norm_f)]
    residuals = ["embedding.out"] + [f"layers.{i}.residual" for i in range(n_layer)]
    assert [n.name for n in nodes] == [f"{p}/{OP_NAME}" for p, _ in norms]
    readers = {}
    for n in after.graph.node:
        for x in n.input:
            readers.setdefault(x, []).append(n)
    inits = {t.name: numpy_helper.to_array(t) for t in after.graph.initializer}
    d = model.config.d_model
    for node, (prefix, module), res in zip(nodes, norms, residuals):
        assert list(node.input) == [res, f"{prefix}.weight"], node.name
        assert attributes(node) == {"channels": d, "group_size": d, "eps": pytest.approx(module.eps, rel=1e-7),
                                    "z_scale": 0.0, "rotation_first": 1, "rotation_last": 1, "gate": 0,
                                    "z_col_scale": 0}
        np.testing.assert_array_equal(inits[node.input[1]], module.weight.numpy())
        assert [c.op_type for c in readers[node.output[0]]] == ["QuantizeLinear"]
        if prefix != "norm_f":  # the residual Add reads it too
            assert sorted(c.op_type for c in readers[res]) == ["Add", OP_NAME], node.name


def test_the_rms_nodes_fields_describe_the_replaced_graph(case, tmp_path):
    """ONNX Runtime's RMSNorm (the residual in, the QuantizeLinear's input out) against QuantRMSNorm made from
    the node's channels, eps and weight (group_size = channels: one group)."""
    import torch

    from qmamba.export.quant_modules import QuantRMSNorm

    _, _, prefill = case
    after = fuse_prefill_gated_norms(_copy(prefill))
    nodes = _fused(after, gate=0)
    inits = {t.name: numpy_helper.to_array(t) for t in after.graph.initializer}
    values = _probe(prefill, {x for n in nodes for x in (n.input[0], n.output[0])}, tmp_path)
    for node in nodes:
        a = attributes(node)
        assert a["group_size"] == a["channels"] and a["gate"] == 0, node.name
        norm = QuantRMSNorm(a["channels"], a["eps"])
        norm.weight.copy_(torch.from_numpy(inits[node.input[1]].copy()))
        want = norm(torch.from_numpy(values[node.input[0]])).numpy()
        got = values[node.output[0]]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max(), err_msg=node.name)


def _rms_norm_nodes(g, prefix):
    """The seven nodes of the RMSNorm whose weight is ``<prefix>.weight``, by op type (the two Muls of x as
    "square" and "scale", the weight's as "Mul")."""
    made = {o: n for n in g.node for o in n.output}
    mul_w = next(n for n in g.node if n.op_type == "Mul" and n.input[1] == f"{prefix}.weight")
    scale = made[mul_w.input[0]]
    recip = made[scale.input[1]]
    sqrt = made[recip.input[0]]
    add = made[sqrt.input[0]]
    mean = made[add.input[0]]
    return {"Mul": mul_w, "scale": scale, "Reciprocal": recip, "Sqrt": sqrt, "Add": add, "ReduceMean": mean,
            "square": made[mean.input[0]]}


@pytest.mark.parametrize("how, why", [
    ("weight of two axes", "the norm's weight is not an fp32 vector"),
    ("eps NaN", "the norm's eps nan is not finite and >= 0"),
    ("mean is a graph output", "an intermediate is a graph output"),
])
def test_an_rms_norm_that_differs_is_left_and_named(case, how, why):
    """norm_f's weight, eps or an intermediate not what the exporter writes: that RMSNorm keeps its nodes, the
    note names it and why; the others go."""
    (kind, had), model, prefill = case
    m = _copy(prefill)
    g = m.graph
    nodes = _rms_norm_nodes(g, "norm_f")
    if how == "weight of two axes":
        w = next(t for t in g.initializer if t.name == "norm_f.weight")
        w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w)[None], w.name))
    elif how == "eps NaN":
        g.initializer.append(numpy_helper.from_array(np.array([np.nan], np.float32), "nan_eps"))
        nodes["Add"].input[1] = "nan_eps"
    else:
        g.output.append(helper.make_tensor_value_info(nodes["ReduceMean"].output[0], TensorProto.FLOAT, None))
    notes = {}
    after = fuse_prefill_gated_norms(m, notes)
    n_layer = len(model.layers)
    assert notes["prefill_gated_norm"] == (f"{OP_NAME} in {n_layer} of {n_layer} layers ({ROTATION_NOTE[kind, had]}) "
                                           f"and {n_layer} of {n_layer + 1} RMSNorms; left as graph ops: norm_f: {why}")
    assert [n.name for n in _fused(after, gate=0)] == [f"layers.{i}.norm/{OP_NAME}" for i in range(n_layer)]
    kept = {n.SerializeToString() for n in after.graph.node}
    assert all(n.SerializeToString() in kept for n in nodes.values())


def test_a_graph_that_is_no_rms_norm_is_left_alone(case):
    """layers.1.norm squaring something else than its input, or its ReduceMean over another axis: not the
    exported RMSNorm, so neither fused nor counted. norm_f's input, a graph output here, is only read by the
    node."""
    (kind, had), model, prefill = case
    n_layer = len(model.layers)
    for change in ("square", "axes"):
        m = _copy(prefill)
        g = m.graph
        nodes = _rms_norm_nodes(g, "layers.1.norm")
        if change == "square":
            nodes["square"].input[1] = "embedding.out"
        else:
            next(a for a in nodes["ReduceMean"].attribute if a.name == "axes").ints[:] = [1]
        g.output.append(helper.make_tensor_value_info("layers.1.residual", TensorProto.FLOAT, None))
        notes = {}
        after = fuse_prefill_gated_norms(m, notes)
        assert notes["prefill_gated_norm"] == _note(n_layer, ROTATION_NOTE[kind, had], rms_norms=n_layer), change
        names = [n.name for n in _fused(after, gate=0)]
        assert names == [f"layers.0.norm/{OP_NAME}", f"norm_f/{OP_NAME}"], change
        assert _fused(after, gate=0)[1].input[0] == "layers.1.residual"
        kept = {n.SerializeToString() for n in after.graph.node}
        assert all(n.SerializeToString() in kept for n in nodes.values()), change


def test_a_rotation_factor_that_differs_leaves_the_layers_as_they_are(tmp_path):
    """One entry of the rotation's Sylvester factor one ulp off: no gated norm is fused (the RMSNorms are), and the
    note says why."""
    export_onnx(tiny_quantized_model("g1-384", hadamard=True), tmp_path, force=True)
    model = onnx.load(str(tmp_path / "prefill.onnx"))
    init = next(t for t in model.graph.initializer if t.name == "hadamard.384.1")
    f = numpy_helper.to_array(init).copy()
    f[3, 5] = np.nextafter(f[3, 5], np.float32(2))
    init.CopyFrom(numpy_helper.from_array(f, init.name))
    before = model.SerializeToString()
    rms_nodes = {n.SerializeToString() for p in ("layers.0.norm", "layers.1.norm", "norm_f")
                 for n in _rms_norm_nodes(model.graph, p).values()}
    notes = {}
    after = fuse_prefill_gated_norms(model, notes)
    # every node but the RMSNorms' stays
    gone = {n.SerializeToString() for n in onnx.ModelProto.FromString(before).graph.node} \
        - {n.SerializeToString() for n in after.graph.node}
    assert gone == rms_nodes and len(rms_nodes) == 21
    why = "its rotation's factors are not export/hadamard.py's rotation_factors_fp32(384)"
    assert notes["prefill_gated_norm"] == (f"{OP_NAME} in 0 of 2 layers and 3 of 3 RMSNorms; left as graph ops: "
                                           f"layers.0.mixer.ssd: {why}; layers.1.mixer.ssd: {why}")
    assert [attributes(n)["gate"] for n in _fused(after)] == [0, 0, 0]


def _layer_z(model, i):
    g = model.graph
    q = next(n for n in g.node if n.op_type == "QuantizeLinear" and n.output[0] == f"layers.{i}.mixer.z_q")
    dq = next(n for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0])
    return g, q, dq


@pytest.mark.parametrize("how", ["z_q read elsewhere", "DequantizeLinear scale differs", "zero point 1"])
def test_a_z_quantization_that_differs_stays_and_the_node_reads_its_output(case, how):
    """Layer 0's z Q/DQ pair is not the exported one, or its int8 z is read elsewhere: the pair stays and the
    node reads the dequantized z with z_scale = 0 (the gate's input as is); layer 1 takes its pair along."""
    _, _, prefill = case
    model = _copy(prefill)
    g, q, dq = _layer_z(model, 0)
    if how == "z_q read elsewhere":
        g.output.append(helper.make_tensor_value_info(q.output[0], TensorProto.INT8, None))
    elif how == "DequantizeLinear scale differs":
        s = numpy_helper.to_array(next(t for t in g.initializer if t.name == dq.input[1]))
        g.initializer.append(numpy_helper.from_array(np.nextafter(s, np.float32(1)), "other_scale"))
        dq.input[1] = "other_scale"
    else:
        g.initializer.append(numpy_helper.from_array(np.array(1, np.int8), "one"))
        q.input[2] = "one"
        dq.input.append("one")
    notes = {}
    after = fuse_prefill_gated_norms(model, notes)
    assert notes["prefill_gated_norm"].startswith(f"{OP_NAME} in 2 of 2 layers")
    first, second = _fused(after, gate=1)
    assert first.input[1] == dq.output[0] and attributes(first)["z_scale"] == 0.0
    assert second.input[1] == "layers.1.mixer.in_proj.z" and attributes(second)["z_scale"] > 0
    kept = {n.output[0] for n in after.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    assert {q.output[0], dq.output[0]} <= kept and "layers.1.mixer.z_q" not in kept


def _gated_norm_eps_adds(g):
    """The Add of eps of each gated norm (its ReduceMean reads the grouped, squared gate), in graph order."""
    made = {o: n for n in g.node for o in n.output}
    adds = [n for n in g.node if n.op_type == "Add" and made.get(n.input[0]) is not None
            and made[n.input[0]].op_type == "ReduceMean"]
    return [a for a in adds if made[made[made[a.input[0]].input[0]].input[0]].op_type == "Reshape"]


def test_a_layer_whose_eps_is_not_one_value_is_left_as_it_is(case):
    _, _, prefill = case
    model = _copy(prefill)
    g = model.graph
    add = _gated_norm_eps_adds(g)[0]
    g.initializer.append(numpy_helper.from_array(np.full((2,), 1e-5, np.float32), "two_eps"))
    add.input[1] = "two_eps"
    notes = {}
    after = fuse_prefill_gated_norms(model, notes)
    assert len(_fused(after, gate=1)) == 1
    assert notes["prefill_gated_norm"].endswith("left as graph ops: layers.0.mixer.ssd: its gated norm is not the "
                                                "exported pattern")


@pytest.mark.parametrize("k, want", [(128, (1, 128)), (96, (96, 1)), (12, (12, 1)), (384, (12, 32)),
                                     (5120, (40, 128)), (8192, (64, 128)), (1536, (12, 128))])
def test_rotation_orders(k, want):
    """The fields of export/hadamard.py's factors: two factors are a dense F_0 and a Sylvester F_1; one factor
    is f1 when it is a Sylvester matrix (f0 = 1), else the dense F_0 (f1 = 1)."""
    from qmamba.export import hadamard

    factors = [f.numpy() for f in hadamard.rotation_factors_fp32(k)]
    orders, first = plugin_rotation(factors, k)
    assert orders == want
    assert (first is None) == (want[0] == 1)
    if first is not None:
        np.testing.assert_array_equal(first, factors[0])


def test_rotation_orders_refuse_other_factors():
    from qmamba.export import hadamard

    factors = [f.numpy() for f in hadamard.rotation_factors_fp32(384)]
    assert "not export/hadamard.py's" in plugin_rotation([factors[1], factors[0]], 384)
    assert "not export/hadamard.py's" in plugin_rotation([factors[0].astype(np.float64), factors[1]], 384)
    three = [f.numpy() for f in hadamard.rotation_factors_fp32(2 ** 15)]  # [2, 128, 128]
    assert "are not a dense one of order <= 128 and a Sylvester one" in plugin_rotation(three, 2 ** 15)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    export_onnx(tiny_quantized_model("g1-384", hadamard=True), out, force=True)
    return out


@pytest.fixture()
def fake_tensorrt(monkeypatch, tmp_path):
    """build_engines and `qmamba build` down to the graphs given to TensorRT 8: the C++ runner's build writes
    a placeholder engine; returns the plugin library path to pass."""
    from qmamba.runtime import build, trt_runner

    def fake_build(onnx_path, engine_path, *_args, **_kwargs):
        engine_path.write_bytes(b"engine")
    monkeypatch.setattr(build, "tensorrt_major", lambda trt=None: 8)
    monkeypatch.setattr(trt_runner, "build_engine", fake_build)
    plugins = tmp_path / "libqmamba_trt_plugins.so"
    plugins.write_bytes(b"")
    return plugins


def test_build_fuses_the_prefill_graph_only(export_dir, fake_tensorrt, tmp_path):
    from qmamba.runtime.build import build_engines

    graphs = {}
    for option in (True, False):
        out = tmp_path / f"engines_{option}"
        meta = build_engines(export_dir, out, plugins=fake_tensorrt, backend="cpp", keep_onnx=True,
                             prefill_norm_plugin=option)
        graphs[option] = {k: onnx.load(str(out / f"{k}.trt.onnx")) for k in ("prefill", "decode")}
        saved = json.loads((out / "qmamba_engines.json").read_text())
        assert saved["prefill_gated_norm"] == meta["prefill_gated_norm"] == (
            _note(2, "Hadamard 12 x 32") if option else "graph ops (--no-prefill-norm-plugin)")
    assert len(_fused(graphs[True]["prefill"])) == 5 and not _fused(graphs[False]["prefill"])
    assert not _fused(graphs[True]["decode"])
    assert graphs[True]["decode"].SerializeToString() == graphs[False]["decode"].SerializeToString()
    # TensorRT 8's rewrites: the node reads QuantSSD's y as the int32 words the V2 plugin gives (y_bits, no
    # QmambaBitsAsFloat copy; without the fusion y's readers keep the copy); no int8 tensor touches it.
    g = graphs[True]["prefill"].graph
    made = {o: n for n in g.node for o in n.output}
    assert not [n for n in g.node if n.op_type == "QmambaBitsAsFloat"]
    assert len([n for n in graphs[False]["prefill"].graph.node if n.op_type == "QmambaBitsAsFloat"]) == 2
    for node in _fused(graphs[True]["prefill"], gate=1):
        assert made[node.input[0]].op_type == "QuantSSD" and attributes(node)["y_bits"] == 1
        # the z piece unscaled and its slice of in_proj's scale: the Mul went into the node
        assert made[node.input[1]].op_type == "Split" and attributes(node)["z_col_scale"] == 1
    # the RMSNorms read the embedding's Gather or a residual Add
    assert [made[n.input[0]].op_type for n in _fused(graphs[True]["prefill"], gate=0)] == ["Gather", "Add", "Add"]
    for node in _fused(graphs[True]["prefill"]):
        assert all(made.get(x) is None or made[x].op_type not in ("QuantizeLinear", "DequantizeLinear")
                   for x in node.input)


def test_cli_build_says_which_path_the_prefill_norm_took(export_dir, fake_tensorrt, tmp_path, capsys):
    from qmamba.cli import main

    common = [str(export_dir), "--plugins", str(fake_tensorrt), "--backend", "cpp"]
    assert main(["build", *common, "-o", str(tmp_path / "a")]) == 0
    assert f"prefill gated norm: {_note(2, 'Hadamard 12 x 32')}\n" in capsys.readouterr().out
    assert main(["build", *common, "-o", str(tmp_path / "b"), "--no-prefill-norm-plugin"]) == 0
    assert "prefill gated norm: graph ops (--no-prefill-norm-plugin)" in capsys.readouterr().out
