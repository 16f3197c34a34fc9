"""The small byte-level Mamba2 language models that ship inside qmamba.

Each model is a folder here with a ``transformers`` config.json and an fp16 model.safetensors,
trained by ``qmamba train`` (export/train.py; scripts/device_train.sh is the exact command) on
tinyshakespeare + wikitext-2 valid. Tokens are raw bytes (vocabulary 256): encode text with
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
    from transformers import Mamba2ForCausalLM

    model = Mamba2ForCausalLM.from_pretrained(model_dir(name), dtype=dtype)
    return model.eval()
