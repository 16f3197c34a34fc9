"""Out-of-range token ids in the exported graphs: the logits of that position are NaN on any
runtime (here plain ONNX Runtime), every other logit is what the graph computed before the flag;
OrtModel refuses such ids, and empty feeds, before running."""
from __future__ import annotations

import numpy as np
import pytest

from qmamba.errors import BadInputError
from qmamba.runtime.ort import OrtModel, make_session

from tiny_models import exported_tiny_model


VOCAB = 256
UNFLAGGED = "lm_head.out"   # the logits before flag_bad_token_ids


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    _, out = exported_tiny_model("g1", tmp_path_factory.mktemp("ids"))
    return out


@pytest.fixture(scope="module")
def ort_model(exported):
    return OrtModel(exported)


def _run(session, feed):
    logits, unflagged = session.run(["logits", UNFLAGGED], feed)
    return logits, unflagged


@pytest.mark.parametrize("bad_id", [-1, VOCAB, VOCAB + 5, -VOCAB, np.iinfo(np.int64).max])
def test_prefill_flags_the_position_of_a_bad_id(exported, bad_id):
    session = make_session(exported / "prefill.onnx", extra_outputs=[UNFLAGGED])
    ids = np.array([[72, 101, 108, 108], [111, 44, 32, 119]], np.int64)
    good, _ = _run(session, {"input_ids": ids})
    bad_ids = ids.copy()
    bad_ids[1, 2] = bad_id
    logits, unflagged = _run(session, {"input_ids": bad_ids})
    flagged = np.isnan(logits).all(-1)
    assert flagged.tolist() == [[False] * 4, [False, False, True, False]]
    assert not np.isnan(logits[~flagged]).any()
    assert np.array_equal(logits[~flagged], unflagged[~flagged])     # bit for bit
    assert np.array_equal(logits[0], good[0]) and np.array_equal(logits[1, :2], good[1, :2])


@pytest.mark.parametrize("bad_id", [-1, VOCAB, VOCAB + 5])
def test_decode_flags_the_row_of_a_bad_id(exported, ort_model, bad_id):
    model = ort_model
    _, states = model.prefill(np.array([[72, 101, 108], [108, 111, 44]]))
    feed = {"input_ids": np.array([[bad_id], [32]], np.int64), **model._state_feed(states, 2)}
    session = make_session(exported / "decode.onnx", extra_outputs=[UNFLAGGED])
    logits, unflagged = _run(session, feed)
    assert np.isnan(logits[0]).all() and not np.isnan(logits[1]).any()
    assert np.array_equal(logits[1], unflagged[1])
    good, _ = model.decode(np.array([5, 32]), states)
    assert np.array_equal(logits[1], good[1])


@pytest.mark.parametrize("call, feed, message", [
    ("prefill", np.array([[1, -1]]), r"token ids must be in \[0, 256\), got \[-1, 1\]"),
    ("prefill", np.array([[1, 256]]), r"token ids must be in \[0, 256\), got \[1, 256\]"),
    ("prefill", np.zeros((0, 4), np.int64), r"input_ids must be \[batch >= 1, seq >= 1\], got \[0, 4\]"),
    ("prefill", np.zeros((2, 0), np.int64), r"input_ids must be \[batch >= 1, seq >= 1\], got \[2, 0\]"),
    ("prefill", np.array([[1.0, 2.0]]), "token ids must be integers, got float64"),
    ("prefill", np.zeros((1, 2, 3), np.int64), r"got \[1, 2, 3\]"),
    ("decode", np.array([[1, 2]]), r"one token per batch row .* got \[1, 2\]"),
    ("decode", np.zeros((0,), np.int64), r"got \[0, 1\]"),
])
def test_ort_model_refuses_bad_feeds_before_running(ort_model, call, feed, message):
    model = ort_model
    _, states = model.prefill(np.array([[1, 2]]))
    with pytest.raises(BadInputError, match=message):
        model.prefill(feed) if call == "prefill" else model.decode(feed, states)
