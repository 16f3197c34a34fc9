"""Quantized checkpoints: ``model.safetensors`` (every buffer of QuantMamba2LM) + ``config.json``.

``save_quantized(model, dir)`` / ``load_quantized(dir) -> QuantMamba2LM`` round-trip bit-exactly.
config.json holds ``{"format": "qmamba-w8a8", "version": 1, "config": QuantConfig fields}``.
Loading checks config.json (JSON object, format, version, the "config" object and its fields), that
model.safetensors is readable, then every key (missing or unexpected), dtype and shape, then
``model.validate()``, so a damaged checkpoint fails with a message that names the file, the layer
and the tensor.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch

from .metadata import read_json_object
from .qmodel import QuantConfig, QuantMamba2LM
from .validate import QMambaInputError

FORMAT = "qmamba-w8a8"
VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def _json_float(v):
    # JSON has no infinity: dt_max = inf is written as the string "inf".
    return "inf" if isinstance(v, float) and math.isinf(v) else v


def save_quantized(model: QuantMamba2LM, directory) -> Path:
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(d / WEIGHTS), metadata={"format": FORMAT})
    cfg = {k: _json_float(v) for k, v in model.config.to_dict().items()}
    (d / CONFIG).write_text(json.dumps({"format": FORMAT, "version": VERSION, "config": cfg}, indent=2))
    return d


def describe_key(key: str) -> str:
    """'layers.3.mixer.x_out_scales' -> 'layer 3 mixer: x_out_scales' (for error messages)."""
    m = re.match(r"layers\.(\d+)\.(.*)", key)
    if not m:
        head, _, tail = key.rpartition(".")
        return f"{head.replace('.', ' ') or 'model'}: {tail}"
    where, _, name = m.group(2).rpartition(".")
    return f"layer {m.group(1)} {where.replace('.', ' ')}: {name}"


def load_state_into(model: QuantMamba2LM, tensors: dict[str, torch.Tensor], source: str) -> QuantMamba2LM:
    """Puts ``tensors`` into the model's buffers: every key must be present with the buffer's dtype.

    Shapes of the group tensors come from the config (n_head_groups, n_dim_groups); a mismatch is
    an error naming the tensor.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    if missing:
        raise QMambaInputError(f"{source}: {describe_key(missing[0])} is missing (key {missing[0]}"
                               f"{f', and {len(missing) - 1} more' if len(missing) > 1 else ''})")
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise QMambaInputError(f"{source}: unexpected key {unexpected[0]}"
                               f"{f' (and {len(unexpected) - 1} more)' if len(unexpected) > 1 else ''}")
    for k, ref in expected.items():
        t = tensors[k]
        if t.dtype != ref.dtype:
            raise QMambaInputError(f"{source}: {describe_key(k)} must be {ref.dtype}, got {t.dtype}")
        if t.shape != ref.shape:
            raise QMambaInputError(f"{source}: {describe_key(k)} must have shape {list(ref.shape)}, "
                                   f"got {list(t.shape)}")
    model.load_state_dict(tensors, strict=True)
    model.validate()
    return model


def read_config(directory) -> QuantConfig:
    """The QuantConfig of DIR/config.json; an error names the file and the key at fault."""
    path = Path(directory) / CONFIG
    meta = read_json_object(path)
    if meta.get("format") != FORMAT:
        raise QMambaInputError(f"{path}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise QMambaInputError(f"{path}: checkpoint version {meta.get('version')!r}, this reader knows {VERSION}")
    fields = meta.get("config")
    if not isinstance(fields, dict):
        found = "is missing" if fields is None else f"is a {type(fields).__name__}"
        raise QMambaInputError(f"{path}: key 'config' {found}, expected an object; the checkpoint is "
                               f"damaged: write it again with `qmamba calibrate`")
    try:
        return QuantConfig.from_dict({k: (math.inf if v == "inf" else v) for k, v in fields.items()})
    except QMambaInputError as e:
        raise QMambaInputError(f"{path}: {e}") from e


def read_weights(path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; a damaged file is named."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # safetensors' own error names neither the file nor the fix
        raise QMambaInputError(f"{path}: not a readable safetensors file ({e}); the checkpoint is "
                               f"damaged: write it again with `qmamba calibrate`") from e


def load_quantized(directory, ops_backend: str = "reference") -> QuantMamba2LM:
    d = Path(directory)
    for name in (CONFIG, WEIGHTS):
        if not (d / name).is_file():
            raise FileNotFoundError(f"{d}: {name} not found (not a qmamba checkpoint)")
    model = QuantMamba2LM(read_config(d), ops_backend=ops_backend)
    return load_state_into(model, read_weights(d / WEIGHTS), str(d))
