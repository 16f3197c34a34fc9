"""TensorRT engines with qmamba's plugins against ONNX Runtime (which runs the function bodies).

Runs where the C++ runner, the plugin library, TensorRT and a GPU are (docs/tensorrt.md, "GPU tests
and benchmarks"); skips elsewhere. int8 outputs and states must agree except at rounding
ties (runtime/agreement.py), float outputs within a relative L2 bound, greedy tokens exactly.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from qmamba.export import onnx_ops
from qmamba.runtime import trt_runner
from qmamba.runtime.agreement import PREFILL_STATE_MAX_FRACTION, TIE_MAX_FRACTION, float_agreement, int8_agreement
from qmamba.runtime.build import tensorrt_major, trt_graph

from op_cases import conv_case, ssd_case
from trt_helpers import (SMALL_LAYER_SHAPES, export_small_model, float_feed, float_io, ort_run, ort_session,
                         state_pairs, trt_unavailable, two_prompts)

pytestmark = [pytest.mark.gpu, pytest.mark.tensorrt,
              pytest.mark.skipif(trt_unavailable() is not None, reason=str(trt_unavailable()))]

# Relative L2 bounds against ONNX Runtime: the SSD prefill kernel sums in another order on tensor
# cores (its own bound against the fp32 reference is 2e-3, tests/trt_plugins/test_kernels_gpu.py).
Y_BOUND = 3e-3
LOGITS_BOUND = 1e-2
PROFILE = trt_runner.Profile(batch=(1, 2, 4), seq=(1, 16, 64))


def _single_op_engine(tmp_path, op, shape, with_state, batch, seqlen):
    case = conv_case if op == "QuantConv1dSiLU" else ssd_case
    acts, params, attrs = case(SMALL_LAYER_SHAPES[shape], batch, seqlen, with_state)
    model = float_io(onnx_ops.single_op_model(op, with_state, acts, params, attrs))
    path, trt_path = tmp_path / f"{op}.onnx", tmp_path / f"{op}.trt.onnx"
    onnx.save(model, path)  # what ONNX Runtime runs
    onnx.save(trt_graph(model, tensorrt_major()), trt_path)  # as `qmamba build` gives it to TensorRT
    engine = trt_runner.build_engine(trt_path, tmp_path / f"{op}.engine", PROFILE, no_tactic_libraries=True)
    return path, engine, float_feed(acts)


@pytest.mark.parametrize("op", ["QuantConv1dSiLU", "QuantSSD"])
@pytest.mark.parametrize("shape", ["130m-like", "8b-like"])
@pytest.mark.parametrize("with_state,seqlen", [(False, 37), (True, 37), (True, 1)])
def test_single_op_engine_matches_onnxruntime(tmp_path, op, shape, with_state, seqlen):
    path, engine_path, feed = _single_op_engine(tmp_path, op, shape, with_state, 2, seqlen)
    got = trt_runner.TrtEngine(engine_path).infer(feed)
    want = ort_run(ort_session(path), feed)
    assert set(got) == set(want)
    for name, ref in want.items():
        if name == "y":
            a = float_agreement(name, got[name], ref, Y_BOUND)
        else:  # int8 values carried as float through DequantizeLinear(scale 1)
            chunked = op == "QuantSSD" and seqlen > 1  # the prefill kernel's state
            a = int8_agreement(name, got[name].astype(np.int8), ref.astype(np.int8),
                               PREFILL_STATE_MAX_FRACTION if chunked else TIE_MAX_FRACTION)
        assert a.ok, a.row()


def _plugin_engine(tmp_path, name, node, inputs, outputs, consts, fake_quant_of):
    """An engine of one plugin node (`consts`: its constant inputs, torch tensors). TensorRT 8.6 builds in
    int8 mode only with some Q/DQ in the network (else it asks for a calibrator): an unrelated fake-quantized
    copy of the float input `fake_quant_of` is a second output."""
    import torch
    from onnx import TensorProto, helper, numpy_helper

    consts = dict(consts, s=torch.tensor(0.05), zp=torch.tensor(0, dtype=torch.int8))
    fake = f"{fake_quant_of}_fake_quant"
    qdq = [helper.make_node("QuantizeLinear", [fake_quant_of, "s", "zp"], [f"{fake_quant_of}_q"]),
           helper.make_node("DequantizeLinear", [f"{fake_quant_of}_q", "s", "zp"], [fake])]
    graph = helper.make_graph([node, *qdq], name, inputs,
                              [*outputs, helper.make_tensor_value_info(fake, TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v.numpy(), k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(onnx_ops.DOMAIN, 1)])
    onnx.save(model, tmp_path / f"{name}.onnx")
    return trt_runner.build_engine(tmp_path / f"{name}.onnx", tmp_path / f"{name}.engine", PROFILE,
                                   no_tactic_libraries=True)


@pytest.mark.parametrize("norm,residual", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("k,seqlen", [(96, 1), (257, 3)])
def test_linear_plugin_engine_matches_its_twin(tmp_path, norm, residual, k, seqlen):
    """QmambaW8A8Linear (what `qmamba build` puts into decode graphs) alone in an engine, against its
    reference twin: equal, or with the RMSNorm within a rounding tie of one activation."""
    import torch
    from onnx import TensorProto, helper

    from qmamba.runtime.w8a8_linear import OP_NAME, one_tie_error, pack_int8_words, w8a8_linear_ref

    n, batch = 70, 2
    rng = np.random.default_rng(k + 10 * norm + residual)
    w = torch.from_numpy(rng.integers(-128, 128, (n, k)).astype(np.int8))
    t = {"weight": pack_int8_words(w), "out_scale": torch.from_numpy(rng.uniform(1e-5, 1e-3, n).astype(np.float32)),
         "input_scale": torch.tensor([0.02], dtype=torch.float32)}
    names = ["x", "weight", "out_scale", "input_scale"]
    if norm:
        t["norm_weight"] = torch.from_numpy(rng.uniform(0.5, 1.5, k).astype(np.float32))
        names.append("norm_weight")
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", k])]
    if residual:
        names.append("residual")
        inputs.append(helper.make_tensor_value_info("residual", TensorProto.FLOAT, ["batch", "seq", n]))
    node = helper.make_node(OP_NAME, names, ["y"], domain=onnx_ops.DOMAIN, norm=norm, residual=residual, eps=1e-5)
    engine = _plugin_engine(tmp_path, "linear", node, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                            t, "x")
    feed = {"x": rng.standard_normal((batch, seqlen, k)).astype(np.float32) * 2}
    if residual:
        feed["residual"] = rng.standard_normal((batch, seqlen, n)).astype(np.float32)
    got = trt_runner.TrtEngine(engine).infer(feed)["y"]
    want = w8a8_linear_ref(torch.from_numpy(feed["x"]), t["weight"], t["out_scale"], t["input_scale"],
                           t.get("norm_weight"), 1e-5,
                           torch.from_numpy(feed["residual"]) if residual else None).numpy()
    if norm:
        one_lsb = one_tie_error(t["out_scale"], w).numpy()
        assert (np.abs(got - want) <= one_lsb + 1e-6 * np.abs(want)).all()
        assert np.mean(got != want) <= 0.02
    else:
        np.testing.assert_array_equal(got, want)


def test_shape_outside_profile_is_refused(tmp_path):
    _, engine_path, feed = _single_op_engine(tmp_path, "QuantConv1dSiLU", "130m-like", False, 2, 5)
    engine = trt_runner.TrtEngine(engine_path)
    too_long = {k: np.zeros((2, 65, *v.shape[2:]), np.float32) for k, v in feed.items()}
    with pytest.raises(trt_runner.TrtBadInputError, match=r"dimension 1 = 65 is outside the engine's profile \[1, 64\]"):
        engine.infer(too_long)


def test_engine_of_another_gpu_or_library_is_refused(tmp_path):
    _, engine_path, _ = _single_op_engine(tmp_path, "QuantConv1dSiLU", "130m-like", False, 1, 4)
    meta_path = engine_path.with_name(engine_path.name + ".json")
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "compute_capability": "8.7", "gpu": "Orin"}))
    with pytest.raises(trt_runner.TrtBadInputError, match="built for another GPU .*Orin"):
        trt_runner.TrtEngine(engine_path)
    meta_path.write_text(json.dumps({**meta, "plugin_library": "qmamba-trt-plugins 0.0.1; format 0"}))
    with pytest.raises(trt_runner.TrtBadInputError, match="built with plugin library"):
        trt_runner.TrtEngine(engine_path)


@pytest.mark.parametrize("attrs,message", [
    ({"x_scale": None}, "required field x_scale is missing"),
    ({"x_scale": -1.0}, "x_scale must be finite and > 0"),
    ({"nheads": 7}, "nheads = 7 must be divisible by ngroups"),
])
def test_bad_fields_fail_the_build_with_their_name(tmp_path, attrs, message):
    acts, params, good = conv_case(SMALL_LAYER_SHAPES["8b-like"], 1, 4, False)
    model = float_io(onnx_ops.single_op_model("QuantConv1dSiLU", False, acts, params, good))
    node = next(n for n in model.graph.node if n.op_type == "QuantConv1dSiLU")
    for name, value in attrs.items():
        keep = [a for a in node.attribute if a.name != name]
        del node.attribute[:]
        node.attribute.extend(keep)
        if value is not None:
            node.attribute.append(onnx.helper.make_attribute(name, value))
    path = tmp_path / "bad.onnx"
    onnx.save(model, path)
    with pytest.raises(trt_runner.TrtRunnerError, match=message):
        trt_runner.build_engine(path, tmp_path / "bad.engine", PROFILE, no_tactic_libraries=True)


def test_missing_plugin_library_is_reported(tmp_path):
    _, engine_path, _ = _single_op_engine(tmp_path, "QuantConv1dSiLU", "130m-like", False, 1, 4)
    with pytest.raises(trt_runner.TrtRunnerError, match="cannot load plugin library"):
        trt_runner.TrtEngine(engine_path, plugins=tmp_path / "libnothere.so")


@pytest.mark.parametrize("shape", ["130m-like", "8b-like"])
def test_mixer_plugin_engine_matches_its_twin(tmp_path, shape):
    """QmambaDecodeMixer (what `qmamba build` puts into decode graphs) alone in an engine, its states as
    int32 words, against its reference twin: conv state equal, ssm state and gate within ties."""
    import sys
    from pathlib import Path

    import torch
    from onnx import TensorProto, helper

    from qmamba.runtime.decode_mixer import OP_NAME, decode_mixer_ref, flat_int8_words, int8_words

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trt_plugins"))
    import kernel_cases as kc

    layer = SMALL_LAYER_SHAPES[shape]
    batch = 2
    t, fields = kc.mixer_case(layer, batch, torch.Generator().manual_seed(3), device="cpu")
    consts = {k: v for k, v in t.items() if k not in ("zxbcdt", "conv_state", "ssm_state")}
    consts["conv_weight"], consts["conv_bias"] = flat_int8_words(t["conv_weight"]), flat_int8_words(t["conv_bias"])
    order = ["zxbcdt", "conv_weight", "conv_bias", "x_out_scales", "B_out_scales", "C_out_scales", "x_head_group_range",
             "x_dim_group_range", "A_log", "D", "dt_bias", "ssm_state_scale", "conv_state", "ssm_state"]
    words = {k: int8_words(t[k]) for k in ("conv_state", "ssm_state")}
    dyn = lambda name, dtype, v: helper.make_tensor_value_info(name, dtype, ["batch", *v.shape[1:]])  # noqa: E731
    inputs = [dyn("zxbcdt", TensorProto.FLOAT, t["zxbcdt"]), dyn("conv_state", TensorProto.INT32, words["conv_state"]),
              dyn("ssm_state", TensorProto.INT32, words["ssm_state"])]
    node = helper.make_node(OP_NAME, order, ["gated", "conv_state_out", "ssm_state_out"], domain=onnx_ops.DOMAIN,
                            **fields)
    outputs = [helper.make_tensor_value_info(o, dtype, None) for o, dtype in (
        ("gated", TensorProto.FLOAT), ("conv_state_out", TensorProto.INT32), ("ssm_state_out", TensorProto.INT32))]
    engine = _plugin_engine(tmp_path, "mixer", node, inputs, outputs, consts, "zxbcdt")
    feed = {"zxbcdt": t["zxbcdt"].numpy(), **{k: v.numpy() for k, v in words.items()}}
    got = trt_runner.TrtEngine(engine).infer(feed)
    gated, conv_out, ssm_out = decode_mixer_ref(**t, **fields)
    np.testing.assert_array_equal(got["conv_state_out"].view(np.int8).reshape(conv_out.shape), conv_out.numpy())
    diff = np.abs(got["ssm_state_out"].view(np.int8).reshape(ssm_out.shape).astype(np.int32) - ssm_out.numpy())
    assert diff.max() <= 1 and np.mean(diff > 0) <= 5e-3
    g = gated.numpy()
    assert np.linalg.norm(got["gated"] - g) / np.linalg.norm(g) <= 1e-4


# ---- whole models -------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["g1", "g8"])
def model_engines(request, tmp_path_factory):
    from qmamba.runtime.build import build_engines

    root = tmp_path_factory.mktemp(request.param)
    onnx_dir = export_small_model(root / "onnx", request.param)
    build_engines(onnx_dir, root / "engines", batch=(1, 1, 2), seq=(1, 64, 128), no_tactic_libraries=True,
                  backend="cpp")
    return onnx_dir, root / "engines"


def _state_agreement(label, name_out, got, ref):
    """ssm states come from the chunked prefill kernel (and decode goes on from them); conv states are
    exact but for ties."""
    budget = PREFILL_STATE_MAX_FRACTION if name_out.startswith("ssm_state") else TIE_MAX_FRACTION
    return int8_agreement(label, got, ref, budget)


# Decode steps under each way of running them: every step a CUDA graph (two per session: one per state
# buffer set; steps 2 and 3 are pure replays), every step a direct enqueue, and the two alternating.
DECODE_MODES = {"graph": (True,) * 5, "direct": (False,) * 5, "alternate": (True, False, True, False, True)}


@pytest.mark.parametrize("mode", list(DECODE_MODES))
def test_model_prefill_and_decode_match_onnxruntime(model_engines, mode):
    onnx_dir, engines = model_engines
    meta = json.loads((onnx_dir / "qmamba_onnx.json").read_text())
    prefill, decode = ort_session(onnx_dir / "prefill.onnx"), ort_session(onnx_dir / "decode.onnx")
    session = trt_runner.TrtSession(engines, max_batch=2)
    ids = two_prompts()

    rows = []
    logits = session.prefill(ids)
    ref = ort_run(prefill, {"input_ids": ids})
    rows.append(float_agreement("prefill logits", logits, ref["logits"][:, -1], LOGITS_BOUND))
    shapes = {}
    for name_in, name_out in state_pairs(meta):
        got = session.read_state(name_in, ref[name_out].shape)
        rows.append(_state_agreement(f"prefill {name_out}", name_out, got, ref[name_out]))
        shapes[name_in] = ref[name_out].shape
    # Each decode step is compared alone: ONNX Runtime starts from the engine's states of the step before
    # (so the prefill's chunked-order differences do not carry over), and the step is exact but for ties.
    for step, use_graph in enumerate(DECODE_MODES[mode]):
        tok = logits.argmax(-1)
        states = {name_in: session.read_state(name_in, shape) for name_in, shape in shapes.items()}
        logits = session.decode(tok, use_graph=use_graph)
        ref = ort_run(decode, {"input_ids": tok[:, None].astype(np.int64), **states})
        label = f"decode {step} ({'graph' if use_graph else 'direct'})"
        rows.append(float_agreement(f"{label} logits", logits, ref["logits"][:, -1], LOGITS_BOUND))
        for name_in, name_out in state_pairs(meta):
            got = session.read_state(name_in, shapes[name_in])
            rows.append(int8_agreement(f"{label} {name_out}", got, ref[name_out]))
    print("\n".join(r.row() for r in rows))
    assert all(r.ok for r in rows), "\n".join(r.row() for r in rows if not r.ok)


def test_greedy_32_tokens_match_onnxruntime(model_engines):
    onnx_dir, engines = model_engines
    meta = json.loads((onnx_dir / "qmamba_onnx.json").read_text())
    prefill, decode = ort_session(onnx_dir / "prefill.onnx"), ort_session(onnx_dir / "decode.onnx")
    prompt = np.frombuffer(b"ROMEO:\nBut soft, what light", np.uint8).astype(np.int64)[None]

    out = ort_run(prefill, {"input_ids": prompt})
    want = []
    for _ in range(32):
        tok = out["logits"][:, -1].argmax(-1)
        want.append(int(tok[0]))
        states = {i: out[o] for i, o in state_pairs(meta)}
        out = ort_run(decode, {"input_ids": tok[:, None].astype(np.int64), **states})

    for use_graph in (True, False):
        session = trt_runner.TrtSession(engines, max_batch=1)
        logits = session.prefill(prompt)
        got = []
        for _ in range(32):
            tok = logits.argmax(-1)
            got.append(int(tok[0]))
            logits = session.decode(tok, use_graph=use_graph)
        assert got == want, f"graph={use_graph}: {bytes(got)!r} != {bytes(want)!r}"


def test_cli_build_generate_bench(model_engines, tmp_path, capsys):
    from qmamba.cli import main

    onnx_dir, _ = model_engines
    out = tmp_path / "engines"
    assert main(["build", str(onnx_dir), "-o", str(out), "--batch", "1,1,2", "--seq", "1,32,64",
                 "--no-tactic-libraries"]) == 0
    assert main(["build", str(onnx_dir), "-o", str(out)]) == 2  # exists: needs --force
    capsys.readouterr()  # the builds' report
    assert main(["generate", str(out), "--prompt", "KING:", "--tokens", "16"]) == 0
    assert capsys.readouterr().out.startswith("KING:")
    assert main(["bench", str(out), "--batch", "1", "2", "--seq", "64", "--iters", "3", "--profile"]) == 0
    printed = capsys.readouterr().out
    assert "of bound" in printed
    # The layer profile names the plugins' layers (the exporter's node names) in both engines; the decode
    # engine runs each mixer as one QmambaDecodeMixer and each linear as QmambaW8A8Linear.
    prefill_part, decode_part = printed.split("decode step, batch 1")
    assert "prefill, batch 1, seqlen 64" in prefill_part
    assert "mixer.ssd" in prefill_part and "mixer.conv" in prefill_part, prefill_part
    assert "mixer.norm/QmambaGatedNorm" in prefill_part and "norm_f/QmambaGatedNorm" in prefill_part, prefill_part
    assert "mixer.conv/QmambaDecodeMixer" in decode_part and "QmambaW8A8Linear" in decode_part, decode_part
    assert main(["generate", str(out), "--prompt", "x" * 100, "--tokens", "2"]) == 2  # 100 > seq 64


# Prefill engines with each layer's gated norm and rotation, and each RMSNorm before in_proj and lm_head, as
# QmambaGatedNorm (qmamba build's default) and as the graph's layers (--no-prefill-norm-plugin): a model of
# ngroups 8 without and one of ngroups 1 with the Hadamard rotation (d_ssm 256 = 2 x 128).
@pytest.fixture(scope="module", params=[("g8", False), ("g1", True)], ids=["g8", "g1-hadamard"])
def norm_plugin_engines(request, tmp_path_factory):
    onnx_dir, root, metas = _engine_variants(request.param, tmp_path_factory, "norm",
                                             {plugin: {"prefill_norm_plugin": plugin} for plugin in (True, False)})
    return onnx_dir, root, {plugin: meta["prefill_gated_norm"] for plugin, meta in metas.items()}


def _engine_variants(model, tmp_path_factory, label: str, variants: dict):
    """(onnx_dir, root, {variant: qmamba_engines.json}) of a small model ((kind, hadamard)) exported once and
    built into root / engines_<variant> with each variant's build_engines options, at a small profile."""
    from qmamba.runtime.build import build_engines

    kind, hadamard = model
    root = tmp_path_factory.mktemp(f"{label}_{kind}_{hadamard}")
    onnx_dir = export_small_model(root / "onnx", kind, hadamard=hadamard)
    metas = {variant: build_engines(onnx_dir, root / f"engines_{variant}", batch=(1, 1, 2), seq=(1, 64, 128),
                                    no_tactic_libraries=True, backend="cpp", **options)
             for variant, options in variants.items()}
    return onnx_dir, root, metas


