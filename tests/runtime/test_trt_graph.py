"""The graph `qmamba build` gives TensorRT (runtime/build.py trt_graph), checked without TensorRT:
TensorRT 8's Q/DQ rules around plugins (docs/tensorrt.md's table, measured on TensorRT 8.6.0) are met, and
every rewrite is exact (ONNX Runtime runs the rewritten Q/DQ pairs to the same values)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qmamba.export.onnx_export import export_onnx
from qmamba.runtime.build import trt_graph
from qmamba.runtime.trt8_graph import PLUGIN_FLOAT_OUTPUTS, PLUGIN_INT8_INPUTS, float_fake_quant

from tiny_models import tiny_quantized_model
from trt_helpers import ort_before_and_after, ort_probe, ort_session, random_feed


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("g1")
    export_onnx(tiny_quantized_model("g1"), out, force=True)
    return {kind: onnx.load(str(out / f"{kind}.onnx")) for kind in ("prefill", "decode")}


def _producers(g):
    return {o: n for n in g.node for o in n.output}


def _consumers(g):
    out = {}
    for n in g.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


@pytest.mark.parametrize("kind", ["prefill", "decode"])
def test_tensorrt8_graph_meets_its_qdq_rules(exported, kind):
    model = trt_graph(onnx.ModelProto.FromString(exported[kind].SerializeToString()), 8)
    g = model.graph
    prod, cons = _producers(g), _consumers(g)
    plugins = [n for n in g.node if n.op_type in PLUGIN_INT8_INPUTS]
    assert plugins
    for n in plugins:
        for i, name in enumerate(n.input):  # int8 in: straight from a QuantizeLinear
            if i in PLUGIN_INT8_INPUTS[n.op_type] and name:
                assert prod[name].op_type == "QuantizeLinear", f"{n.name} input {i} from {prod[name].op_type}"
        for i, name in enumerate(n.output):
            if i in PLUGIN_FLOAT_OUTPUTS.get(n.op_type, ()):  # QuantSSD's y: int32 words -> QmambaBitsAsFloat
                (bits,) = cons[name]  # (or a QmambaGatedNorm with y_bits: only after the prefill fusion)
                assert bits.op_type == "QmambaBitsAsFloat" and bits.domain == n.domain
                out_dtype = next((a.i for a in n.attribute if a.name == "out_dtype"), 1)
                assert next(a.i for a in bits.attribute if a.name == "to") == out_dtype
                assert cons[bits.output[0]], "y's consumers read QmambaBitsAsFloat's output"
            else:  # int8 out: only into DequantizeLinear (also the states that are network outputs)
                assert {c.op_type for c in cons[name]} == {"DequantizeLinear"}, f"{n.name} output {i}"
    int8 = TensorProto.INT8
    for vo in g.output:  # int8 network outputs (states) come from a QuantizeLinear
        if vo.type.tensor_type.elem_type == int8:
            assert prod[vo.name].op_type == "QuantizeLinear", vo.name
    for vi in g.input:  # int8 network inputs (states) go into DequantizeLinear only
        if vi.type.tensor_type.elem_type == int8:
            assert {c.op_type for c in cons[vi.name]} == {"DequantizeLinear"}, vi.name
    assert all(len(n.input) == 3 for n in g.node if n.op_type == "DequantizeLinear")  # explicit zero points


def test_tensorrt10_graph_only_scales_after_split_and_spells_out_zero_points_and_float_fake_quant(exported):
    from qmamba.runtime.scale_after_split import scale_after_split

    before = exported["prefill"]
    after = trt_graph(onnx.ModelProto.FromString(before.SerializeToString()), 10)
    ops = lambda m: [n.op_type for n in m.graph.node]  # noqa: E731
    assert ops(after) == ops(float_fake_quant(scale_after_split(onnx.ModelProto.FromString(before.SerializeToString()))))


def test_float_fake_quant_takes_only_pairs_that_end_in_float_ops(exported):
    """The gate z of each layer's gated norm (QuantizeLinear -> DequantizeLinear -> Sigmoid, Mul) is
    rewritten; QuantizeLinear into a MatMul's DequantizeLinear or into a plugin is not."""
    before = exported["decode"]
    after = float_fake_quant(onnx.ModelProto.FromString(before.SerializeToString()))
    gone = ({n.output[0] for n in before.graph.node if n.op_type == "QuantizeLinear"}
            - {n.output[0] for n in after.graph.node if n.op_type == "QuantizeLinear"})
    n_layer = sum(n.op_type == "QuantSSD" for n in before.graph.node)
    assert gone == {f"layers.{i}.mixer.z_q" for i in range(n_layer)}


