"""Exact configurations of the released float Mamba2 models, in mamba_ssm's terms.

A configuration is the dict a mamba_ssm ``config.json`` holds (``MambaLMHeadModel(**config)``):
``d_model``, ``n_layer``, ``vocab_size`` (unpadded), ``pad_vocab_size_multiple``, ``ssm_cfg`` (the
``Mamba2`` layer's arguments), ``rms_norm``, ``residual_in_fp32``, ``fused_add_norm``,
``tie_embeddings``, ``d_intermediate`` (0: no MLP) and ``attn_layer_idx`` (empty: no attention).
``ssm_cfg`` here spells out every size the layer would otherwise take by default (d_state 128,
headdim 64, expand 2, d_conv 4, chunk_size 256, ngroups 1), so the tables read alone.

- ``mamba2-130m`` … ``mamba2-2.7b``: state-spaces' Mamba2 family (GPT-NeoX tokenizer, 50 277 tokens,
  padded to a multiple of 16: 50 288 rows), tied embeddings, one SSD group.
- ``mamba2-8b``: NVIDIA's mamba2-8b-3t-4k (Mamba2 layers only, no attention; its hybrid sibling
  is a different model) as converted to mamba_ssm's layout: 8 SSD groups, chunk 128, a 256 000
  token SentencePiece vocabulary, untied embeddings.
- ``mamba-codestral-7b``: Mistral's Mamba-Codestral-7B-v0.1 (transformers' ``Mamba2Config``
  defaults are this model): 64 layers, 8 SSD groups, 32 768 tokens, untied embeddings.

``mamba2_sizes(config)`` resolves the derived sizes, ``check_mamba2_only(config, source)`` refuses
what qmamba cannot carry, ``to_transformers_config(config)`` gives transformers' ``Mamba2Config``
and ``parameter_count(config)`` the number of weights.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

from qmamba.export.layer_sizes import Mamba2LayerSizes
from qmamba.export.validate import QMambaInputError


def _config(d_model: int, n_layer: int, vocab_size: int, *, ngroups: int = 1, chunk_size: int = 256,
            pad_vocab_size_multiple: int = 16, tie_embeddings: bool = True,
            residual_in_fp32: bool = True, fused_add_norm: bool = True) -> dict:
    return {
        "d_model": d_model, "d_intermediate": 0, "n_layer": n_layer, "vocab_size": vocab_size,
        "ssm_cfg": {"layer": "Mamba2", "d_state": 128, "d_conv": 4, "expand": 2, "headdim": 64,
                    "ngroups": ngroups, "chunk_size": chunk_size, "rmsnorm": True,
                    "norm_before_gate": False},
        "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": residual_in_fp32,
        "fused_add_norm": fused_add_norm, "pad_vocab_size_multiple": pad_vocab_size_multiple,
        "tie_embeddings": tie_embeddings,
    }


GPT_NEOX_VOCAB = 50277

REAL_CONFIGS: dict[str, dict] = {
    "mamba2-130m": _config(768, 24, GPT_NEOX_VOCAB),
    "mamba2-370m": _config(1024, 48, GPT_NEOX_VOCAB),
    "mamba2-780m": _config(1536, 48, GPT_NEOX_VOCAB),
    "mamba2-1.3b": _config(2048, 48, GPT_NEOX_VOCAB),
    "mamba2-2.7b": _config(2560, 64, GPT_NEOX_VOCAB),
    "mamba2-8b": _config(4096, 56, 256000, ngroups=8, chunk_size=128, pad_vocab_size_multiple=128,
                         tie_embeddings=False, residual_in_fp32=False, fused_add_norm=False),
    "mamba-codestral-7b": _config(4096, 64, 32768, ngroups=8, tie_embeddings=False),
}

# Special token ids of the tokenizers the models were trained with (GPT-NeoX: <|endoftext|> is 0
# and also pads; Mistral's: <s> 1, </s> 2, transformers' default pad 1); the 8b's SentencePiece
# ids are not recorded here.
SPECIAL_TOKENS: dict[str, dict] = {
    "gpt-neox": {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0},
    "mistral": {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 1},
    "unrecorded": {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None},
}
MODEL_TOKENIZER = {"mamba2-8b": "unrecorded", "mamba-codestral-7b": "mistral"}

# mamba_ssm's Mamba2 defaults for the arguments a config.json may leave out.
MAMBA2_DEFAULTS = {"d_state": 128, "d_conv": 4, "expand": 2, "headdim": 64, "d_ssm": None,
                   "ngroups": 1, "chunk_size": 256, "rmsnorm": True, "norm_before_gate": False,
                   "D_has_hdim": False, "bias": False, "conv_bias": True, "dt_min": 0.001,
                   "dt_max": 0.1, "dt_init_floor": 1e-4, "dt_limit": (0.0, math.inf)}


def names() -> list[str]:
    return list(REAL_CONFIGS)


def real_config(name: str) -> dict:
    """A copy of the mamba_ssm configuration of ``name``; a clear error lists the known names."""
    if name not in REAL_CONFIGS:
        raise ValueError(f"unknown model {name!r}; known configurations: {', '.join(REAL_CONFIGS)}")
    return copy.deepcopy(REAL_CONFIGS[name])


def padded_vocab_size(config: dict) -> int:
    """The embedding rows mamba_ssm allocates: vocab_size rounded up to pad_vocab_size_multiple."""
    vocab, multiple = int(config["vocab_size"]), int(config.get("pad_vocab_size_multiple", 1))
    if vocab % multiple:
        vocab += multiple - vocab % multiple
    return vocab


@dataclass(frozen=True)
class Mamba2Sizes(Mamba2LayerSizes):
    """Every size of a Mamba2 language model that its weights' shapes depend on."""
    d_model: int
    n_layer: int
    vocab_size: int          # padded: rows of the embedding and the lm_head
    real_vocab_size: int     # tokens the tokenizer can produce
    d_state: int
    d_conv: int
    headdim: int
    nheads: int
    ngroups: int
    chunk_size: int
    tie_embeddings: bool
    bias: bool
    conv_bias: bool

    @property
    def d_in_proj(self) -> int:
        """in_proj rows, in mamba_ssm's order z | x | B | C | dt."""
        return 2 * self.d_ssm + 2 * self.ngroups * self.d_state + self.nheads