def _prefill_agreement(onnx_dir, engines_on, engines_off, what: str) -> list:
    """Prefill logits and states of the engines built with an option (engines_on) against ONNX Runtime and against
    the engines built without it, within the model tests' bounds: the rows of the comparison."""
    meta = json.loads((onnx_dir / "qmamba_onnx.json").read_text())
    ids = two_prompts()
    ref = ort_run(ort_session(onnx_dir / "prefill.onnx"), {"input_ids": ids})
    got = {}
    for on, folder in ((True, engines_on), (False, engines_off)):
        session = trt_runner.TrtSession(folder, max_batch=2)
        got[on] = {"logits": session.prefill(ids)}
        for name_in, name_out in state_pairs(meta):
            got[on][name_out] = session.read_state(name_in, ref[name_out].shape)
    rows = []
    for label, other in (("ONNX Runtime", {**ref, "logits": ref["logits"][:, -1]}), (f"without {what}", got[False])):
        rows.append(float_agreement(f"{what} vs {label}: prefill logits", got[True]["logits"], other["logits"],
                                    LOGITS_BOUND))
        for _, name_out in state_pairs(meta):
            rows.append(_state_agreement(f"{what} vs {label}: {name_out}", name_out, got[True][name_out],
                                         other[name_out]))
    print("\n".join(r.row() for r in rows))
    return rows


