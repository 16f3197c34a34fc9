"""The TensorRT runner given bad input: damaged engine files, engines of another plugin library,
shapes outside the profile, states that do not fit the tokens. Each must be a clear error naming
the file or the tensor, never a crash or a silent result. Runs where the C++ runner, the plugin
library and a GPU are; skips elsewhere."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from qmamba.errors import BadInputError
from qmamba.runtime import trt_runner

from trt_helpers import export_small_model, trt_unavailable

pytestmark = [pytest.mark.gpu, pytest.mark.tensorrt,
              pytest.mark.skipif(trt_unavailable() is not None, reason=str(trt_unavailable()))]


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    from qmamba.runtime.build import build_engines

    root = tmp_path_factory.mktemp("bad_engines")
    onnx_dir = export_small_model(root / "onnx", "g1")
    build_engines(onnx_dir, root / "engines", batch=(1, 1, 2), seq=(1, 16, 64), no_tactic_libraries=True,
                  backend="cpp")
    return root / "engines"


def _copy(engines, tmp_path):
    shutil.copytree(engines, tmp_path / "engines")
    return tmp_path / "engines"


# Empty and truncated files are refused before TensorRT sees them, as bad input; random bytes of the right
# length reach TensorRT's deserializer, whose refusal is a failure of the work.
@pytest.mark.parametrize("damage, words, error", [
    (lambda b: b"", "is empty (0 bytes)", trt_runner.TrtBadInputError),
    (lambda b: b[: len(b) // 2], "(a truncated or replaced file)", trt_runner.TrtBadInputError),
    (lambda b: np.random.default_rng(0).bytes(len(b)), "cannot deserialize", trt_runner.TrtRunnerError),
], ids=["empty", "truncated", "random-bytes"])
def test_damaged_engine_file_is_refused(engines, tmp_path, damage, words, error):
    folder = _copy(engines, tmp_path)
    path = folder / "decode.engine"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(error, match=re.escape(words)):
        trt_runner.TrtEngine(path)
    with pytest.raises(error, match="decode.engine"):
        trt_runner.TrtSession(folder)


def test_engine_of_another_plugin_version_is_refused(engines, tmp_path):
    folder = _copy(engines, tmp_path)
    meta_path = folder / "prefill.engine.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "plugin_library": "qmamba-trt-plugins 0.0.1; format 0"}))
    with pytest.raises(trt_runner.TrtBadInputError, match="built with plugin library 'qmamba-trt-plugins 0.0.1"):
        trt_runner.TrtSession(folder)


def test_prompt_outside_the_profile_is_refused(engines):
    session = trt_runner.TrtSession(engines, max_batch=2)
    with pytest.raises(trt_runner.TrtBadInputError, match=r"is outside the engine's profile \[1, 64\]"):
        session.prefill(np.zeros((1, 65), np.int64))
    # the session was opened for the engines' whole batch range: its own bound says it
    with pytest.raises(trt_runner.TrtBadInputError, match=r"batch 3 is outside \[1, 2\]"):
        session.prefill(np.zeros((3, 4), np.int64))


def _decode_feed(engine: trt_runner.TrtEngine, batch: int) -> dict[str, np.ndarray]:
    feed = {}
    for t in engine.inputs:
        shape = [batch if i == 0 else (1 if d < 0 else d) for i, d in enumerate(t.shape)]
        feed[t.name] = np.zeros(shape, t.dtype)
    return feed


def test_states_of_another_batch_are_refused(engines):
    engine = trt_runner.TrtEngine(engines / "decode.engine")
    feed = _decode_feed(engine, 1)
    state = next(t.name for t in engine.inputs if t.name != "input_ids")
    feed[state] = np.zeros((2, *feed[state].shape[1:]), feed[state].dtype)
    with pytest.raises((BadInputError, trt_runner.TrtRunnerError), match="input shapes|refused shape"):
        engine.infer(feed)


def test_state_of_the_wrong_dtype_or_rank_is_refused(engines):
    engine = trt_runner.TrtEngine(engines / "decode.engine")
    state = next(t for t in engine.inputs if t.name != "input_ids")
    feed = _decode_feed(engine, 1)
    feed[state.name] = feed[state.name].astype(np.float32) + 0.5
    with pytest.raises(ValueError, match=f"input {state.name} must be"):
        engine.infer(feed)
    feed = _decode_feed(engine, 1)
    feed[state.name] = feed[state.name][0]
    with pytest.raises(trt_runner.TrtBadInputError, match=f"input {state.name} .* has rank"):
        engine.infer(feed)
