"""Polygraphy: the data loader script, the PyTorch reference runner vs OnnxrtRunner through
Comparator, and the documented `polygraphy run ... --onnxrt --data-loader-script` command."""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from qmamba.runtime import data_loader
from qmamba.runtime.polygraphy_tools import TorchReferenceRunner, compare_with_onnxrt

from tiny_models import exported_tiny_model

LOADER = Path(data_loader.__file__)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return exported_tiny_model("g8", tmp_path_factory.mktemp("poly_g8"))


def test_data_loader_feeds(exported):
    model, out = exported
    c = model.config
    feeds = data_loader.prefill_feeds(iterations=3, seq_len=16, batch=2)
    assert len(feeds) == 3 and feeds[0]["input_ids"].shape == (2, 16)
    assert feeds[0]["input_ids"].dtype == np.int64 and feeds[2]["input_ids"].max() < 256
    assert not np.array_equal(feeds[0]["input_ids"], feeds[1]["input_ids"])
    decode = data_loader.decode_feeds(out, iterations=1, seq_len=16)
    assert decode[0]["input_ids"].shape == (1, 1)
    assert decode[0]["ssm_state.1"].shape == (1, c.nheads, c.headdim, c.d_state)
    assert decode[0]["conv_state.0"].dtype == np.int8 and np.abs(decode[0]["ssm_state.0"]).max() > 0


def test_decode_loader_needs_the_onnx_dir(monkeypatch):
    monkeypatch.delenv("QMAMBA_ONNX_DIR", raising=False)
    with pytest.raises(ValueError, match="set QMAMBA_ONNX_DIR"):
        next(data_loader.load_decode_data())


@pytest.mark.parametrize("kind", ["prefill", "decode"])
def test_comparator_onnxrt_vs_pytorch(exported, kind):
    model, out = exported
    assert compare_with_onnxrt(model, out, kind)


def test_comparator_catches_a_wrong_model(exported):
    """The comparison is not vacuous: another model's reference fails it."""
    model, out = exported
    other = copy.deepcopy(model)
    other.lm_head.weight_scale.mul_(1.5)
    assert not compare_with_onnxrt(other, out, "prefill")


def test_reference_runner_metadata(exported):
    model, _ = exported
    with TorchReferenceRunner(model, "decode") as runner:
        meta = runner.get_input_metadata(use_numpy_dtypes=False)
    assert list(meta.keys())[:3] == ["input_ids", "conv_state.0", "ssm_state.0"]
    with pytest.raises(ValueError, match="kind must be one of"):
        TorchReferenceRunner(model, "train")


@pytest.mark.skipif(shutil.which("polygraphy") is None, reason="polygraphy CLI not on PATH")
def test_polygraphy_run_cli(exported):
    _, out = exported
    env = {**os.environ, "QMAMBA_ONNX_DIR": str(out), "QMAMBA_SEQ_LEN": "32"}
    cmd = ["polygraphy", "run", str(out / "decode.onnx"), "--onnxrt",
           "--data-loader-script", f"{LOADER}:load_decode_data"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "PASSED" in done.stdout + done.stderr