def test_tensorrt10_graph_computes_what_the_export_does(exported, tmp_path):
    """The whole rewritten decode graph on ONNX Runtime: logits and states bit for bit."""
    before = exported["decode"]
    after = trt_graph(onnx.ModelProto.FromString(before.SerializeToString()), 10)
    got, want = ort_before_and_after(before, after, random_feed(before, 2, 1, seed=0), tmp_path)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_prefill_graph_scales_in_proj_after_its_split(exported, tmp_path):
    """scale_after_split: no Mul between in_proj's MatMul and its Split any more, a Mul by a slice of the scale
    on each piece (z, x, B, C, dt); ONNX Runtime gives the exported prefill graph's logits and states bit for
    bit; TensorRT-RTX (where installed) parses and builds the rewritten graph."""
    from qmamba.runtime.scale_after_split import scale_after_split

    before = exported["prefill"]
    after = scale_after_split(onnx.ModelProto.FromString(before.SerializeToString()))
    made = _producers(after.graph)
    splits = [n for n in after.graph.node if n.op_type == "Split"]
    n_layer = sum(n.op_type == "QuantSSD" for n in before.graph.node)
    assert len(splits) == n_layer and all(made[n.input[0]].op_type == "MatMul" for n in splits)
    users = _consumers(after.graph)
    assert all(len(n.output) == 5 and all(u.op_type == "Mul" for o in n.output for u in users[o]) for n in splits)
    feed = {"input_ids": np.random.default_rng(3).integers(0, 256, (2, 37)).astype(np.int64)}
    got, want = ort_before_and_after(before, after, feed, tmp_path)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    try:
        from qmamba.runtime.trt_rtx import load_trt_rtx, parse_and_build
        load_trt_rtx()
    except ImportError:
        return
    rewritten = trt_graph(onnx.ModelProto.FromString(before.SerializeToString()), 10)
    onnx.save(rewritten, tmp_path / "trt10.onnx")
    assert parse_and_build(str(tmp_path / "trt10.onnx")).plan_bytes > 0


