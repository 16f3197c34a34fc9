"""The MODEL argument of every command: what it names, told from its files, and its one loader.

``identify(spec)`` reads files only and says which kind of model ``spec`` is; nothing is built
before the kind is known, so a folder that is not a float Mamba2 never reaches transformers
(which would build its default 64-layer Mamba2 from whatever config.json it finds).

- ``shipped``: a name of ``qmamba.models`` (not a path), a float transformers Mamba2;
- ``qmamba-w8a8``: config.json ``"format": "qmamba-w8a8"`` (``qmamba calibrate``, checkpoint.py);
- ``quamba2-w8a8``: config.json in mamba_ssm's layout with Quamba's quantized layer
  (``ssm_cfg.layer`` ``W8A8QMamba2``, or Quamba's ``norm_cfg`` / ``embedding_cfg`` /
  ``lm_head_cfg`` keys), a released Quamba2 W8A8 checkpoint (quamba2.py);
- ``mamba_ssm-mamba2``: config.json in mamba_ssm's layout (``d_model``, ``n_layer``, ``ssm_cfg``
  with ``layer`` ``Mamba2``), a float checkpoint ``MambaLMHeadModel`` reads
  (``qmamba.models.mamba_ssm_layout``);
- ``transformers-mamba2``: config.json ``"model_type": "mamba2"``, a float transformers Mamba2 folder.

A name that is not a local path but has the form ``owner/name`` is a Hugging Face hub id: its files
are fetched with huggingface_hub (transformers' own download and cache) and the snapshot folder is
identified like a local one; offline or unknown ids are refused naming the id.

What qmamba cannot carry is refused naming config.json's key and the reason: Quamba's 4-bit layers
(``W4A8QMamba2``, ``W4A16QMamba2``: packed int4 weights), Mamba1 layers, hybrid models with
attention layers (``attn_layer_idx``, Quamba's ``is_hybrid``), MLP blocks (``d_intermediate``).
A folder of ``qmamba export`` (qmamba_onnx.json, no config.json) is named as such in the error, for
the commands that take a model. New kinds go into ``_kind_of_config`` (a folder) or ``identify``
(a name that is not a folder), their loader into ``load_float`` / ``load_w8a8``.

``load_float(spec)`` gives a transformers Mamba2ForCausalLM (every float kind, with the per-group
gated norm of ``qmamba.models.ensure_grouped_norm``); ``load_w8a8(spec)`` a QuantMamba2LM (every
W8A8 kind); a kind the command cannot take is refused with what to do instead.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .metadata import ONNX_METADATA, read_json_object
from .validate import QMambaInputError

SHIPPED = "shipped"
QMAMBA_W8A8 = "qmamba-w8a8"
QUAMBA2_W8A8 = "quamba2-w8a8"
TRANSFORMERS_MAMBA2 = "transformers-mamba2"
MAMBA_SSM_MAMBA2 = "mamba_ssm-mamba2"

W8A8_KINDS = (QMAMBA_W8A8, QUAMBA2_W8A8)
CONFIG = "config.json"
QUAMBA2_W8A8_LAYER = "W8A8QMamba2"
# Keys Quamba adds to mamba_ssm's config of a quantized model.
QUAMBA_CONFIG_KEYS = ("norm_cfg", "embedding_cfg", "lm_head_cfg")
# owner/name, as the Hugging Face hub spells a repository.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Files of a hub snapshot that a model needs (config, weights, tokenizer).
HUB_FILES = ("*.json", "*.safetensors", "*.bin", "*.txt", "*.model", "*.jinja")


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
    if "d_model" in conf:
        return _mamba_ssm_layout_kind(directory / CONFIG, conf)
    if conf.get("model_type") == "mamba2":
        return TRANSFORMERS_MAMBA2
    found = f"is {conf['model_type']!r}" if "model_type" in conf else "is missing"
    raise QMambaInputError(f"{directory / CONFIG}: not a model qmamba reads (key 'model_type' {found}; "
                           f"expected a transformers Mamba2 ('mamba2'), a qmamba W8A8 checkpoint "
                           f"('format': {QMAMBA_FORMAT!r}) or a mamba_ssm / Quamba2 checkpoint ('d_model', 'ssm_cfg'))")


def _mamba_ssm_layout_kind(config_path: Path, conf: dict) -> str:
    """A Quamba2 W8A8 checkpoint or a float mamba_ssm Mamba2, or a refusal naming the key."""
    from qmamba.models.real_configs import check_mamba2_only

    ssm = conf.get("ssm_cfg") or {}
    layer = ssm.get("layer")
    quamba = (isinstance(layer, str) and re.match(r"W\d+A\d+", layer)) or any(k in conf for k in QUAMBA_CONFIG_KEYS)
    if not quamba:
        check_mamba2_only(conf, str(config_path))     # Mamba1, hybrid, MLP blocks: refused there
        return MAMBA_SSM_MAMBA2
    if layer is not None and layer != QUAMBA2_W8A8_LAYER:
        why = ("4-bit weights (packed int4) are not supported; qmamba carries W8A8 checkpoints"
               if layer.startswith("W4") else f"only Quamba2's {QUAMBA2_W8A8_LAYER} layers are supported")
        raise QMambaInputError(f"{config_path}: ssm_cfg.layer is {layer!r}: {why}")
    if conf.get("is_hybrid") or conf.get("attn_layer_idx"):
        key = "is_hybrid" if conf.get("is_hybrid") else "attn_layer_idx"
        raise QMambaInputError(f"{config_path}: {key} is {conf[key]!r}: hybrid models with attention "
                               f"layers are not supported")
    return QUAMBA2_W8A8


def _from_hub(spec: str) -> Path:
    """The local snapshot of hub id ``spec`` (downloaded if needed, as transformers does)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec, allow_patterns=list(HUB_FILES)))
    except Exception as e:  # offline, unknown id, no access, no network: all say the same to a user
        raise QMambaInputError(f"model {spec!r}: no such local directory, and the Hugging Face hub "
                               f"could not provide it ({type(e).__name__}); check the id, or download "
                               f"it where the network allows and pass its directory") from e


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
    if HUB_ID.match(spec) and not spec.startswith("."):
        src = identify(_from_hub(spec))
        return ModelSource(spec, src.kind, src.path, src.config)
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
                               f"model (a shipped name, a transformers or mamba_ssm Mamba2 folder)")
    if src.kind == MAMBA_SSM_MAMBA2:
        from qmamba.models.mamba_ssm_layout import load_mamba_ssm

        return load_mamba_ssm(src.path, dtype)
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
