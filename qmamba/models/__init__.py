"""The small byte-level Mamba2 language models that ship inside qmamba.

Each model is a folder here with a ``transformers`` config.json and an fp16 model.safetensors,
trained by ``qmamba train`` (export/train.py) on tinyshakespeare + wikitext-2 valid. Tokens are raw bytes (vocabulary 256): encode text with
``list(text.encode("utf-8"))``.

- ``mamba2-tiny-g1``: 8 layers, hidden 256, 8 heads of 64, 1 SSD group, state 128 (the default).
- ``mamba2-tiny-g4``: 8 layers, hidden 256, 16 heads of 32, 4 SSD groups, state 64.
"""
from __future__ import annotations

from pathlib import Path

import torch

MODELS_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = "mamba2-tiny-g1"


def available() -> list[str]:
    """Names of the shipped models (folders holding config.json and model.safetensors)."""
    return sorted(p.name for p in MODELS_DIR.iterdir()
                  if (p / "config.json").is_file() and (p / "model.safetensors").is_file())


def model_dir(name: str = DEFAULT_MODEL) -> Path:
    """Folder of a shipped model; a clear error lists the known names."""
    names = available()
    if name not in names:
        raise ValueError(f"qmamba.models: unknown model {name!r}; shipped models: {', '.join(names)}")
    return MODELS_DIR / name


def load_float(name: str = DEFAULT_MODEL, dtype: torch.dtype = torch.float32):
    """The shipped model as a transformers Mamba2ForCausalLM in eval mode, weights cast to dtype."""
    return load_mamba2(model_dir(name), dtype)


def load_mamba2(directory, dtype: torch.dtype = torch.float32):
    """A transformers Mamba2 folder as a Mamba2ForCausalLM in eval mode with the per-group gated norm
    (``ensure_grouped_norm``), weights cast to ``dtype``. The one place a float
    model is built from a folder; ``qmamba.export.model_source`` decides first that it is one."""
    from transformers import Mamba2ForCausalLM

    model = Mamba2ForCausalLM.from_pretrained(str(directory), dtype=dtype)
    return ensure_grouped_norm(model).eval()


class GroupedGatedRMSNorm(torch.nn.Module):
    """Mamba2's gated RMSNorm, normalized over each SSD group's channels separately (mamba_ssm's
    ``RMSNormGated(group_size=d_ssm // ngroups)``, transformers' own norm from 5.2x on)."""

    def __init__(self, weight: torch.nn.Parameter, group_size: int, eps: float):
        super().__init__()
        self.weight = weight
        self.group_size = group_size
        self.variance_epsilon = eps

    def forward(self, hidden_states, gate=None):
        dtype = hidden_states.dtype
        h = hidden_states.float()
        if gate is not None:
            h = h * torch.nn.functional.silu(gate.float())
        g = h.view(*h.shape[:-1], -1, self.group_size)
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * g.view(h.shape).to(dtype)


def ensure_grouped_norm(model):
    """Makes every mixer's gated norm per SSD group, whatever the installed transformers does.

    Some transformers versions (5.17, for one) normalize over all d_ssm channels
    when n_groups > 1; the reference (mamba_ssm), newer transformers and qmamba's W8A8 model
    normalize each group on its own. With n_groups = 1 the two agree. The shipped models are
    trained and evaluated with the per-group norm, so the same weights mean the same function
    everywhere. The parameter keeps its name (``norm.weight``): checkpoints are unaffected.
    """
    for layer in model.backbone.layers:
        mixer = layer.mixer
        group_size = mixer.intermediate_size // mixer.n_groups
        norm = mixer.norm
        if getattr(norm, "group_size", None) != group_size:
            eps = getattr(norm, "variance_epsilon", model.config.layer_norm_epsilon)
            mixer.norm = GroupedGatedRMSNorm(norm.weight, group_size, eps)
    return model
