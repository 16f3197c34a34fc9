"""Tiny Mamba2 models with the 130m (g = 1) and 8b (g = 8) layer structure, narrowed for the tests.

``tiny_float_model(kind)`` is a random-init transformers Mamba2ForCausalLM (byte vocabulary);
``tiny_quantized_model(kind)`` calibrates it with ``calibrate_model`` on a little Tiny Shakespeare
(``qmamba.data``); ``exported_tiny_model`` exports that. The fixture of the ONNX, ONNX Runtime,
Polygraphy and TensorRT tests.
"""
from __future__ import annotations

import functools

# kind -> (Mamba2Config fields, calibration head groups)
TINY_CONFIGS = {
    "g1": (dict(hidden_size=64, expand=2, head_dim=16, num_heads=8, state_size=32, n_groups=1), 4),
    "g8": (dict(hidden_size=64, expand=2, head_dim=8, num_heads=16, state_size=16, n_groups=8), 2),
    # d_ssm 384 = 12 x 32: a Hadamard rotation of two Kronecker factors, the shape of mamba2-130m's
    # 1536 = 12 x 128 (g1's and g8's 128 is a single factor)
    "g1-384": (dict(hidden_size=192, expand=2, head_dim=16, num_heads=24, state_size=16, n_groups=1), 4),
}


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
    """Calibrated on the first 4 x 64 bytes of Tiny Shakespeare (min-max observers)."""
    from qmamba.data import text_file
    from qmamba.export.calibrate import calibrate_model

    text = text_file("tinyshakespeare/input.txt").read_bytes()[:16384]
    _, head_groups = TINY_CONFIGS[kind]
    return calibrate_model(tiny_float_model(kind, n_layer), text, num_samples=4, seq_len=64,
                           batch_size=4, progress=False, n_head_groups=head_groups,
                           hadamard=hadamard)


def exported_tiny_model(kind: str, out_dir):
    """``tiny_quantized_model(kind)`` exported (``export_onnx``: prefill and decode graphs) into
    ``out_dir``; returns ``(model, out_dir)``. The fixture of the ONNX, ORT and TensorRT tests."""
    from qmamba.export.onnx_export import export_onnx

    model = tiny_quantized_model(kind)
    export_onnx(model, out_dir, force=True)
    return model, out_dir
