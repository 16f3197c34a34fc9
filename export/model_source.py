"""The MODEL argument of every command: what it names, told from its files, and its one loader.

``identify(spec)`` reads files only and says which kind of model ``spec`` is; nothing is built
before the kind is known, so a folder that is not a float Mamba2 never reaches transformers
(which would build its default 64-layer Mamba2 from whatever config.json it finds).

- ``shipped``: a name of ``qmamba.models`` (not a path), a float transformers Mamba2;
- ``qmamba-w8a8``: config.json ``"format": "qmamba-w8a8"`` (``qmamba calibrate``, checkpoint.py);
- ``quamba2-w8a8``: config.json in mamba_ssm's layout (``d_model``, ``ssm_cfg``), a released Quamba2
  W8A8 checkpoint (quamba2.py);
- ``transformers-mamba2``: config.json ``"model_type": "mamba2"``, a float transformers Mamba2 folder.

A folder of ``qmamba export`` (qmamba_onnx.json, no config.json) is named as such in the error, for
the commands that take a model. New kinds go into ``_kind_of_config`` (a folder) or ``identify``
(a name that is not a folder), their loader into ``load_float`` / ``load_w8a8``.

``load_float(spec)`` gives a transformers Mamba2ForCausalLM (every float kind, with the per-group
gated norm of ``qmamba.models.ensure_grouped_norm``); ``load_w8a8(spec)`` a QuantMamba2LM (every
W8A8 kind); a kind the command cannot take is refused with what to do instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .metadata import ONNX_METADATA, read_json_object
from .validate import QMambaInputError

SHIPPED = "shipped"
QMAMBA_W8A8 = "qmamba-w8a8"
QUAMBA2_W8A8 = "quamba2-w8a8"
TRANSFORMERS_MAMBA2 = "transformers-mamba2"

FLOAT_KINDS = (SHIPPED, TRANSFORMERS_MAMBA2)
W8A8_KINDS = (QMAMBA_W8A8, QUAMBA2_W8A8)
CONFIG = "config.json"


@dataclass(frozen=True)
class ModelSource:
    """A MODEL argument resolved: as given, its kind, its folder and its parsed config.json."""
    spec: str
    kind: str
    path: Path
    config: dict

    @property
    def w8a8(self) -> bool:
        return self.kind in W8A8_KINDS


def _kind_of_config(directory: Path, conf: dict) -> str:
    """The kind of model whose config.json is ``conf``, from its keys alone."""
    from .checkpoint import FORMAT as QMAMBA_FORMAT

    if "format" in conf:
        if conf["format"] == QMAMBA_FORMAT:
            return QMAMBA_W8A8
        raise QMambaInputError(f"{directory / CONFIG}: key 'format' is {conf['format']!r}; qmamba reads "
                               f"{QMAMBA_FORMAT!r} checkpoints")
    if "d_model" in conf and "ssm_cfg" in conf:
        # mamba_ssm's layout. Quamba2's W8A8 checkpoints are the models of this layout qmamba reads
        # (a float mamba_ssm model has the same keys and is to be told apart here).
        return QUAMBA2_W8A8
    if conf.get("model_type") == "mamba2":
        return TRANSFORMERS_MAMBA2
    found = f"is {conf['model_type']!r}" if "model_type" in conf else "is missing"
    raise QMambaInputError(f"{directory / CONFIG}: not a model qmamba reads (key 'model_type' {found}; "
                           f"expected a transformers Mamba2 ('mamba2'), a qmamba W8A8 checkpoint "
                           f"('format': {QMAMBA_FORMAT!r}) or a Quamba2 checkpoint ('d_model', 'ssm_cfg'))")


def identify(spec) -> ModelSource:
    """What ``spec`` names (see the module docstring), read from its files; builds nothing."""
    spec = str(spec)
    path = Path(spec)
    if path.is_dir():
        if not (path / CONFIG).is_file():
            if (path / ONNX_METADATA).is_file():
                raise QMambaInputError(f"{spec}: an exported ONNX directory (`qmamba export` output), not a model")
            raise FileNotFoundError(f"{spec}: holds no {CONFIG} (neither a Hugging Face model nor a "
                                    f"qmamba or Quamba2 checkpoint)")
        conf = read_json_object(path / CONFIG)
        return ModelSource(spec, _kind_of_config(path, conf), path, conf)
    if path.exists():
        raise QMambaInputError(f"{spec}: a file; a model is a folder or the name of a shipped model")
    if "/" in spec or path.suffix:
        raise FileNotFoundError(f"model directory {spec} does not exist")
    from qmamba import models

    directory = models.model_dir(spec)  # a clear error lists the shipped names
    return ModelSource(spec, SHIPPED, directory, read_json_object(directory / CONFIG))


def load_float(spec, command: str, dtype: torch.dtype = torch.float32):
    """A float MODEL as a transformers Mamba2ForCausalLM in eval mode (weights cast to ``dtype``)."""
    from qmamba import models

    src = spec if isinstance(spec, ModelSource) else identify(spec)
    if src.w8a8:
        raise QMambaInputError(f"{command}: {src.spec} is a {src.kind} checkpoint; {command} takes a float "
                               f"model (a shipped name or a transformers Mamba2 folder)")
    return models.load_mamba2(src.path, dtype)


def load_w8a8(spec, command: str, ops_backend: str = "reference"):
    """A W8A8 MODEL as a QuantMamba2LM."""
    src = spec if isinstance(spec, ModelSource) else identify(spec)
    if src.kind == QMAMBA_W8A8:
        from .checkpoint import load_quantized

        return load_quantized(src.path, ops_backend)
    if src.kind == QUAMBA2_W8A8:
        from .quamba2 import load_quamba2

        return load_quamba2(src.path, ops_backend)
    raise QMambaInputError(f"{command}: {src.spec} is an unquantized model ({src.kind}); quantize it first "
                           f"with `qmamba calibrate`")
