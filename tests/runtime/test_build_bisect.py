"""``qmamba bisect-build``'s CPU parts: a cut graph computes what the whole graph computes up to its cut
(ONNX Runtime on the exported model), the binary search finds the first failing cut, and the command
drives the runner on the graph ``qmamba build`` gives TensorRT (a stand-in builder: no TensorRT here)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from qmamba.cli import main
from qmamba.runtime import trt_runner
from qmamba.runtime.bisect import float_intermediates, marked, ort_run
from qmamba.runtime.build_bisect import first_failing_cut, truncated
from qmamba.runtime.ort import make_session
from tiny_models import exported_tiny_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    _, onnx_dir = exported_tiny_model("g1", tmp_path_factory.mktemp("bb") / "onnx")
    return onnx_dir


def test_a_cut_graph_computes_its_tensor_as_the_whole_graph_does(exported, tmp_path):
    model = onnx.load(str(exported / "prefill.onnx"))
    names = float_intermediates(model)
    feed = {"input_ids": np.frombuffer(b"To be, or not to be", np.uint8)[None].astype(np.int64)}
    whole_path, cut_path = tmp_path / "whole.onnx", tmp_path / "cut.onnx"
    onnx.save(marked(model, names), str(whole_path))
    want = ort_run(make_session(whole_path), feed)
    for name in (names[len(names) // 3], names[-1]):
        cut = truncated(model, name)
        assert [o.name for o in cut.graph.output] == [name]
        assert len(cut.graph.node) < len(model.graph.node)
        onnx.save(cut, str(cut_path))
        got = ort_run(make_session(cut_path), feed)
        np.testing.assert_array_equal(got[name], want[name])


def test_truncated_refuses_a_tensor_no_node_produces(exported):
    with pytest.raises(ValueError, match="no node produces 'input_ids'"):
        truncated(onnx.load(str(exported / "prefill.onnx")), "input_ids")


@pytest.mark.parametrize("bad_at", [0, 7, None])
def test_binary_search_finds_the_first_failing_cut(exported, bad_at):
    model = onnx.load(str(exported / "prefill.onnx"))
    names = float_intermediates(model)
    culprit = None if bad_at is None else next(n for n in model.graph.node if names[bad_at] in n.output).name
    tried = []

    def build(cut, name):
        tried.append(name)
        return f"10: Could not find any implementation ({name})" if any(n.name == culprit for n in cut.graph.node) else None

    tensor, node, error = first_failing_cut(model, names, build, say=lambda line: None)
    if bad_at is None:
        assert (tensor, node, error) == (None, None, None)
    else:
        assert tensor == names[bad_at] and node.name == culprit and "Could not find any implementation" in error
    assert len(tried) <= int(np.ceil(np.log2(len(names) + 1)))


def test_command_builds_cuts_of_the_tensorrt_graph_with_the_profile(exported, tmp_path, monkeypatch, capsys):
    plugins = tmp_path / "libqmamba_trt_plugins.so"
    plugins.write_bytes(b"")
    monkeypatch.setattr("qmamba.runtime.build.tensorrt_major", lambda trt=None: 8)
    seen = []

    def build_engine(onnx_path, engine_path, profile, plugins=None, fp16=False, no_tactic_libraries=False,
                     optimization_level=None, timing_cache=None):
        cut = onnx.load(str(onnx_path))
        seen.append((profile, optimization_level, no_tactic_libraries))
        if any("lm_head.out" in n.output for n in cut.graph.node):
            raise trt_runner.TrtRunnerError("[TensorRT error 1.0s] 10: Could not find any implementation for node "
                                            "{ForeignNode[lm_head...logits]}.")
        return engine_path

    monkeypatch.setattr(trt_runner, "build_engine", build_engine)
    work = tmp_path / "work"
    assert main(["bisect-build", str(exported), "--batch", "1,2,4", "--seq", "1,128,512", "--plugins", str(plugins),
                 "--no-tactic-libraries", "--work", str(work)]) == 1
    out = capsys.readouterr().out
    assert "first cut that fails: after lm_head.out" in out and "ForeignNode[lm_head...logits]" in out
    assert all(p == trt_runner.Profile((1, 2, 4), (1, 128, 512)) and lvl == 0 and nolib for p, lvl, nolib in seen)
    assert (work / "prefill.trt.onnx").is_file()


def test_command_says_when_the_whole_graph_builds(exported, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("qmamba.runtime.build.tensorrt_major", lambda trt=None: 8)
    monkeypatch.setattr(trt_runner, "build_engine", lambda *a, **k: a[1])
    assert main(["bisect-build", str(exported), "--kind", "decode", "--plugins", "x.so",
                 "--work", str(tmp_path / "w")]) == 0
    assert "the whole graph builds: nothing to bisect" in capsys.readouterr().out
