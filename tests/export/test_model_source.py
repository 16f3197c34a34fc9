"""One resolver of every MODEL argument: the kind is read from the files before anything is built, and a
kind a command cannot take is refused with a message naming the folder and the key."""
from __future__ import annotations

import json

import pytest

from qmamba import models
from qmamba.cli import main
from qmamba.export import model_source as ms
from qmamba.export.validate import QMambaInputError


def _folder(tmp_path, name, conf):
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(conf if isinstance(conf, str) else json.dumps(conf))
    return d


@pytest.fixture
def no_model_is_built(monkeypatch):
    """Any attempt to build a transformers Mamba2 fails the test."""
    from transformers import Mamba2ForCausalLM

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(Mamba2ForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(Mamba2ForCausalLM, "__init__", refuse)


@pytest.mark.parametrize("conf,kind", [
    ({"format": "qmamba-w8a8", "version": 1, "config": {}}, ms.QMAMBA_W8A8),
    ({"d_model": 64, "n_layer": 2, "ssm_cfg": {"layer": "W8A8QMamba2"}}, ms.QUAMBA2_W8A8),
    ({"model_type": "mamba2", "hidden_size": 64}, ms.TRANSFORMERS_MAMBA2),
])
def test_kind_is_read_from_config(tmp_path, no_model_is_built, conf, kind):
    src = ms.identify(_folder(tmp_path, "m", conf))
    assert src.kind == kind and src.w8a8 == (kind in ms.W8A8_KINDS)


def test_shipped_names():
    src = ms.identify(models.DEFAULT_MODEL)
    assert src.kind == ms.SHIPPED and src.path == models.model_dir() and src.config["model_type"] == "mamba2"
    with pytest.raises(ValueError, match="unknown model 'mamba2-huge'; shipped models: mamba2-tiny-g1"):
        ms.identify("mamba2-huge")


@pytest.mark.parametrize("conf,message", [
    ({"format": "qmamba-w4a4"}, "key 'format' is 'qmamba-w4a4'"),
    ({"model_type": "llama"}, "key 'model_type' is 'llama'"),
    ({}, "key 'model_type' is missing"),
    ("[]", "expected a JSON object, got list"),
    ('{"model_type": "mam', "not valid JSON"),
])
def test_unknown_kinds_are_refused_before_anything_is_built(tmp_path, no_model_is_built, conf, message):
    d = _folder(tmp_path, "m", conf)
    with pytest.raises(QMambaInputError, match=message) as e:
        ms.load_float(d, "calibrate")
    assert str(d / "config.json") in str(e.value)


def test_missing_and_foreign_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="model directory .*nothing does not exist"):
        ms.identify(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        ms.identify(tmp_path)
    (tmp_path / "qmamba_onnx.json").write_text("{}")
    with pytest.raises(QMambaInputError, match="an exported ONNX directory"):
        ms.identify(tmp_path)
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(QMambaInputError, match="a file; a model is a folder"):
        ms.identify(tmp_path / "f.txt")


def test_w8a8_where_float_is_expected_and_the_reverse(tmp_path, no_model_is_built):
    ckpt = _folder(tmp_path, "ckpt", {"format": "qmamba-w8a8", "version": 1, "config": {}})
    with pytest.raises(QMambaInputError, match="is a qmamba-w8a8 checkpoint; calibrate takes a float model"):
        ms.load_float(ckpt, "calibrate")
    hf = _folder(tmp_path, "hf", {"model_type": "mamba2"})
    with pytest.raises(QMambaInputError, match="unquantized model .*quantize it first"):
        ms.load_w8a8(hf, "export")


def test_calibrate_cli_refuses_a_checkpoint_without_building_a_model(tmp_path, capsys, no_model_is_built):
    ckpt = _folder(tmp_path, "ckpt", {"format": "qmamba-w8a8", "version": 1, "config": {}})
    (tmp_path / "t.txt").write_text("text")
    assert main(["calibrate", "--model", str(ckpt), "--text", str(tmp_path / "t.txt"), "-o", str(tmp_path / "o")]) == 2
    assert "calibrate takes a float model" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_float_models_get_the_grouped_norm():
    model = ms.load_float("mamba2-tiny-g4", "eval")
    mixer = model.backbone.layers[0].mixer
    assert mixer.norm.group_size == mixer.intermediate_size // mixer.n_groups and not model.training
