"""Float Mamba2 checkpoints in mamba_ssm's layout, read as transformers' Mamba2ForCausalLM.

A mamba_ssm checkpoint directory (what ``MambaLMHeadModel.save_pretrained`` writes and
``from_pretrained`` reads) holds ``config.json`` (``d_model``, ``n_layer``, ``vocab_size``,
``ssm_cfg``, ``pad_vocab_size_multiple``, ``tie_embeddings``, ``rms_norm``, ...; see
``real_configs``) and ``pytorch_model.bin``, or safetensors (one file or shards with an index).
Keys, per layer ``P = backbone.layers.{i}``:

======================================  =====================================================
``backbone.embedding.weight``           ``[vocab (padded), d_model]``
``P.norm.weight``                       block RMSNorm ``[d_model]``
``P.mixer.in_proj.weight``              ``[z | x | B | C | dt rows, d_model]`` (``.bias`` if bias)
``P.mixer.conv1d.weight|bias``          ``[conv_dim, 1, d_conv]``, ``[conv_dim]``
``P.mixer.dt_bias|A_log|D``             ``[nheads]`` each
``P.mixer.norm.weight``                 gated RMSNorm ``[d_ssm]``
``P.mixer.out_proj.weight``             ``[d_model, d_ssm]`` (``.bias`` if bias)
``backbone.norm_f.weight``              final RMSNorm ``[d_model]``
``lm_head.weight``                      ``[vocab, d_model]``; optional when tie_embeddings
======================================  =====================================================

transformers' Mamba2 uses the same names but ``backbone.embeddings``. Anything else (a hybrid
model, Mamba1 layers, an unknown key, a wrong shape) is refused with a message naming it.
Tensors are read memory-mapped and converted one at a time, so a model is never held twice.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from qmamba.export.validate import QMambaInputError

from .real_configs import Mamba2Sizes, mamba2_sizes, to_transformers_config
from .safetensors_shards import ShardWriter, safetensors_files

CONFIG = "config.json"
TORCH_WEIGHTS = "pytorch_model.bin"


def read_config(directory) -> dict:
    p = Path(directory) / CONFIG
    if not p.is_file():
        raise FileNotFoundError(f"{directory}: {CONFIG} not found")
    return json.loads(p.read_text())


class _SafetensorsWeights(Mapping):
    """Tensors of one or more safetensors files, each read when asked for."""

    def __init__(self, files: list[Path]):
        from safetensors import safe_open

        self._handles = [safe_open(str(f), framework="pt") for f in files]
        self._where = {k: h for h in self._handles for k in h.keys()}

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._where[key].get_tensor(key)

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def open_weights(directory) -> Mapping[str, torch.Tensor]:
    """The state dict of a checkpoint directory, memory-mapped (pytorch_model.bin or safetensors)."""
    d = Path(directory)
    if (d / TORCH_WEIGHTS).is_file():
        return torch.load(d / TORCH_WEIGHTS, map_location="cpu", weights_only=True, mmap=True)
    files = safetensors_files(d)
    if files:
        return _SafetensorsWeights(files)
    raise FileNotFoundError(f"{d}: neither {TORCH_WEIGHTS} nor model.safetensors (or its index) found")


def expected_shapes(s: Mamba2Sizes) -> dict[str, tuple[int, ...]]:
    """mamba_ssm key -> shape of every tensor of a model (lm_head only when untied)."""
    shapes = {"backbone.embedding.weight": (s.vocab_size, s.d_model)}
    for i in range(s.n_layer):
        P = f"backbone.layers.{i}."
        shapes[P + "norm.weight"] = (s.d_model,)
        shapes[P + "mixer.in_proj.weight"] = (s.d_in_proj, s.d_model)
        if s.bias:
            shapes[P + "mixer.in_proj.bias"] = (s.d_in_proj,)
        shapes[P + "mixer.conv1d.weight"] = (s.conv_dim, 1, s.d_conv)
        if s.conv_bias:
            shapes[P + "mixer.conv1d.bias"] = (s.conv_dim,)
        for name in ("dt_bias", "A_log", "D"):
            shapes[P + "mixer." + name] = (s.nheads,)
        shapes[P + "mixer.norm.weight"] = (s.d_ssm,)
        shapes[P + "mixer.out_proj.weight"] = (s.d_model, s.d_ssm)
        if s.bias:
            shapes[P + "mixer.out_proj.bias"] = (s.d_model,)
    shapes["backbone.norm_f.weight"] = (s.d_model,)
    if not s.tie_embeddings:
        shapes["lm_head.weight"] = (s.vocab_size, s.d_model)
    return shapes


def transformers_key(key: str) -> str:
    """mamba_ssm key -> transformers' Mamba2ForCausalLM key."""
    prefix = "backbone.embedding."
    return "backbone.embeddings." + key[len(prefix):] if key.startswith(prefix) else key