def test_prefill_norm_plugin_engine_matches_graph_ops_and_onnxruntime(norm_plugin_engines):
    """Prefill logits and states of the engine with QmambaGatedNorm (the gated norms and the RMSNorms) against
    ONNX Runtime and against the engine built with --no-prefill-norm-plugin, within the model tests' bounds."""
    onnx_dir, root, notes = norm_plugin_engines
    assert notes[True].startswith("QmambaGatedNorm in 2 of 2 layers") and "left as graph ops" not in notes[True]
    assert notes[True].endswith(" and 3 of 3 RMSNorms"), notes[True]
    assert notes[False] == "graph ops (--no-prefill-norm-plugin)"
    rows = _prefill_agreement(onnx_dir, root / "engines_True", root / "engines_False", "QmambaGatedNorm")
    assert all(r.ok for r in rows), "\n".join(r.row() for r in rows if not r.ok)


# --weight-channel-scales: each W8A8 linear's output scale in its weight's DequantizeLinear (the prefill engine's
# GEMMs apply it), and --in-proj-pieces: in_proj as one GEMM per piece, x | B | C and dt quantized in theirs, on
# the same two models.
@pytest.fixture(scope="module", params=[("g8", False), ("g1", True)], ids=["g8", "g1-hadamard"])
def channel_scale_engines(request, tmp_path_factory):
    from qmamba.runtime.build import tensorrt_major

    variants = {"default": {}, "channel": {"weight_channel_scales": True}}
    if tensorrt_major() >= 10:  # TensorRT 8.6 cannot build it: `build` refuses it (test_trt_cli.py)
        variants["pieces"] = {"in_proj_pieces": True}
    return _engine_variants(request.param, tmp_path_factory, "channel", variants)


