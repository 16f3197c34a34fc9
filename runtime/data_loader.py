"""Polygraphy data loader for qmamba's ONNX graphs: real token ids and valid states.

As a ``--data-loader-script`` (see docs/onnx.md)::

    polygraphy run DIR/prefill.onnx --onnxrt --data-loader-script runtime/data_loader.py
    QMAMBA_ONNX_DIR=DIR polygraphy run DIR/decode.onnx --onnxrt \\
        --data-loader-script runtime/data_loader.py:load_decode_data

``load_data`` yields prefill feeds: windows of real text (byte tokens) from the
wikitext-2 validation file of ``qmamba.data``. ``load_decode_data`` yields decode feeds: the next token of such a
window and the states ONNX Runtime's prefill graph left after the window, so that every state
is one the model can actually reach. Environment: ``QMAMBA_ONNX_DIR`` (needed for decode),
``QMAMBA_TEXT`` (another text file), ``QMAMBA_SEQ_LEN`` (default 64), ``QMAMBA_BATCH`` (default 1),
``QMAMBA_ITERATIONS`` (default 2).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

DEFAULT_TEXT = "wikitext-2/valid.txt"


def _setting(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def text_windows(iterations: int, seq_len: int, batch: int, text: str | Path | None = None):
    """``iterations`` int64 arrays ``[batch, seq_len + 1]`` of consecutive bytes of real text."""
    from qmamba.data import text_file

    path = Path(text) if text else text_file(DEFAULT_TEXT)
    data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    span = seq_len + 1
    need = iterations * batch * span
    if data.size < need:
        raise ValueError(f"{path}: {data.size} bytes, need {need} for the requested windows")
    # Spread the windows over the file rather than taking its first bytes only.
    starts = np.linspace(0, data.size - span, iterations * batch).astype(np.int64)
    windows = np.stack([data[s:s + span] for s in starts]).astype(np.int64)
    return [windows[i * batch:(i + 1) * batch] for i in range(iterations)]


def prefill_feeds(iterations: int = 2, seq_len: int = 64, batch: int = 1, text=None):
    return [{"input_ids": w[:, :-1]} for w in text_windows(iterations, seq_len, batch, text)]


def decode_feeds(onnx_dir, iterations: int = 2, seq_len: int = 64, batch: int = 1, text=None):
    """Decode feeds whose states come from ONNX Runtime's prefill of the preceding text."""
    from qmamba.runtime.ort import OrtModel  # absolute: Polygraphy loads this file as a script

    model = OrtModel(onnx_dir)
    feeds = []
    for w in text_windows(iterations, seq_len, batch, text):
        _, states = model.prefill(w[:, :-1])
        feed = {"input_ids": w[:, -1:]}
        for meta, (conv, ssm) in zip(model.states_meta, states):
            feed[meta["conv_state"]["input"]] = conv
            feed[meta["ssm_state"]["input"]] = ssm
        feeds.append(feed)
    return feeds


def load_data():
    """Polygraphy entry point for the prefill graph."""
    yield from prefill_feeds(_setting("QMAMBA_ITERATIONS", 2), _setting("QMAMBA_SEQ_LEN", 64),
                             _setting("QMAMBA_BATCH", 1), os.environ.get("QMAMBA_TEXT"))


def load_decode_data():
    """Polygraphy entry point for the decode graph (needs ``QMAMBA_ONNX_DIR``)."""
    onnx_dir = os.environ.get("QMAMBA_ONNX_DIR")
    if not onnx_dir:
        raise ValueError("load_decode_data: set QMAMBA_ONNX_DIR to the `qmamba export` directory "
                         "(its prefill graph makes the states)")
    yield from decode_feeds(onnx_dir, _setting("QMAMBA_ITERATIONS", 2),
                            _setting("QMAMBA_SEQ_LEN", 64), _setting("QMAMBA_BATCH", 1),
                            os.environ.get("QMAMBA_TEXT"))
