"""Polygraphy around qmamba: the PyTorch reference as a runner, and a Comparator-based check.

``TorchReferenceRunner(model, kind)`` runs a QuantMamba2LM (with the sequential twins, as
``qmamba check`` does: ``runtime/reference.py``) with the inputs and outputs of the exported
``kind`` graph ("prefill" or "decode"), so Polygraphy can compare it with any other runner. ``compare_with_onnxrt(model, onnx_dir, kind)`` runs it beside Polygraphy's OnnxrtRunner
on real-text feeds (``data_loader``) and compares every output with ``SimpleCompareFunc``:

- int8 states: |diff| <= 1 (a rounding tie; their share is checked by ``qmamba check``);
- logits: |diff| <= LOGITS_ATOL + LOGITS_RTOL * |ref|. Without a flipped tie the graphs agree
  bit for bit; a tie flipped in an op (allowed by the contract) moves the logits by up to ~0.02
  on the tiny test models. A flip early in a trained model's long prefill can move them by more
  (``runtime/check.py``, point 3): ``qmamba check`` then shows which op flipped and by how much.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
import time

import numpy as np
import torch
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata
from polygraphy.datatype import DataType

from qmamba.export.metadata import read_onnx_metadata
from qmamba.export.onnx_export import GRAPHS, state_names
from .reference import reference_forward

LOGITS_ATOL = 0.05
LOGITS_RTOL = 0.01
STATE_ATOL = 1


class TorchReferenceRunner(BaseRunner):
    """A QuantMamba2LM with the named inputs/outputs of the exported prefill or decode graph."""

    def __init__(self, model, kind: str, name: str | None = None):
        super().__init__(name=name, prefix="qmamba-torch-reference")
        if kind not in GRAPHS:
            raise ValueError(f"TorchReferenceRunner: kind must be one of {GRAPHS}, got {kind!r}")
        self.model, self.kind = model, kind

    def get_input_metadata_impl(self):
        c = self.model.config
        meta = TensorMetadata().add("input_ids", DataType.INT64, (-1, -1))
        if self.kind == "decode":
            for i in range(c.n_layer):
                n = state_names(i)
                meta.add(n["conv_state"], DataType.INT8, (-1, c.d_conv - 1, c.conv_dim))
                meta.add(n["ssm_state"], DataType.INT8, (-1, c.nheads, c.headdim, c.d_state))
        return meta

    def infer_impl(self, feed_dict):
        ids = torch.from_numpy(np.asarray(feed_dict["input_ids"], dtype=np.int64))
        states = None
        if self.kind == "decode":
            states = [(torch.from_numpy(np.array(feed_dict[state_names(i)["conv_state"]])),
                       torch.from_numpy(np.array(feed_dict[state_names(i)["ssm_state"]])))
                      for i in range(self.model.config.n_layer)]
        start = time.perf_counter()
        logits, new_states = reference_forward(self.model, ids, states)
        self.inference_time = time.perf_counter() - start
        out = OrderedDict(logits=logits.numpy())
        for i, (conv, ssm) in enumerate(new_states):
            out[state_names(i)["conv_state_out"]] = conv.numpy()
            out[state_names(i)["ssm_state_out"]] = ssm.numpy()
        return out


def _int8_as_int32(results):
    """int8 outputs widened so that differences do not wrap around (-128 - 127)."""
    for _, iterations in results:
        for outputs in iterations:
            for name in list(outputs.keys()):
                if outputs[name].dtype == np.int8:
                    outputs[name] = outputs[name].astype(np.int32)
    return results


def compare_with_onnxrt(model, onnx_dir, kind: str, data_loader=None) -> bool:
    """Polygraphy Comparator: OnnxrtRunner on DIR/<kind>.onnx vs TorchReferenceRunner."""
    from polygraphy.backend.onnxrt import OnnxrtRunner
    from polygraphy.comparator import Comparator, SimpleCompareFunc

    from .data_loader import decode_feeds, prefill_feeds
    from .ort import make_session

    meta = read_onnx_metadata(onnx_dir)
    path = Path(onnx_dir) / meta["graphs"][kind]["file"]
    if data_loader is None:
        data_loader = prefill_feeds() if kind == "prefill" else decode_feeds(onnx_dir)
    # The session comes from ort.make_session: the same options as OrtModel and `qmamba check`.
    runners = [OnnxrtRunner(lambda: make_session(path)),
               TorchReferenceRunner(model, kind)]
    results = _int8_as_int32(Comparator.run(runners, data_loader=data_loader))
    atol = {"": float(STATE_ATOL), "logits": LOGITS_ATOL}
    rtol = {"": 0.0, "logits": LOGITS_RTOL}
    accuracy = Comparator.compare_accuracy(results, compare_func=SimpleCompareFunc(atol=atol, rtol=rtol))
    valid = Comparator.validate(results, check_inf=True, check_nan=True)
    return bool(accuracy) and bool(valid)