def test_float_fake_quant_is_exact_at_ties_and_saturation(tmp_path):
    s = np.float32(0.0319)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             helper.make_node("Sigmoid", ["d"], ["y"])]
    inits = [numpy_helper.from_array(np.array(s), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, tmp_path / "pair.onnx")
    onnx.save(float_fake_quant(model), tmp_path / "float.onnx")
    assert "QuantizeLinear" not in [n.op_type for n in onnx.load(tmp_path / "float.onnx").graph.node]
    k = np.arange(-140, 141, dtype=np.float32)
    values = np.concatenate([k * s, (k + 0.5) * s, (k + 0.5) * s * (1 + 1e-7), [-1e6, 1e6, 0.0]]).astype(np.float32)
    (want,) = ort_session(tmp_path / "pair.onnx").run(None, {"x": values})
    (got,) = ort_session(tmp_path / "float.onnx").run(None, {"x": values})
    np.testing.assert_array_equal(got, want)


def test_qdq_pairs_on_plugin_edges_are_exact(tmp_path):
    """A DequantizeLinear -> QuantizeLinear pair of scale 1 as the rewrite inserts it returns every int8."""
    from qmamba.runtime.trt8_graph import qdq_plugin_edges

    x = helper.make_tensor_value_info("x", TensorProto.INT8, [256])
    y = helper.make_tensor_value_info("y", TensorProto.INT8, [256])
    # A plugin node with an int8 network input and output gets a pair on each; then it is made an Identity.
    g = helper.make_graph([helper.make_node("QuantConv1dSiLU", ["x"], ["y"], name="p")], "g", [x], [y])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    model = qdq_plugin_edges(model)
    pair = [n.op_type for n in model.graph.node]
    assert pair[:2] == ["DequantizeLinear", "QuantizeLinear"]
    for n in model.graph.node:
        if n.op_type == "QuantConv1dSiLU":
            n.op_type = "Identity"
    # Identity's output passes through the output pair too: two round trips in all.
    path = tmp_path / "pairs.onnx"
    onnx.save(model, path)
    values = np.arange(-128, 128, dtype=np.int8)
    (got,) = ort_session(path).run(None, {"x": values})
    np.testing.assert_array_equal(got, values)
    scales = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert all(float(scales[n.input[1]]) == 1.0 for n in model.graph.node if n.op_type.endswith("Linear"))


def test_decode_linears_become_the_linear_plugin_and_compute_the_same(exported, tmp_path):
    """fuse_decode_linears: every W8A8 linear of the decode graph is one QmambaW8A8Linear (in_proj and
    lm_head with their RMSNorm, out_proj with the gated norm's RMS and the residual Add); the reference twin on the node's
    inputs, as ONNX Runtime computes them from the exported graph, gives ONNX Runtime's output: exactly
    without the norm, at most a rounding tie apart with it (another order of summation)."""
    import torch

    from qmamba.runtime.decode_fusion import fuse_decode_linears
    from qmamba.runtime.w8a8_linear import OP_NAME, w8a8_linear_ref

    before = exported["decode"]
    after = fuse_decode_linears(onnx.ModelProto.FromString(before.SerializeToString()))
    fused = [n for n in after.graph.node if n.op_type == OP_NAME]
    attrs = [{a.name: helper.get_attribute_value(a) for a in n.attribute} for n in fused]
    n_layer = sum(n.op_type == "QuantSSD" for n in before.graph.node)
    assert len(fused) == 2 * n_layer + 1
    assert [(a["norm"], a["residual"]) for a in attrs] == [(1, 0), (1, 1)] * n_layer + [(1, 0)]
    assert not any(n.op_type in ("MatMul", "Transpose") for n in after.graph.node)
    inits = {t.name: numpy_helper.to_array(t) for t in after.graph.initializer}

    # ONNX Runtime on the exported graph, with every tensor the fused nodes read or write as an output.
    names = {x for n in fused for x in [*n.input, *n.output] if x not in inits} - {o.name for o in before.graph.output}
    values = ort_probe(before, names, random_feed(before, 3, 1, seed=1), tmp_path)
    values.update(inits)
    for node, a in zip(fused, attrs):
        t = [torch.from_numpy(np.asarray(values[i]).copy()) for i in node.input]
        x, w, out_scale, s_in = t[:4]
        norm_weight = t[4] if a["norm"] else None
        residual = t[4 + a["norm"]] if a["residual"] else None
        got = w8a8_linear_ref(x, w, out_scale, s_in, norm_weight, a.get("eps", 1e-5), residual,
                              a.get("norm_group", 0)).numpy()
        want = values[node.output[0]]
        if a["norm"]:
            step = np.abs(inits[node.input[2]]).max() * np.abs(w.view(torch.int8).numpy()).sum(1).max()
            assert np.abs(got - want).max() <= step, node.name
            assert np.mean(got != want) <= 0.05, node.name
        else:
            np.testing.assert_array_equal(got, want, err_msg=node.name)


@pytest.fixture(scope="module", params=["g1", "g8"])
def exported_decode(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"mixer_{request.param}")
    export_onnx(tiny_quantized_model(request.param), out, force=True)
    return onnx.load(str(out / "decode.onnx"))


def _copy(model):
    return onnx.ModelProto.FromString(model.SerializeToString())


def _probe_values(before, names, tmp_path, batch=3, seed=1):
    """ONNX Runtime on the exported graph with ``names`` as extra float outputs; the feed holds random
    token ids and random int8 states (saturated values included)."""
    feed = random_feed(before, batch, 1, seed)
    return {**feed, **ort_probe(before, names, feed, tmp_path)}


def test_decode_mixers_become_the_mixer_plugin_and_compute_the_same(exported_decode, tmp_path):
    """fuse_decode_mixers: each layer's Split .. QuantConv1dSiLU .. QuantSSD .. gate is one QmambaDecodeMixer;
    the states become int32 words of the same bytes; the reference twin on the node's inputs (as ONNX
    Runtime computes them from the exported graph) gives ONNX Runtime's gate output and states."""
    import torch

    from qmamba.runtime.decode_fusion import fuse_decode_mixers
    from qmamba.runtime.graph_index import attributes
    from qmamba.runtime.decode_mixer import OP_NAME, decode_mixer_ref, unflat_int8_words

    before = exported_decode
    after, what = fuse_decode_mixers(_copy(before))
    n_layer = sum(n.op_type == "QuantSSD" for n in before.graph.node)
    mixers = [n for n in after.graph.node if n.op_type == OP_NAME]
    assert what == f"{OP_NAME} ({n_layer} layers)" and len(mixers) == n_layer
    assert not {"QuantConv1dSiLU", "QuantSSD", "Split", "Concat", "Sigmoid"} & {n.op_type for n in after.graph.node}
    old_io = {vi.name: vi.type.tensor_type for vi in [*before.graph.input, *before.graph.output]}
    for vi in [*after.graph.input, *after.graph.output]:
        if "state" in vi.name:  # int8 [.., m] -> int32 [.., m / 4]
            t, old = vi.type.tensor_type, old_io[vi.name]
            assert (old.elem_type, t.elem_type) == (TensorProto.INT8, TensorProto.INT32)
            assert [d.dim_value for d in t.shape.dim][1:-1] == [d.dim_value for d in old.shape.dim][1:-1]
            assert t.shape.dim[-1].dim_value * 4 == old.shape.dim[-1].dim_value
    inits = {t.name: numpy_helper.to_array(t) for t in after.graph.initializer}
    values = _probe_values(before, {x for n in mixers for x in (n.input[0], n.output[0])}, tmp_path)
    values.update(inits)
    for node in mixers:
        a = attributes(node)
        t = [torch.from_numpy(np.asarray(values[i]).copy()) for i in node.input]
        conv_dim = a["nheads"] * a["headdim"] + 2 * a["ngroups"] * a["d_state"]
        weight = unflat_int8_words(t[1], (conv_dim, a["d_conv"]))
        bias = unflat_int8_words(t[2], (conv_dim,))
        gated, conv_out, ssm_out = decode_mixer_ref(t[0], weight, bias, *t[3:], **a)
        np.testing.assert_allclose(gated.numpy(), values[node.output[0]], rtol=1e-5, atol=1e-6 * np.abs(gated.numpy()).max())
        np.testing.assert_array_equal(conv_out.numpy(), values[node.output[1]], err_msg=node.name)
        # The SSD's fp32 state is summed in the same order; exp may differ by an ulp: ties only.
        diff = np.abs(ssm_out.numpy().astype(np.int32) - values[node.output[2]])
        assert diff.max() <= 1 and diff.mean() <= 1e-3, node.name


def test_gated_norm_folds_into_out_proj(exported_decode, tmp_path):
    """After fuse_decode_mixers, fuse_decode_linears takes the gated norm's RMS and weight into out_proj
    (norm = 1, norm_group = d_ssm / ngroups); the twin on ONNX Runtime's gate output gives ONNX Runtime's
    out_proj + residual within one rounding tie of the normed activation."""
    import torch

    from qmamba.runtime.decode_fusion import fuse_decode_linears, fuse_decode_mixers
    from qmamba.runtime.graph_index import attributes
    from qmamba.runtime.w8a8_linear import OP_NAME, one_tie_error, unpack_int8_words, w8a8_linear_ref

    after = fuse_decode_linears(fuse_decode_mixers(_copy(exported_decode))[0])
    outs = [n for n in after.graph.node if n.op_type == OP_NAME and attributes(n)["residual"] == 1]
    n_layer = sum(n.op_type == "QuantSSD" for n in exported_decode.graph.node)
    assert len(outs) == n_layer
    mixer = next(n for n in after.graph.node if n.op_type == "QmambaDecodeMixer")
    ma = attributes(mixer)
    for n in outs:
        a = attributes(n)
        assert a["norm"] == 1 and a["norm_group"] == ma["nheads"] * ma["headdim"] // ma["ngroups"], n.name
    inits = {t.name: numpy_helper.to_array(t) for t in after.graph.initializer}
    values = _probe_values(exported_decode, {x for n in outs for x in (n.input[0], n.input[5], n.output[0])}, tmp_path)
    values.update(inits)
    for n in outs:
        a = attributes(n)
        x, w, out_scale, s_in, norm_weight, residual = (torch.from_numpy(np.asarray(values[i]).copy()) for i in n.input)
        got = w8a8_linear_ref(x, w, out_scale, s_in, norm_weight, a["eps"], residual, a["norm_group"]).numpy()
        want = values[n.output[0]]
        bound = one_tie_error(out_scale, unpack_int8_words(w, x.shape[-1])).numpy()
        assert np.all(np.abs(got - want) <= bound + 1e-6 * np.abs(want)), n.name
        assert np.mean(got != want) <= 0.05, n.name


@pytest.mark.parametrize("kind, orders", [("g1", (1, 128)), ("g1-384", (12, 32))])
def test_hadamard_rotation_folds_into_out_proj(kind, orders, tmp_path):
    """With a Hadamard rotation before out_proj, fuse_decode_linears takes the gated norm and the rotation's
    MatMuls (one Sylvester factor, or a dense one and a Sylvester one) into out_proj (fields rotation_first and
    rotation_last, the dense factor as input F_0); the twin on ONNX Runtime's gate output gives ONNX Runtime's
    out_proj + residual within one rounding tie of the rotated activation, and F_0 (x) S_f1 is the model's
    rotation."""
    import torch

    from qmamba.export import hadamard
    from qmamba.runtime.decode_fusion import fuse_decode_linears, fuse_decode_mixers
    from qmamba.runtime.gated_norm import sylvester
    from qmamba.runtime.graph_index import attributes
    from qmamba.runtime.w8a8_linear import OP_NAME, one_tie_error, unpack_int8_words, w8a8_linear_ref

    export_onnx(tiny_quantized_model(kind, hadamard=True), tmp_path / "onnx", force=True)
    exported = onnx.load(str(tmp_path / "onnx" / "decode.onnx"))
    notes = {}
    after = fuse_decode_linears(fuse_decode_mixers(_copy(exported))[0], notes, rotation_pass=True)
    f0, f1 = orders
    assert notes == {"decode_rotation": f"QmambaW8A8Linear (rotation_first = {f0}, rotation_last = {f1})"}
    assert not any(n.op_type in ("MatMul", "ReduceMean") for n in after.graph.node)
    outs = [n for n in after.graph.node if n.op_type == OP_NAME and attributes(n)["residual"] == 1]
    assert len(outs) == sum(n.op_type == "QuantSSD" for n in exported.graph.node)
    inits = {t.name: numpy_helper.to_array(t) for t in after.graph.initializer}
    values = _probe_values(exported, {x for n in outs for x in (n.input[0], n.input[5], n.output[0])}, tmp_path)
    values.update(inits)
    for n in outs:
        a = attributes(n)
        assert a["norm"] == 1 and (a["rotation_first"], a["rotation_last"]) == orders, n.name
        assert len(n.input) == 6 + (f0 > 1), n.name
        x, w, out_scale, s_in, norm_weight, residual, *first = (torch.from_numpy(np.asarray(values[i]).copy())
                                                                for i in n.input)
        d_ssm = x.shape[-1]
        product = torch.kron(first[0].double() if first else torch.ones(1, 1, dtype=torch.float64),
                             sylvester(f1, torch.float64))
        torch.testing.assert_close(product, hadamard.rotation_matrix(d_ssm, torch.float64), rtol=0, atol=1e-7)
        got = w8a8_linear_ref(x, w, out_scale, s_in, norm_weight, a["eps"], residual, a["norm_group"],
                              rotation=(f0, f1, first[0] if first else None)).numpy()
        want = values[n.output[0]]
        bound = one_tie_error(out_scale, unpack_int8_words(w, d_ssm)).numpy()
        assert np.all(np.abs(got - want) <= bound + 1e-6 * np.abs(want)), n.name
        assert np.mean(got != want) <= 0.05, n.name


@pytest.mark.parametrize("rotation_pass, note", [
    (False, "TensorRT MatMuls (--no-decode-rotation-pass)"),
    (True, "TensorRT MatMuls (its rotation's factors of orders [12, 32] are not a dense one of order <= 16 and a "
           "Sylvester one)"),
], ids=["no-rotation-pass", "factors-the-pass-does-not-take"])
def test_the_rotation_stays_in_the_graph(rotation_pass, note, monkeypatch, tmp_path):
    """Without rotation_pass (qmamba build --no-decode-rotation-pass), or where the rotation pass cannot take the
    factors (prefill_fusion.plugin_rotation's verdict), out_proj is fused without the gated norm's RMS and the
    rotation: they stay TensorRT layers between the mixer and out_proj, and the note says why."""
    from qmamba.runtime import prefill_fusion
    from qmamba.runtime.decode_fusion import fuse_decode_linears, fuse_decode_mixers
    from qmamba.runtime.graph_index import attributes
    from qmamba.runtime.w8a8_linear import OP_NAME

    export_onnx(tiny_quantized_model("g1-384", hadamard=True), tmp_path, force=True)
    monkeypatch.setattr(prefill_fusion, "MAX_FACTOR", 16)  # a Sylvester factor of 32 is then too large
    notes = {}
    after = fuse_decode_linears(fuse_decode_mixers(onnx.load(str(tmp_path / "decode.onnx")))[0], notes,
                                rotation_pass=rotation_pass)
    assert notes == {"decode_rotation": note}
    outs = [n for n in after.graph.node if n.op_type == OP_NAME and attributes(n)["residual"] == 1]
    assert outs and all(attributes(n)["rotation_first"] == attributes(n)["rotation_last"] == 1
                        and attributes(n)["norm"] == 0 for n in outs)
    assert sum(n.op_type == "MatMul" for n in after.graph.node) == 2 * len(outs)


def test_decode_mixer_fusion_says_why_it_leaves_a_graph(exported_decode):
    """A graph it cannot fuse comes back unchanged, with the reason."""
    from qmamba.runtime.decode_fusion import fuse_decode_mixers

    model = _copy(exported_decode)
    ssd = next(n for n in model.graph.node if n.op_type == "QuantSSD")
    ssd.attribute.append(helper.make_attribute("out_dtype", TensorProto.FLOAT16))  # y as fp16: not fused
    del ssd.attribute[[a.name for a in ssd.attribute].index("out_dtype")]
    before = model.SerializeToString()
    after, what = fuse_decode_mixers(model)
    assert after.SerializeToString() == before and "not the exported pattern" in what
    _, none = fuse_decode_mixers(_identity_model())
    assert none == "no QuantConv1dSiLU in the graph"


def _identity_model():
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("choice, max_batch, plugin", [
    ("auto", 1, True), ("auto", 16, True), ("auto", 17, False),
    ("plugin", 64, True), ("tensorrt", 1, False)])
def test_decode_linear_choice_follows_the_measured_threshold(choice, max_batch, plugin):
    """--decode-linear auto: the plugin while the batch range ends at or below LINEAR_PLUGIN_MAX_BATCH (16, where
    it measured faster than TensorRT's GEMM on the H200); the explicit choices are taken as given."""
    from qmamba.runtime.decode_fusion import LINEAR_PLUGIN_MAX_BATCH, decode_linear_plugin
    assert LINEAR_PLUGIN_MAX_BATCH == 16
    assert decode_linear_plugin(choice, max_batch) is plugin


def test_decode_linear_choice_rejects_an_unknown_name():
    from qmamba.runtime.decode_fusion import decode_linear_plugin
    with pytest.raises(ValueError, match="decode_linear must be one of"):
        decode_linear_plugin("gemm", 1)


def test_last_position_prefill_gives_the_full_graphs_last_row(exported, tmp_path):
    """``--prefill-logits last``: the rewritten prefill returns [batch, 1, vocab], bit for bit the last row
    of the exported graph's logits, the states unchanged; a row with an out-of-range id anywhere is NaN."""
    from qmamba.runtime.last_logits import last_position_logits

    full_path, last_path = tmp_path / "full.onnx", tmp_path / "last.onnx"
    onnx.save(exported["prefill"], str(full_path))
    last_model = last_position_logits(onnx.ModelProto.FromString(exported["prefill"].SerializeToString()))
    onnx.checker.check_model(last_model)
    onnx.save(last_model, str(last_path))
    full, last = ort_session(full_path), ort_session(last_path)
    ids = np.random.default_rng(3).integers(0, 256, (3, 37)).astype(np.int64)
    want = dict(zip([o.name for o in full.get_outputs()], full.run(None, {"input_ids": ids})))
    got = dict(zip([o.name for o in last.get_outputs()], last.run(None, {"input_ids": ids})))
    assert got["logits"].shape == (3, 1, 256)
    np.testing.assert_array_equal(got["logits"], want["logits"][:, -1:])
    for name in want:
        if name != "logits":
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    ids[1, 5] = 256  # out of range in the middle of row 1
    logits = last.run(["logits"], {"input_ids": ids})[0]
    assert np.isnan(logits[1]).all() and not np.isnan(logits[[0, 2]]).any()


def test_last_position_prefill_refuses_a_graph_without_the_final_norm(exported):
    from qmamba.runtime.last_logits import last_position_logits

    decode_like = onnx.ModelProto.FromString(exported["prefill"].SerializeToString())
    for n in decode_like.graph.node:
        n.input[:] = ["not_norm_f.weight" if i == "norm_f.weight" else i for i in n.input]
    with pytest.raises(ValueError, match="no norm_f"):
        last_position_logits(decode_like)