def _ssm(config: dict) -> dict:
    ssm = dict(MAMBA2_DEFAULTS)
    ssm.update(config.get("ssm_cfg") or {})
    return ssm


def check_mamba2_only(config: dict, source: str) -> None:
    """Refuses, naming the key and the reason, a model that is not a pure Mamba2 language model
    of the kind transformers' Mamba2ForCausalLM and qmamba's W8A8 model compute."""
    for key in ("d_model", "n_layer", "vocab_size"):
        if key not in config:
            raise QMambaInputError(f"{source}: config.json has no {key}")
    ssm = config.get("ssm_cfg") or {}
    layer = ssm.get("layer", "Mamba1")          # mamba_ssm's own default layer is Mamba1
    if layer != "Mamba2":
        raise QMambaInputError(f"{source}: ssm_cfg.layer is {layer!r}; only Mamba2 layers are "
                               f"supported")
    attn = config.get("attn_layer_idx") or []
    if attn:
        raise QMambaInputError(f"{source}: attn_layer_idx is {list(attn)}: hybrid models with "
                               f"attention layers are not supported")
    if int(config.get("d_intermediate", 0) or 0):
        raise QMambaInputError(f"{source}: d_intermediate is {config['d_intermediate']}: models with "
                               f"MLP blocks are not supported")
    if not config.get("rms_norm", True):
        raise QMambaInputError(f"{source}: rms_norm is false: LayerNorm blocks are not supported")
    full = _ssm(config)
    refusals = {
        "rmsnorm": (False, "a Mamba2 layer without its gated RMSNorm is not supported"),
        "norm_before_gate": (True, "only the gate-then-norm order (norm_before_gate false) is supported"),
        "D_has_hdim": (True, "only one D per head is supported"),
    }
    for key, (bad, why) in refusals.items():
        if bool(full[key]) == bad:
            raise QMambaInputError(f"{source}: ssm_cfg.{key} is {full[key]}: {why}")
    d_inner = int(full["expand"]) * int(config["d_model"])
    if full["d_ssm"] is not None and int(full["d_ssm"]) != d_inner:
        raise QMambaInputError(f"{source}: ssm_cfg.d_ssm is {full['d_ssm']} but expand * d_model is "
                               f"{d_inner}: layers with a gated MLP part are not supported")
    if d_inner % int(full["headdim"]):
        raise QMambaInputError(f"{source}: ssm_cfg.headdim {full['headdim']} does not divide "
                               f"expand * d_model = {d_inner}")
    nheads = d_inner // int(full["headdim"])
    if nheads % int(full["ngroups"]):
        raise QMambaInputError(f"{source}: ssm_cfg.ngroups {full['ngroups']} does not divide the "
                               f"{nheads} heads")


