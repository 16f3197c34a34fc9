"""`qmamba build / generate / bench` and the runner's Python face refuse bad input with one clear
line, without TensorRT or a GPU (the GPU runs are in test_trt_engines.py)."""
from __future__ import annotations

import json
from pathlib import Path

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


def test_build_refuses_an_optimization_level_outside_0_to_5(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["build", str(tmp_path), "-o", str(tmp_path / "e"), "--builder-optimization-level", "6"])
    assert "optimization level 0..5" in _err(capsys)


@pytest.fixture
def stand_in_builder(monkeypatch, tmp_path):
    """trt_runner.build_engine replaced by a recorder that writes a placeholder engine: the CLI's
    options, the timing cache path and the progress lines are checked without TensorRT."""
    calls = []

    def build_engine(onnx_path, engine_path, profile, plugins=None, fp16=False, no_tactic_libraries=False,
                     optimization_level=None, timing_cache=None):
        import onnx

        graph = onnx.load(str(onnx_path), load_external_data=False).graph
        logits = next(o for o in graph.output if o.name == "logits").type.tensor_type.shape.dim
        calls.append(dict(engine=engine_path.name, profile=profile, level=optimization_level,
                          cache=timing_cache, no_libraries=no_tactic_libraries,
                          logits=[d.dim_param or d.dim_value for d in logits],
                          external_data=Path(f"{onnx_path}.data").is_file(),
                          cached=timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else None))
        engine_path.write_bytes(b"engine")
        if timing_cache is not None:  # as TensorRT does: the timings of this build added to the cache
            timing_cache.write_bytes((timing_cache.read_bytes() if timing_cache.is_file() else b"") + b"t")
        return engine_path

    plugins = tmp_path / "libqmamba_trt_plugins.so"
    plugins.write_bytes(b"")
    monkeypatch.setattr(trt_runner, "build_engine", build_engine)
    monkeypatch.setattr(trt_runner, "tensorrt_python", lambda: None)
    monkeypatch.setattr(trt_runner, "plugin_library", lambda: plugins)
    monkeypatch.setattr("qmamba.runtime.build.tensorrt_major", lambda trt=None: 8)
    return calls


def test_build_defaults_to_optimization_level_0(stand_in_builder, tmp_path):
    from tiny_models import exported_tiny_model

    _, onnx_dir = exported_tiny_model("g1", tmp_path / "onnx")
    assert main(["build", str(onnx_dir), "-o", str(tmp_path / "engines")]) == 0
    assert [c["level"] for c in stand_in_builder] == [0, 0]
    engines = json.loads((tmp_path / "engines" / "qmamba_engines.json").read_text())
    assert engines["profiles"]["prefill"] == {"batch": [1, 1, 8], "seq": [1, 128, 2048]}


def test_build_gives_tensorrt_weights_past_2_gib_as_external_data(stand_in_builder, tmp_path, monkeypatch):
    """A 2.7b graph holds more than protobuf's 2 GiB: the rewritten graph goes to TensorRT with its
    weights in a file beside it (the threshold lowered here so that the tiny model crosses it)."""
    from tiny_models import exported_tiny_model

    _, onnx_dir = exported_tiny_model("g1", tmp_path / "onnx")
    monkeypatch.setattr("qmamba.export.onnx_export.EXTERNAL_DATA_THRESHOLD", 1000)
    assert main(["build", str(onnx_dir), "-o", str(tmp_path / "engines")]) == 0
    assert [c["external_data"] for c in stand_in_builder] == [True, True]
    assert not list((tmp_path / "engines").glob("*.data"))  # the rewritten graphs are not kept


def test_build_prefill_logits_last_gives_tensorrt_the_last_position_only(stand_in_builder, tmp_path):
    from tiny_models import exported_tiny_model

    _, onnx_dir = exported_tiny_model("g1", tmp_path / "onnx")
    assert main(["build", str(onnx_dir), "-o", str(tmp_path / "all")]) == 0
    assert main(["build", str(onnx_dir), "-o", str(tmp_path / "last"), "--prefill-logits", "last"]) == 0
    every, last = ["batch", "seq", 256], ["batch", 1, 256]  # prefill, decode of each build; decode as exported
    assert [c["logits"] for c in stand_in_builder] == [every, every, last, every]
    for name in ("all", "last"):
        engines = json.loads((tmp_path / name / "qmamba_engines.json").read_text())
        assert engines["prefill_logits"] == name


