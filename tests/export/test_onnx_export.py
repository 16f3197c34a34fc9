"""`qmamba export`: the prefill/decode graphs of a calibrated model, their checks, the bit-exact
scales, the function-free and external-data variants, and the errors on bad input."""
from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from qmamba.cli import main as cli_main
from qmamba.export import hadamard as had, onnx_ops
from qmamba.export.checkpoint import save_quantized
from qmamba.export.metadata import read_onnx_metadata
from qmamba.export.onnx_export import build_graph, export_onnx
from qmamba.export.validate import QMambaInputError

from tiny_models import exported_tiny_model, tiny_float_model, tiny_quantized_model

KINDS = ["g1", "g8"]


@pytest.fixture(scope="module", params=KINDS)
def exported(request, tmp_path_factory):
    return exported_tiny_model(request.param, tmp_path_factory.mktemp(f"onnx_{request.param}"))


@pytest.mark.parametrize("kind", ["prefill", "decode"])
def test_graphs_pass_checker_and_shape_inference(exported, kind):
    model, out = exported
    path = out / f"{kind}.onnx"
    onnx_ops.register_schemas()
    onnx.checker.check_model(str(path), full_check=True)
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path)), check_type=True,
                                                 strict_mode=True)
    types = {v.name: v.type.tensor_type for v in [*inferred.graph.value_info, *inferred.graph.output]}
    c = model.config
    assert types["logits"].elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_value for d in types["ssm_state_out.1"].shape.dim][1:] == [c.nheads, c.headdim, c.d_state]
    assert types["layers.0.mixer.ssd.y"].elem_type == onnx.TensorProto.FLOAT


@pytest.mark.parametrize("kind", ["prefill", "decode"])
def test_custom_nodes_plugins_functions_and_shared_initializers(exported, kind):
    model, out = exported
    proto = onnx.load(str(out / f"{kind}.onnx"))
    decode = kind == "decode"
    nodes = [n for n in proto.graph.node if n.domain == onnx_ops.DOMAIN]
    assert [n.op_type for n in nodes] == ["QuantConv1dSiLU", "QuantSSD"] * model.config.n_layer
    init_names = [t.name for t in proto.graph.initializer]
    assert len(init_names) == len(set(init_names))
    for conv, ssd in zip(nodes[::2], nodes[1::2]):
        for n in (conv, ssd):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            assert attrs["plugin_namespace"] == b"" and attrs["plugin_version"] == b"1"
            assert len(n.input) == len(onnx_ops.OPS[n.op_type].inputs) - (0 if decode else 1)
        # the group tensors: one initializer per layer, the same name in both nodes
        assert list(conv.input[3:8]) == list(ssd.input[7:12])
        assert all(name in init_names for name in conv.input[3:8])
    forms = {f.name: len(f.input) for f in proto.functions}
    assert forms == {op: len(s.inputs) - (0 if decode else 1) for op, s in onnx_ops.OPS.items()}
    meta = read_onnx_metadata(out)
    assert meta["graphs"][kind]["outputs"][0] == "logits"
    assert meta["states"][1]["ssm_state"] == {"input": "ssm_state.1", "output": "ssm_state_out.1",
                                             "dtype": "int8",
                                             "shape": ["batch", model.config.nheads,
                                                       model.config.headdim, model.config.d_state]}