def mamba2_sizes(config: dict, source: str = "config") -> Mamba2Sizes:
    """The resolved sizes of a (checked) mamba_ssm Mamba2 configuration."""
    check_mamba2_only(config, source)
    ssm = _ssm(config)
    d_model = int(config["d_model"])
    d_inner = int(ssm["expand"]) * d_model
    return Mamba2Sizes(d_model=d_model, n_layer=int(config["n_layer"]),
                       vocab_size=padded_vocab_size(config), real_vocab_size=int(config["vocab_size"]),
                       d_state=int(ssm["d_state"]), d_conv=int(ssm["d_conv"]),
                       headdim=int(ssm["headdim"]), nheads=d_inner // int(ssm["headdim"]),
                       ngroups=int(ssm["ngroups"]), chunk_size=int(ssm["chunk_size"]),
                       tie_embeddings=bool(config.get("tie_embeddings", True)),
                       bias=bool(ssm["bias"]), conv_bias=bool(ssm["conv_bias"]))


def parameter_count(config: dict) -> int:
    """Weights of the model (a tied lm_head counted once), as ``sum(p.numel())`` of mamba_ssm's."""
    s = mamba2_sizes(config)
    layer = (s.d_model * s.d_in_proj + (s.d_in_proj if s.bias else 0)       # in_proj
             + s.conv_dim * s.d_conv + (s.conv_dim if s.conv_bias else 0)   # conv1d
             + 3 * s.nheads                                                 # dt_bias, A_log, D
             + s.d_ssm                                                      # gated norm
             + s.d_ssm * s.d_model + (s.d_model if s.bias else 0)           # out_proj
             + s.d_model)                                                   # block norm
    embedding = s.vocab_size * s.d_model
    return (embedding + s.n_layer * layer + s.d_model
            + (0 if s.tie_embeddings else embedding))


def to_transformers_config(config: dict, special_tokens: dict | None = None):
    """transformers' ``Mamba2Config`` of a mamba_ssm Mamba2 configuration (vocabulary padded as
    mamba_ssm pads it). ``special_tokens`` (bos/eos/pad ids) defaults to GPT-NeoX's."""
    from transformers import Mamba2Config

    s = mamba2_sizes(config)
    ssm = _ssm(config)
    lo, hi = ssm["dt_limit"]
    tokens = SPECIAL_TOKENS["gpt-neox"] if special_tokens is None else special_tokens
    return Mamba2Config(
        vocab_size=s.vocab_size, hidden_size=s.d_model, num_hidden_layers=s.n_layer,
        num_heads=s.nheads, head_dim=s.headdim, state_size=s.d_state, n_groups=s.ngroups,
        expand=int(ssm["expand"]), conv_kernel=s.d_conv, chunk_size=s.chunk_size,
        use_bias=s.bias, use_conv_bias=s.conv_bias,
        layer_norm_epsilon=float(config.get("norm_epsilon", 1e-5)),
        residual_in_fp32=bool(config.get("residual_in_fp32", True)),
        tie_word_embeddings=s.tie_embeddings,
        time_step_min=float(ssm["dt_min"]), time_step_max=float(ssm["dt_max"]),
        time_step_floor=float(ssm["dt_init_floor"]), time_step_limit=(float(lo), float(hi)),
        **tokens)


def special_tokens_of(name: str) -> dict:
    """bos/eos/pad ids of a known model's tokenizer (GPT-NeoX's unless the table says otherwise)."""
    return dict(SPECIAL_TOKENS[MODEL_TOKENIZER.get(name, "gpt-neox")])
