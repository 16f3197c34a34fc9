"""ONNX Runtime sessions for an exported prefill/decode pair (``qmamba export`` output).

``OrtModel(onnx_dir)`` validates both graphs (``validate_onnx_model``), opens one session each and
offers::

    logits, states = m.prefill(input_ids)          # int64 [B, L] -> fp32 [B, L, V], states
    logits, states = m.decode(tokens, states)      # int64 [B] or [B, 1] -> fp32 [B, 1, V], states
    new_ids = m.generate(input_ids, 32)            # greedy, int64 [B, 32]

``OrtStepper(m)`` keeps the states between calls and returns the last position's logits, the
interface of ``trt_runner.TrtSession`` that ``qmamba generate`` drives.

``states`` is a list with one ``(conv_state int8 [B, K-1, conv_dim], ssm_state int8 [B, h, p, n])``
per layer, as ``QuantMamba2LM`` returns them. The custom nodes run from their function bodies, so
plain ONNX Runtime needs no custom-op library.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from qmamba.export.metadata import read_onnx_metadata
from qmamba.export.onnx_export import GRAPHS
from qmamba.export.validate import QMambaInputError
from .onnx_validate import validate_onnx_model

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


def make_session(path, providers=DEFAULT_PROVIDERS, extra_outputs: list[str] | None = None):
    """An InferenceSession of ``path``; ``extra_outputs`` turns inner tensors into outputs
    (for per-op comparisons)."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    # ONNX Runtime's QDQ fusions (MatMulIntegerToFloat) were seen to compute wrong results on
    # Q/DQ MatMul patterns close to qmamba's (weights with explicit zero points, or transposed
    # with a per-axis scale): run the graph as written.
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    if not extra_outputs:
        return ort.InferenceSession(str(path), options, providers=list(providers))
    model = onnx.load(str(path))
    have = {o.name for o in model.graph.output}
    for name in extra_outputs:
        if name not in have:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    return ort.InferenceSession(model.SerializeToString(), options, providers=list(providers))


class OrtModel:
    """The prefill and decode sessions of one exported model."""

    def __init__(self, onnx_dir, providers=DEFAULT_PROVIDERS, validate: bool = True):
        self.dir = Path(onnx_dir)
        self.meta = read_onnx_metadata(self.dir)
        self.config = self.meta["config"]
        self.paths = {k: self.dir / self.meta["graphs"][k]["file"] for k in GRAPHS}
        if validate:
            for path in self.paths.values():
                validate_onnx_model(path)
        self.providers = tuple(providers)
        self.sessions = {k: make_session(p, providers) for k, p in self.paths.items()}
        self.states_meta = self.meta["states"]

    # ---- checks -----------------------------------------------------------------------------
    def _ids(self, ids, what: str) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise QMambaInputError(f"ORT {what}: token ids must be integers, got {ids.dtype}")
        ids = ids.astype(np.int64)
        if ids.ndim != 2 or ids.shape[0] < 1 or ids.shape[1] < 1:
            raise QMambaInputError(f"ORT {what}: input_ids must be [batch >= 1, seq >= 1], "
                                   f"got {list(ids.shape)}")
        vocab = self.config["vocab_size"]
        if ids.min() < 0 or ids.max() >= vocab:
            raise QMambaInputError(f"ORT {what}: token ids must be in [0, {vocab}), "
                                   f"got [{ids.min()}, {ids.max()}]")
        return ids

    def _state_feed(self, states, batch: int) -> dict[str, np.ndarray]:
        c = self.config
        if len(states) != c["n_layer"]:
            raise QMambaInputError(f"ORT decode: states must hold {c['n_layer']} layers, got {len(states)}")
        feed = {}
        for s, (conv, ssm) in zip(self.states_meta, states):
            for key, value in (("conv_state", conv), ("ssm_state", ssm)):
                value = np.asarray(value)
                want = [batch, *s[key]["shape"][1:]]
                if value.dtype != np.int8 or list(value.shape) != want:
                    raise QMambaInputError(f"ORT decode: layer {s['layer']} {key} must be int8 {want}, "
                                           f"got {value.dtype} {list(value.shape)}")
                feed[s[key]["input"]] = value
        return feed

    def _split(self, kind: str, outputs: list[np.ndarray]):
        names = [o.name for o in self.sessions[kind].get_outputs()]
        out = dict(zip(names, outputs))
        states = [(out[s["conv_state"]["output"]], out[s["ssm_state"]["output"]])
                  for s in self.states_meta]
        return out["logits"], states

    # ---- running ----------------------------------------------------------------------------
    def prefill(self, input_ids):
        """input_ids ``[B, L]`` from zero states -> (logits ``[B, L, V]``, states)."""
        ids = self._ids(input_ids, "prefill")
        return self._split("prefill", self.sessions["prefill"].run(None, {"input_ids": ids}))

    def decode(self, tokens, states):
        """One token per batch row (``[B]`` or ``[B, 1]``) from ``states`` -> (logits ``[B, 1, V]``, states)."""
        ids = np.asarray(tokens)
        ids = ids.reshape(-1, 1) if ids.ndim == 1 else ids
        ids = self._ids(ids, "decode")
        if ids.shape[1] != 1:
            raise QMambaInputError(f"ORT decode: one token per batch row ([batch] or [batch, 1]), "
                                   f"got {list(ids.shape)}; use prefill for a sequence")
        feed = {"input_ids": ids, **self._state_feed(states, ids.shape[0])}
        return self._split("decode", self.sessions["decode"].run(None, feed))

    def generate(self, input_ids, max_new_tokens: int, return_logits: bool = False):
        """Greedy continuation: prefill the prompt, then ``max_new_tokens - 1`` decode steps.
        Returns tokens ``[B, n]`` (and the logits each was chosen from, ``[B, n, V]``)."""
        if max_new_tokens < 1:
            raise QMambaInputError(f"ORT generate: max_new_tokens must be >= 1, got {max_new_tokens}")
        logits, states = self.prefill(input_ids)
        chosen = [logits[:, -1]]
        token = logits[:, -1].argmax(-1)
        out = [token]
        for _ in range(max_new_tokens - 1):
            logits, states = self.decode(token, states)
            chosen.append(logits[:, -1])
            token = logits[:, -1].argmax(-1)
            out.append(token)
        tokens = np.stack(out, axis=1).astype(np.int64)
        return (tokens, np.stack(chosen, axis=1)) if return_logits else tokens


class OrtStepper:
    """Token-by-token generation on ONNX Runtime with ``TrtSession``'s interface: ``prefill(ids)``
    and ``decode(tokens)`` return the last position's logits ``[B, V]``; the states stay here."""

    def __init__(self, model: OrtModel):
        self.model = model
        self.vocab = int(model.config["vocab_size"])
        self._states = None

    def prefill(self, input_ids) -> np.ndarray:
        logits, self._states = self.model.prefill(input_ids)
        return logits[:, -1]

    def decode(self, tokens, use_graph: bool = False) -> np.ndarray:
        """One step; ``use_graph`` (CUDA graphs) has no meaning on ONNX Runtime and is ignored."""
        if self._states is None:
            raise QMambaInputError("ORT decode: no states yet; prefill a prompt first")
        logits, self._states = self.model.decode(tokens, self._states)
        return logits[:, -1]
