"""The CPU-testable part of benchmarks/bench_vs_mamba_ssm.py: the build options of `--compare`, the second
engine set built from the same export and measured in the same run."""
from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_vs_mamba_ssm as bench  # noqa: E402


def _options(argv: list[str]):
    ap = bench.parser()
    args = ap.parse_args(argv)
    return bench.build_options(args), bench.compare_options(ap, args)


def test_compare_changes_the_build_options_it_names_and_keeps_the_rest():
    mine, theirs = _options(["--no-tactic-libraries", "--compare=--no-decode-rotation-pass"])
    assert mine["decode_rotation_pass"] and not theirs["decode_rotation_pass"]
    del mine["decode_rotation_pass"], theirs["decode_rotation_pass"]
    assert theirs == mine and theirs["no_tactic_libraries"]
    mine, theirs = _options(["--compare", "--builder-optimization-level 3 --weight-channel-scales"])
    assert (mine["optimization_level"], theirs["optimization_level"]) == (bench.DEFAULT_OPTIMIZATION_LEVEL, 3)
    assert theirs["weight_channel_scales"] and not mine["weight_channel_scales"]


def test_without_compare_there_is_nothing_to_compare():
    assert _options([])[1] is None


@pytest.mark.parametrize("flags, words", [
    ("--model mamba2-2.7b --weight-channel-scales", "it changes --model"),
    ("--iters 5", "it changes --iters"),
    ("--decode-rotation-pass", "it changes none"),
], ids=["model", "iters", "nothing"])
def test_compare_refuses_all_but_build_options(flags, words, capsys):
    with pytest.raises(SystemExit):
        _options([f"--compare={flags}"])
    err = capsys.readouterr().err
    assert f"--compare {flags!r} must change build options only" in err and words in err, err


def test_prepare_engines_builds_each_set_once_with_its_options(tmp_path, monkeypatch):
    import json

    calls = []

    def build_engines(onnx_dir, folder, **kw):
        calls.append((folder, kw))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "qmamba_engines.json").write_text(json.dumps({"profiles": {"prefill": {"batch": list(kw["batch"])}}}))

    monkeypatch.setattr(bench, "build_engines", build_engines)
    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    (onnx_dir / "qmamba_onnx.json").write_text("{}")
    sets = bench.engine_sets(tmp_path / "compare", [1, 8], [512, 2048], [1, 8, 32])
    ap = bench.parser()
    options = bench.compare_options(ap, ap.parse_args(["--compare=--no-decode-rotation-pass"]))

    def prepare(opts):
        bench.prepare_engines(sets, opts, onnx_dir, lambda: pytest.fail("exported again"), lambda line: None)

    prepare(options)
    assert [folder for folder, _ in calls] == [s.folder for s in sets]  # engines and engines-b32
    assert all(kw["decode_rotation_pass"] is False and kw["prefill_logits"] == "last" for _, kw in calls)
    calls.clear()
    prepare(options)  # built with these options before: reused
    assert calls == []
    prepare({**options, "decode_rotation_pass": True})  # other options: rebuilt
    assert len(calls) == len(sets)