def test_weight_channel_scales_engine_matches_default_and_onnxruntime(channel_scale_engines):
    onnx_dir, root, _ = channel_scale_engines
    rows = _prefill_agreement(onnx_dir, root / "engines_channel", root / "engines_default", "--weight-channel-scales")
    assert all(r.ok for r in rows), "\n".join(r.row() for r in rows if not r.ok)


def test_in_proj_pieces_engine_matches_default_and_onnxruntime(channel_scale_engines):
    onnx_dir, root, metas = channel_scale_engines
    if "pieces" not in metas:
        pytest.skip("--in-proj-pieces: with TensorRT 8 `qmamba build` refuses it "
                    "(test_trt_cli.py::test_build_refuses_in_proj_pieces_with_tensorrt_8)")
    assert metas["pieces"]["in_proj_pieces"] == "2 linears as 6 MatMuls, 4 of them with int8 outputs"
    assert "in_proj_pieces" not in metas["channel"]
    rows = _prefill_agreement(onnx_dir, root / "engines_pieces", root / "engines_default", "--in-proj-pieces")
    assert all(r.ok for r in rows), "\n".join(r.row() for r in rows if not r.ok)


# --fuse-in-proj-split: each prefill layer's xBC quantization and conv as one QmambaInProjConv node reading
# in_proj's output, and QmambaGatedNorm's z from in_proj's whole rows, after scale_after_split (col_scale) and with
# --weight-channel-scales (none), on the same two models.
@pytest.fixture(scope="module", params=[("g8", False), ("g1", True)], ids=["g8", "g1-hadamard"])
def in_proj_conv_engines(request, tmp_path_factory):
    variants = {"default": {}, "conv": {"fuse_in_proj_split": True},
                "conv_channel": {"fuse_in_proj_split": True, "weight_channel_scales": True}}
    return _engine_variants(request.param, tmp_path_factory, "in_proj_conv", variants)