def test_every_buffer_reloads_bit_exact(exported):
    """Every tensor of the PyTorch model is an initializer with the same bits, or (scalar conv
    and dt scales) an attribute of that layer's custom node holding the same fp32 value."""
    model, out = exported
    proto = onnx.load(str(out / "decode.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    node_attrs = {}
    for n in proto.graph.node:
        if n.domain == onnx_ops.DOMAIN:
            layer = n.name.rsplit(".", 1)[0]  # "layers.3.mixer"
            for a in n.attribute:
                if a.type == onnx.AttributeProto.FLOAT:
                    node_attrs.setdefault(f"{layer}.{a.name}", set()).add(
                        np.float32(a.f).tobytes())
    for key, buf in model.state_dict().items():
        arr = buf.detach().cpu().numpy()
        if key in inits:
            assert inits[key].dtype == arr.dtype and inits[key].shape == arr.shape, key
            assert inits[key].tobytes() == arr.tobytes(), key
        if key in node_attrs:
            assert node_attrs[key] == {arr.astype(np.float32).tobytes()}, key
        assert key in inits or key in node_attrs, f"{key} is in neither initializers nor attributes"


def test_function_free_variant(tmp_path):
    model = tiny_quantized_model("g8")
    meta = export_onnx(model, tmp_path / "plugins_only", functions=False)
    assert meta["functions"] is False
    for kind in ("prefill", "decode"):
        proto = onnx.load(str(tmp_path / "plugins_only" / f"{kind}.onnx"))
        assert not proto.functions
        assert sum(n.domain == onnx_ops.DOMAIN for n in proto.graph.node) == 2 * model.config.n_layer


def test_external_data_path(tmp_path):
    """The >2 GB path, forced on a small model: tensors in <graph>.onnx.data, same results."""
    from qmamba.runtime.ort import OrtModel

    model = tiny_quantized_model("g1")
    meta = export_onnx(model, tmp_path / "ext", external_data="always")
    export_onnx(model, tmp_path / "inline")
    assert all(g["external_data"] for g in meta["graphs"].values())
    data = tmp_path / "ext" / "prefill.onnx.data"
    assert data.is_file() and data.stat().st_size > (tmp_path / "ext" / "prefill.onnx").stat().st_size
    onnx.checker.check_model(str(tmp_path / "ext" / "decode.onnx"), full_check=True)
    ids = np.frombuffer(b"To be, or not to be", np.uint8).astype(np.int64)[None]
    a, b = OrtModel(tmp_path / "ext").prefill(ids), OrtModel(tmp_path / "inline").prefill(ids)
    np.testing.assert_array_equal(a[0], b[0])


def test_hadamard_model_exports_and_matches(tmp_path):
    from qmamba.runtime.ort import OrtModel

    model = tiny_quantized_model("g1", hadamard=True)
    export_onnx(model, tmp_path / "had")
    proto = onnx.load(str(tmp_path / "had" / "prefill.onnx"))
    # the rotation's Kronecker factors, shared by the layers; no d_ssm x d_ssm matrix
    d = model.config.d_ssm
    factors = [t for t in proto.graph.initializer if t.name.startswith(f"hadamard.{d}.")]
    assert sorted(t.dims[0] for t in factors) == sorted(had.rotation_sizes(d))
    assert max(t.dims[0] for t in factors) <= had.MAX_FACTOR
    ids = np.frombuffer(b"First Citizen: Before we proceed", np.uint8).astype(np.int64)[None]
    logits, _ = OrtModel(tmp_path / "had").prefill(ids)
    ref, _ = model(torch.from_numpy(ids))
    assert np.linalg.norm(logits - ref.numpy()) / np.linalg.norm(ref.numpy()) < 1e-2


def test_factored_hadamard_matches_the_reference(tmp_path):
    """A rotation of two Kronecker factors (d_ssm 384 = 12 x 32, as 130m's 1536 = 12 x 128): the graph's
    Reshape / MatMul chain computes what the reference's ``hadamard.rotate`` does, prefill and decode."""
    from qmamba.runtime.ort import OrtModel

    model = tiny_quantized_model("g1-384", n_layer=1, hadamard=True)
    assert had.rotation_sizes(384) == [12, 32]
    export_onnx(model, tmp_path / "had")
    proto = onnx.load(str(tmp_path / "had" / "decode.onnx"))
    assert sorted(t.dims[0] for t in proto.graph.initializer if t.name.startswith("hadamard.384.")) == [12, 32]
    ids = np.frombuffer(b"First Citizen: Before we proceed any further", np.uint8).astype(np.int64)[None]
    ort = OrtModel(tmp_path / "had")
    logits, states = ort.prefill(ids[:, :-1])
    ref, ref_states = model(torch.from_numpy(ids[:, :-1]))
    assert np.linalg.norm(logits - ref.numpy()) / np.linalg.norm(ref.numpy()) < 1e-4
    step, _ = ort.decode(ids[:, -1:], states)
    ref_step, _ = model(torch.from_numpy(ids[:, -1:]), ref_states)
    assert np.linalg.norm(step - ref_step.numpy()) / np.linalg.norm(ref_step.numpy()) < 1e-4


def test_refuses_unquantized_model(tmp_path):
    with pytest.raises(QMambaInputError, match="unquantized float model.*qmamba calibrate"):
        export_onnx(tiny_float_model("g1"), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_refuses_inconsistent_model(tmp_path):
    model = tiny_quantized_model("g8")
    broken = copy.deepcopy(model)
    broken.layers[1].mixer.x_dim_group_range[0, 0, -1] = 3
    with pytest.raises(QMambaInputError, match="layer 1 mixer: x_dim_group_range\\[0, 0\\]"):
        build_graph(broken, "prefill")
    broken.load_state_dict(model.state_dict())
    broken.layers[0].mixer.ssm_state_scale[0, 0, 0, 0] = float("nan")
    with pytest.raises(QMambaInputError, match="layer 0 mixer: ssm_state_scale has non-finite"):
        export_onnx(broken, tmp_path / "y")


def test_refuses_unsupported_sizes():
    model = tiny_quantized_model("g1")
    bad = copy.deepcopy(model)
    bad.config.d_conv = 5
    with pytest.raises(QMambaInputError, match="d_conv must be 2..4"):
        build_graph(bad, "decode")
    with pytest.raises(ValueError, match="graph kind must be one of"):
        build_graph(model, "train")


def test_cli_export_force_and_errors(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    save_quantized(tiny_quantized_model("g1"), ckpt)
    out = tmp_path / "onnx"
    assert cli_main(["export", str(ckpt), "-o", str(out)]) == 0
    assert "decode:" in capsys.readouterr().out
    assert cli_main(["export", str(ckpt), "-o", str(out)]) == 2
    assert "exists and is not empty; pass --force" in capsys.readouterr().err
    assert cli_main(["export", str(ckpt), "-o", str(out), "--force"]) == 0
    tiny_float_model("g1").save_pretrained(tmp_path / "float")
    assert cli_main(["export", str(tmp_path / "float"), "-o", str(tmp_path / "o2")]) == 2
    assert "unquantized model" in capsys.readouterr().err
    assert cli_main(["export", str(tmp_path / "missing"), "-o", str(tmp_path / "o3")]) == 2
