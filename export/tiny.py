"""Tiny Mamba2 models with the 130m (g = 1) and 8b (g = 8) layer structure, narrowed for CI.

``tiny_float_model(kind)`` is a random-init transformers Mamba2ForCausalLM (byte vocabulary);
``tiny_quantized_model(kind)`` calibrates it with ``calibrate_model`` on a little real text. Used by
the tests, ``qmamba check``'s own test and the Polygraphy data loader's test. ``data_file`` finds
the shared text data (``QMAMBA_DATA`` overrides its folder).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

def _data_dir() -> Path:
    """$QMAMBA_DATA, else the ``shared/data`` folder beside the checkout (where CI and the
    developers keep the corpora), else the workplace's fixed location."""
    if os.environ.get("QMAMBA_DATA"):
        return Path(os.environ["QMAMBA_DATA"])
    beside_checkout = Path(__file__).resolve().parents[2] / "shared" / "data"
    return beside_checkout if beside_checkout.is_dir() else Path("/work/shared/data")


DATA_DIR = _data_dir()

# kind -> (Mamba2Config fields, calibration head groups)
TINY_CONFIGS = {
    "g1": (dict(hidden_size=64, expand=2, head_dim=16, num_heads=8, state_size=32, n_groups=1), 4),
    "g8": (dict(hidden_size=64, expand=2, head_dim=8, num_heads=16, state_size=16, n_groups=8), 2),
}


def data_file(name: str = "tinyshakespeare/input.txt") -> Path:
    path = DATA_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: text data not found (set QMAMBA_DATA to its folder)")
    return path


def tiny_float_model(kind: str, n_layer: int = 2, seed: int = 0):
    import torch
    from transformers import Mamba2Config, Mamba2ForCausalLM

    if kind not in TINY_CONFIGS:
        raise ValueError(f"tiny model kind must be one of {sorted(TINY_CONFIGS)}, got {kind!r}")
    fields, _ = TINY_CONFIGS[kind]
    torch.manual_seed(seed)
    cfg = Mamba2Config(vocab_size=256, conv_kernel=4, num_hidden_layers=n_layer, chunk_size=32,
                       **fields)
    return Mamba2ForCausalLM(cfg).eval()


@functools.lru_cache(maxsize=4)
def tiny_quantized_model(kind: str, n_layer: int = 2, hadamard: bool = False):
    """Calibrated on 4 x 64 bytes of Tiny Shakespeare (min-max observers)."""
    from .calibrate import calibrate_model

    text = data_file().read_bytes()[:16384]
    _, head_groups = TINY_CONFIGS[kind]
    return calibrate_model(tiny_float_model(kind, n_layer), text, num_samples=4, seq_len=64,
                           batch_size=4, progress=False, n_head_groups=head_groups,
                           hadamard=hadamard)


def exported_tiny_model(kind: str, out_dir):
    """``tiny_quantized_model(kind)`` exported (``export_onnx``: prefill and decode graphs) into
    ``out_dir``; returns ``(model, out_dir)``. The fixture of the ONNX, ORT and TensorRT tests."""
    from .onnx_export import export_onnx

    model = tiny_quantized_model(kind)
    export_onnx(model, out_dir, force=True)
    return model, out_dir
