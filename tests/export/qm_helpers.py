"""Helpers of the export tests (tiny float models, text paths, byte tokens)."""
from __future__ import annotations

from pathlib import Path

import torch

from qmamba.data import text_file

SHAKESPEARE = text_file("tinyshakespeare/input.txt")
WIKITEXT_TEST = text_file("wikitext-2/test.txt")


def tiny_mamba2(seed: int = 0, **overrides):
    """A random transformers Mamba2ForCausalLM with tiny widths (byte vocabulary)."""
    from transformers import Mamba2Config, Mamba2ForCausalLM

    kw = dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, expand=2, num_heads=8,
              head_dim=16, n_groups=2, state_size=16, conv_kernel=4, chunk_size=32)
    kw.update(overrides)
    torch.manual_seed(seed)
    return Mamba2ForCausalLM(Mamba2Config(**kw)).eval()


def byte_tokens(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


def contract_tables() -> dict:
    """The op tables of docs/ops.md, as parsed by tests/test_contract.py."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "test_contract.py"
    spec = importlib.util.spec_from_file_location("qmamba_test_contract", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.contract()
