"""`qmamba build / generate / bench` and the runner's Python face refuse bad input with one clear
line, without TensorRT or a GPU (the GPU runs are in test_trt_engines.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from qmamba.cli import main
from qmamba.runtime import trt_runner
from qmamba.runtime.generate import pick


def _err(capsys) -> str:
    return capsys.readouterr().err


def test_build_needs_an_export_directory(tmp_path, capsys):
    assert main(["build", str(tmp_path), "-o", str(tmp_path / "e")]) == 2
    assert "no qmamba_onnx.json (not a `qmamba export` directory)" in _err(capsys)


def test_build_refuses_a_malformed_range(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["build", str(tmp_path), "-o", str(tmp_path / "e"), "--seq", "1,8"])
    assert "expected MIN,OPT,MAX" in _err(capsys)


def test_build_refuses_a_missing_graph(tmp_path, capsys):
    (tmp_path / "qmamba_onnx.json").write_text(json.dumps(
        {"format": "qmamba-onnx", "config": {}, "states": [],
         "graphs": {"prefill": {"file": "prefill.onnx"}, "decode": {"file": "decode.onnx"}}}))
    assert main(["build", str(tmp_path), "-o", str(tmp_path / "e")]) == 2
    assert "prefill.onnx is missing" in _err(capsys)


@pytest.mark.parametrize("batch,seq", [((2, 1, 4), (1, 8, 16)), ((1, 1, 4), (0, 8, 16)), ((1, 5, 4), (1, 1, 1))])
def test_profile_ranges_are_checked(batch, seq):
    with pytest.raises(ValueError, match="1 <= MIN <= OPT <= MAX"):
        trt_runner.Profile(batch, seq)


def test_generate_and_bench_need_engines(tmp_path, capsys):
    assert main(["generate", str(tmp_path), "--prompt", "hi"]) == 2
    assert "prefill.engine does not exist" in _err(capsys)
    assert main(["bench", str(tmp_path)]) == 2
    assert "not a `qmamba build` directory" in _err(capsys)


def test_missing_runner_library_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("QMAMBA_RUNNER_LIB", str(tmp_path / "libqmamba_runner.so"))
    monkeypatch.setattr(trt_runner, "_LIB", None)
    with pytest.raises(FileNotFoundError, match="QMAMBA_RUNNER_LIB="):
        trt_runner.runner_library()


def test_integer_inputs_are_cast_only_when_they_fit():
    t = trt_runner.TensorMeta("input_ids", True, np.int32, (-1, -1))
    assert trt_runner.cast_input(t, np.array([[1, 2]], np.int64), "e").dtype == np.int32
    with pytest.raises(ValueError, match="values outside int32"):
        trt_runner.cast_input(t, np.array([[2**40]], np.int64), "e")
    with pytest.raises(ValueError, match="must be int32, got float32"):
        trt_runner.cast_input(t, np.zeros((1, 2), np.float32), "e")


def test_sampling_is_greedy_at_zero_temperature_and_respects_top_k():
    rng = np.random.default_rng(0)
    logits = np.array([[0.0, 3.0, 1.0, 2.0]], np.float32)
    assert pick(logits, 0.0, 0, rng).tolist() == [1]
    draws = {int(pick(logits, 5.0, 2, rng)[0]) for _ in range(200)}
    assert draws == {1, 3}