def test_build_points_to_last_position_logits_when_all_would_be_large(stand_in_builder, tmp_path, capsys):
    from tiny_models import exported_tiny_model

    _, onnx_dir = exported_tiny_model("g1", tmp_path / "onnx")  # vocabulary 256
    assert main(["build", str(onnx_dir), "-o", str(tmp_path / "small")]) == 0  # 8 x 2048 x 256 x 4 B
    assert "--prefill-logits last" not in capsys.readouterr().out
    assert main(["build", str(onnx_dir), "-o", str(tmp_path / "large"), "--batch", "1,1,64",
                 "--seq", "1,128,32768"]) == 0  # 64 x 32768 x 256 x 4 B = 2 GiB
    assert ("note: the prefill engine returns logits for every position: 2.0 GiB of fp32 at batch 64 x seq "
            "32768 x vocab 256") in capsys.readouterr().out
    assert main(["build", str(onnx_dir), "-o", str(tmp_path / "last"), "--batch", "1,1,64",
                 "--seq", "1,128,32768", "--prefill-logits", "last"]) == 0
    assert "note: the prefill engine" not in capsys.readouterr().out


def test_build_passes_level_and_timing_cache_and_reports_each_engine(stand_in_builder, tmp_path, capsys):
    from tiny_models import exported_tiny_model

    _, onnx_dir = exported_tiny_model("g1", tmp_path / "onnx")
    out = tmp_path / "engines"
    assert main(["build", str(onnx_dir), "-o", str(out), "--batch", "1,2,4", "--seq", "1,16,64",
                 "--builder-optimization-level", "1", "--no-tactic-libraries"]) == 0
    assert [c["engine"] for c in stand_in_builder] == ["prefill.engine", "decode.engine"]
    assert all(c["level"] == 1 and c["no_libraries"] for c in stand_in_builder)
    # The cache is written inside the folder being built, which then becomes ENGINES.
    assert all(c["cache"].name == "timing.cache" and c["cache"].parent.parent == out.parent for c in stand_in_builder)
    assert (out / "timing.cache").read_bytes() == b"tt"
    printed = capsys.readouterr().out
    assert "building prefill.engine (batch 1..2..4, seq 1..16..64)" in printed
    assert "building decode.engine (batch 1..2..4, seq 1..1..1)" in printed
    assert "built decode.engine in" in printed
    engines = json.loads((out / "qmamba_engines.json").read_text())
    assert set(engines["build_seconds"]) == {"prefill", "decode"}

    stand_in_builder.clear()  # a --force rebuild starts from the cache of the folder it replaces
    assert main(["build", str(onnx_dir), "-o", str(out), "--force"]) == 0
    assert stand_in_builder[0]["cached"] == b"tt" and (out / "timing.cache").read_bytes() == b"tttt"

    stand_in_builder.clear()
    cache = tmp_path / "shared.cache"
    assert main(["build", str(onnx_dir), "-o", str(out), "--force", "--timing-cache", str(cache)]) == 0
    assert all(c["cache"] == cache and c["level"] == 0 for c in stand_in_builder)
    stand_in_builder.clear()
    assert main(["build", str(onnx_dir), "-o", str(out), "--force", "--no-timing-cache"]) == 0
    assert all(c["cache"] is None for c in stand_in_builder)


def _fake_runner(tmp_path, monkeypatch, script: str):
    """trt_runner.build_engine drives this shell script as it would drive `qmamba_trt build`."""
    exe = tmp_path / "qmamba_trt"
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(0o755)
    monkeypatch.setattr(trt_runner, "runner_executable", lambda: exe)
    onnx_path = tmp_path / "prefill.trt.onnx"
    onnx_path.write_bytes(b"onnx")
    return onnx_path