@pytest.mark.parametrize("variant", ["conv", "conv_channel"])
def test_in_proj_conv_engine_matches_default_and_onnxruntime(in_proj_conv_engines, variant):
    onnx_dir, root, metas = in_proj_conv_engines
    assert metas[variant]["in_proj_conv"] == "QmambaInProjConv in 2 of 2 layers"
    assert ", z from in_proj's whole rows in 2 " in metas[variant]["prefill_gated_norm"]
    assert "in_proj_conv" not in metas["default"]
    rows = _prefill_agreement(onnx_dir, root / f"engines_{variant}", root / "engines_default", "QmambaInProjConv")
    assert all(r.ok for r in rows), "\n".join(r.row() for r in rows if not r.ok)


def test_polygraphy_comparator_engine_vs_onnxruntime(model_engines):
    pytest.importorskip("polygraphy")
    from qmamba.runtime.polygraphy_trt import compare

    onnx_dir, engines = model_engines
    ids = np.frombuffer(b"To be, or not to be", np.uint8).astype(np.int64)[None]
    # Logits: the mean error (the chunked prefill sum moves single logits more than an fp32 sum would);
    # int8 states: within 1 LSB everywhere.
    ok, _ = compare(onnx_dir / "prefill.onnx", engines / "prefill.engine", [{"input_ids": ids}], rtol=1e-2,
                    atol=1e-2, float_error_stat="mean")
    assert ok