def checked_tensors(config: dict, weights: Mapping[str, torch.Tensor], source: str,
                    dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """(transformers key, tensor in ``dtype``) of every weight, in mamba_ssm's order, after checking
    that the keys are exactly those the config needs and every shape fits."""
    s = mamba2_sizes(config, source)
    shapes = expected_shapes(s)
    optional = {"lm_head.weight"} if s.tie_embeddings else set()
    unknown = sorted(set(weights) - set(shapes) - optional)
    if unknown:
        raise QMambaInputError(f"{source}: unknown key {unknown[0]}"
                               f"{f' (and {len(unknown) - 1} more)' if len(unknown) > 1 else ''}: "
                               f"not a weight of a Mamba2 model with this config")
    missing = [k for k in shapes if k not in weights]
    if missing:
        raise QMambaInputError(f"{source}: key {missing[0]} is missing"
                               f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}")
    if "lm_head.weight" in optional and "lm_head.weight" in weights:
        shapes["lm_head.weight"] = shapes["backbone.embedding.weight"]
    for key, shape in shapes.items():
        t = weights[key]
        if tuple(t.shape) != shape:
            raise QMambaInputError(f"{source}: {key} has shape {list(t.shape)}, the config needs "
                                   f"{list(shape)}")
        if not t.is_floating_point():
            raise QMambaInputError(f"{source}: {key} is {t.dtype}; a float checkpoint is needed")
        yield transformers_key(key), t.to(dtype)


def load_mamba_ssm(directory, dtype: torch.dtype = torch.float32):
    """A mamba_ssm-layout checkpoint directory -> transformers' Mamba2ForCausalLM (eval mode).

    The model is built without memory for its weights and takes the converted tensors directly,
    so peak memory is one copy of the model in ``dtype``."""
    from transformers import Mamba2ForCausalLM

    from . import ensure_grouped_norm

    config = read_config(directory)
    hf_config = to_transformers_config(config)
    with torch.device("meta"):
        model = Mamba2ForCausalLM(hf_config)
    state = dict(checked_tensors(config, open_weights(directory), str(directory), dtype))
    if hf_config.tie_word_embeddings:
        state["lm_head.weight"] = state["backbone.embeddings.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    if hf_config.tie_word_embeddings:
        model.tie_weights()
    return ensure_grouped_norm(model).eval()


def convert_mamba_ssm_to_transformers(src, dst, dtype: torch.dtype = torch.float16,
                                      special_tokens: dict | None = None) -> Path:
    """Writes the mamba_ssm checkpoint ``src`` as a transformers checkpoint in ``dst``
    (config.json + safetensors, sharded past 2 GiB), one tensor in memory at a time."""
    config = read_config(src)
    dst = Path(dst)
    writer = ShardWriter(dst)
    for key, t in checked_tensors(config, open_weights(src), str(src), dtype):
        if key != "lm_head.weight" or not config.get("tie_embeddings", True):
            writer.add(key, t)
    writer.close()
    to_transformers_config(config, special_tokens).save_pretrained(dst)
    return dst