def test_build_passes_tensorrt_log_through_as_it_comes(tmp_path, monkeypatch, capsys):
    onnx_path = _fake_runner(tmp_path, monkeypatch, 'echo "[TensorRT verbose 0.100s] Timing Runner: layer"\n'
                                                    'echo "[TensorRT info 2.500s] Total Activation Memory"\n')
    trt_runner.build_engine(onnx_path, tmp_path / "x.engine", trt_runner.Profile((1, 1, 2), (1, 4, 8)),
                            plugins=tmp_path / "lib.so")
    err = _err(capsys)
    assert "[TensorRT verbose 0.100s] Timing Runner: layer" in err and "Total Activation Memory" in err


def test_build_failure_names_tensorrt_errors_once(tmp_path, monkeypatch, capsys):
    onnx_path = _fake_runner(tmp_path, monkeypatch,
                             'echo "[TensorRT warning 0.1s] a warning"\n'
                             'echo "[TensorRT error 9.0s] 10: Could not find any implementation for node X."\n'
                             'exit 1\n')
    with pytest.raises(trt_runner.TrtRunnerError) as e:
        trt_runner.build_engine(onnx_path, tmp_path / "x.engine", trt_runner.Profile((1, 1, 2), (1, 4, 8)),
                                plugins=tmp_path / "lib.so")
    assert "Could not find any implementation for node X." in str(e.value)
    err = _err(capsys)
    assert "a warning" in err and "Could not find" not in err


def test_build_says_what_to_change_when_tensorrt_finds_no_kernel(stand_in_builder, monkeypatch, tmp_path, capsys):
    from tiny_models import exported_tiny_model

    def no_kernel(onnx_path, engine_path, *args, **kwargs):
        raise trt_runner.TrtRunnerError("[TensorRT error 9.0s] 10: Could not find any implementation for node "
                                        "{ForeignNode[(Unnamed Layer* 287) [Shuffle]...logits/Where]}.")

    monkeypatch.setattr(trt_runner, "build_engine", no_kernel)
    _, onnx_dir = exported_tiny_model("g1", tmp_path / "onnx")
    assert main(["build", str(onnx_dir), "-o", str(tmp_path / "engines"), "--batch", "1,2,4"]) == 1
    err = _err(capsys)
    assert "ForeignNode[(Unnamed Layer* 287)" in err and "with the profile batch 1..2..4" in err
    assert "try the default profile, an optimum batch of 1" in err
    assert not (tmp_path / "engines").exists()


def test_build_refuses_in_proj_pieces_with_tensorrt_8(stand_in_builder, tmp_path, capsys):
    """TensorRT 8.6 stops building the prefill graph whose in_proj is int8-output GEMMs (an internal assertion,
    seen on an H100): `build --in-proj-pieces` says so before anything is built or written."""
    from tiny_models import exported_tiny_model

    _, onnx_dir = exported_tiny_model("g1", tmp_path / "onnx")
    out = tmp_path / "engines"
    assert main(["build", str(onnx_dir), "-o", str(out), "--in-proj-pieces"]) == 2
    err = _err(capsys)
    assert "--in-proj-pieces is refused with TensorRT 8" in err and "chooseHigherPrecision" in err
    assert stand_in_builder == [] and not out.exists()


def test_build_puts_the_decode_rotation_into_the_linear_unless_told_not_to(stand_in_builder, tmp_path):
    """The decode engine's gated norm and Hadamard rotation go into out_proj's QmambaW8A8Linear by default
    (faster on an H100); --no-decode-rotation-pass keeps them as the graph's layers."""
    from qmamba.export.onnx_export import export_onnx
    from tiny_models import tiny_quantized_model

    export_onnx(tiny_quantized_model("g1", hadamard=True), tmp_path / "onnx", force=True)
    for flags, want in (([], "QmambaW8A8Linear (rotation_first"),
                        (["--no-decode-rotation-pass"], "TensorRT MatMuls (--no-decode-rotation-pass)")):
        out = tmp_path / f"engines{len(flags)}"
        assert main(["build", str(tmp_path / "onnx"), "-o", str(out), *flags]) == 0
        assert json.loads((out / "qmamba_engines.json").read_text())["decode_rotation"].startswith(want)
