"""fuse_prefill_gated_norms (runtime/prefill_fusion.py), checked without TensorRT: each layer's gated norm and
Hadamard rotation of the exported prefill graph becomes one QmambaGatedNorm node whose inputs and fields are the
model's; the fields describe what the replaced nodes compute (ONNX Runtime on the exported graph against
QuantGatedRMSNorm and hadamard.rotate built from the node alone); anything that differs from the exporter's
pattern is left as it is; `qmamba build` fuses the prefill graph only, and --no-prefill-norm-plugin keeps it."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qmamba.export.onnx_export import export_onnx
from qmamba.runtime.graph_index import attributes
from qmamba.runtime.prefill_fusion import OP_NAME, fuse_prefill_gated_norms, plugin_rotation, sylvester

from tiny_models import tiny_quantized_model
from trt_helpers import ort_session

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


def _fused(model):
    return [n for n in model.graph.node if n.op_type == OP_NAME]


def test_each_layer_becomes_one_node_with_the_models_values(case):
    (kind, had), model, prefill = case
    notes = {}
    after = fuse_prefill_gated_norms(_copy(prefill), notes)
    n_layer = len(model.layers)
    assert notes == {"prefill_gated_norm": f"{OP_NAME} in {n_layer} of {n_layer} layers ({ROTATION_NOTE[kind, had]})"}
    nodes = _fused(after)
    assert len(nodes) == n_layer
    ops, before = [n.op_type for n in after.graph.node], [n.op_type for n in prefill.graph.node]
    assert not {"Sigmoid", "Reshape"} & set(ops)
    assert ops.count("MatMul") == 2 * n_layer + 1  # in_proj, out_proj, lm_head: no rotation MatMul left
    for op in ("ReduceMean", "Sqrt", "Reciprocal", "QuantizeLinear", "DequantizeLinear"):  # the RMSNorms stay
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
        assert np.float32(a["z_scale"]) == mixer.z_scale.numpy()
        if not had:
            assert (a["rotation_first"], a["rotation_last"], len(node.input)) == (1, 1, 3)
        elif a["rotation_first"] > 1:  # two factors: F_0 is an input, shared by the layers
            assert (a["rotation_first"], a["rotation_last"]) == (12, 32)
            assert node.input[3] == f"{OP_NAME}.rotation.384.0" and nodes[0].input[3] == node.input[3]
        else:
            assert (a["rotation_last"], len(node.input)) == (128, 3)


def test_the_nodes_fields_describe_the_replaced_graph(case, tmp_path):
    """ONNX Runtime on the exported graph (y and the z piece in, out_proj's QuantizeLinear input out) against
    the reference made from the node alone: z's Q/DQ with its z_scale, QuantGatedRMSNorm with its channels,
    group_size, eps and weight, then the rotation its F_0 and Sylvester order give (which is the model's:
    hadamard.rotate)."""
    import torch

    from qmamba.export import hadamard, ops
    from qmamba.export.quant_modules import QuantGatedRMSNorm

    _, _, prefill = case
    after = fuse_prefill_gated_norms(_copy(prefill))
    nodes = _fused(after)
    inits = {t.name: numpy_helper.to_array(t) for t in after.graph.initializer}
    probe = _copy(prefill)
    names = sorted({x for n in nodes for x in (n.input[0], n.input[1], n.output[0])})
    probe.graph.output.extend(helper.make_tensor_value_info(x, TensorProto.FLOAT, None) for x in names)
    onnx.save(probe, tmp_path / "probe.onnx")
    feed = {"input_ids": np.random.default_rng(5).integers(0, 256, (2, 37)).astype(np.int64)}
    sess = ort_session(tmp_path / "probe.onnx")
    values = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
    for node in nodes:
        a = attributes(node)
        k, f0, f1 = a["channels"], a["rotation_first"], a["rotation_last"]
        first = inits[node.input[3]].astype(np.float64) if f0 > 1 else np.eye(1)
        last = sylvester(f1).astype(np.float64) if f1 > 1 else np.eye(1)
        rotated = f0 * f1 > 1
        if rotated:
            np.testing.assert_allclose(np.kron(first, last), hadamard.rotation_matrix(k, torch.float64).numpy(),
                                       rtol=0, atol=1e-7)
        y, z = (torch.from_numpy(values[x]) for x in node.input[:2])
        scale = torch.tensor(a["z_scale"], dtype=torch.float32)
        z_gate = ops.quantize(z, scale).float() * scale if a["z_scale"] > 0 else z
        norm = QuantGatedRMSNorm(k, a["group_size"], a["eps"])
        norm.weight.copy_(torch.from_numpy(inits[node.input[2]].copy()))
        g = norm(y, z_gate)
        want = (hadamard.rotate(g) if rotated else g).numpy()
        got = values[node.output[0]]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=4e-6 * np.abs(want).max(), err_msg=node.name)


def test_a_rotation_factor_that_differs_leaves_the_layers_as_they_are(tmp_path):
    """One entry of the rotation's Sylvester factor one ulp off: nothing is fused, and the note says why."""
    export_onnx(tiny_quantized_model("g1-384", hadamard=True), tmp_path, force=True)
    model = onnx.load(str(tmp_path / "prefill.onnx"))
    init = next(t for t in model.graph.initializer if t.name == "hadamard.384.1")
    f = numpy_helper.to_array(init).copy()
    f[3, 5] = np.nextafter(f[3, 5], np.float32(2))
    init.CopyFrom(numpy_helper.from_array(f, init.name))
    before = model.SerializeToString()
    notes = {}
    after = fuse_prefill_gated_norms(model, notes)
    assert after.SerializeToString() == before
    why = "its rotation's factors are not export/hadamard.py's rotation_factors_fp32(384)"
    assert notes["prefill_gated_norm"] == (f"{OP_NAME} in 0 of 2 layers; left as graph ops: "
                                           f"layers.0.mixer.ssd: {why}; layers.1.mixer.ssd: {why}")


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
    first, second = _fused(after)
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
    assert len(_fused(after)) == 1
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
            f"{OP_NAME} in 2 of 2 layers (Hadamard 12 x 32)" if option else "graph ops (--no-prefill-norm-plugin)")
    assert len(_fused(graphs[True]["prefill"])) == 2 and not _fused(graphs[False]["prefill"])
    assert not _fused(graphs[True]["decode"])
    assert graphs[True]["decode"].SerializeToString() == graphs[False]["decode"].SerializeToString()
    # TensorRT 8's rewrites: QuantSSD's y reaches the node through QmambaBitsAsFloat; no int8 tensor touches it.
    g = graphs[True]["prefill"].graph
    made = {o: n for n in g.node for o in n.output}
    for node in _fused(graphs[True]["prefill"]):
        assert made[node.input[0]].op_type == "QmambaBitsAsFloat"
        assert made[node.input[1]].op_type == "Mul"  # the z piece times its slice of in_proj's scale
        assert all(made.get(x) is None or made[x].op_type not in ("QuantizeLinear", "DequantizeLinear")
                   for x in node.input)


def test_cli_build_says_which_path_the_prefill_norm_took(export_dir, fake_tensorrt, tmp_path, capsys):
    from qmamba.cli import main

    common = [str(export_dir), "--plugins", str(fake_tensorrt), "--backend", "cpp"]
    assert main(["build", *common, "-o", str(tmp_path / "a")]) == 0
    assert f"prefill gated norm: {OP_NAME} in 2 of 2 layers (Hadamard 12 x 32)" in capsys.readouterr().out
    assert main(["build", *common, "-o", str(tmp_path / "b"), "--no-prefill-norm-plugin"]) == 0
    assert "prefill gated norm: graph ops (--no-prefill-norm-plugin)" in capsys.readouterr().out
