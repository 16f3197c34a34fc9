"""Random but valid numpy inputs of the two custom ops' ONNX bodies at a layer shape
(``qmamba.export.layer_sizes.LayerShape``), for the ONNX Runtime and TensorRT graph tests.

Values are drawn so that the op sees realistic ranges: int8 activations over the whole range,
scales of the size Quamba2 checkpoints hold, uneven group ends. Every case is a triple
(activations, params, attributes) of numpy arrays / python scalars, keyed by the docs/ops.md
input and attribute names. The CUDA kernel tests draw torch tensors on the GPU instead
(trt_plugins/kernel_cases.py).
"""
from __future__ import annotations

import numpy as np

from qmamba.export.layer_sizes import LAYER_SHAPES, LayerShape

# The real layer shapes, and the same group structures narrowed to a fraction of the width.
OP_SHAPES = {
    **LAYER_SHAPES,
    "130m-narrow": LayerShape(ngroups=1, nheads=8, headdim=16, d_state=32),
    "8b-narrow": LayerShape(ngroups=8, nheads=16, headdim=8, d_state=16, n_head_groups=2),
}


def _ends(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
    """Strictly increasing cumulative ends of ``parts`` uneven groups covering ``total``."""
    cuts = np.sort(rng.choice(np.arange(1, total), size=parts - 1, replace=False)) if parts > 1 else []
    return np.array([*cuts, total], dtype=np.int32)


def group_tensors(s: LayerShape, rng: np.random.Generator) -> dict[str, np.ndarray]:
    g, nhg, ndg = s.ngroups, s.n_head_groups, s.n_dim_groups
    hpg = s.nheads // g
    return {
        "x_out_scales": rng.uniform(0.004, 0.05, (g, nhg, ndg)).astype(np.float32),
        "B_out_scales": rng.uniform(0.01, 0.1, g).astype(np.float32),
        "C_out_scales": rng.uniform(0.02, 0.2, g).astype(np.float32),
        "x_head_group_range": np.stack([_ends(hpg, nhg, rng) for _ in range(g)]),
        "x_dim_group_range": np.stack([np.stack([_ends(s.headdim, ndg, rng) for _ in range(nhg)])
                                       for _ in range(g)]),
    }


def _sizes(s: LayerShape) -> dict[str, int]:
    return {"ngroups": s.ngroups, "nheads": s.nheads, "headdim": s.headdim, "d_state": s.d_state}


def _int8(rng, *shape) -> np.ndarray:
    return rng.integers(-128, 128, shape).astype(np.int8)


def conv_case(s: LayerShape, batch: int, seqlen: int, with_state: bool, seed: int = 0):
    """(activations, params, attributes) of QuantConv1dSiLU."""
    rng = np.random.default_rng(seed)
    acts = {"xBC": _int8(rng, batch, seqlen, s.conv_dim)}
    if with_state:
        acts["conv_state"] = _int8(rng, batch, s.d_conv - 1, s.conv_dim)
    params = {"weight": _int8(rng, s.conv_dim, s.d_conv), "bias": _int8(rng, s.conv_dim),
              **group_tensors(s, rng)}
    # Input and weight scales such that pre-SiLU values span a few units (as in real layers).
    attrs = {}
    for seg in ("x", "B", "C"):
        attrs[f"{seg}_scale"] = float(np.float32(rng.uniform(0.03, 0.2)))
        attrs[f"w{seg}_scale"] = float(np.float32(rng.uniform(0.002, 0.01)))
        attrs[f"b{seg}_scale"] = float(np.float32(rng.uniform(0.001, 0.01)))
    return acts, params, {**attrs, **_sizes(s)}


def ssd_case(s: LayerShape, batch: int, seqlen: int, with_state: bool, seed: int = 0,
             chunk_size: int = 128):
    """(activations, params, attributes) of QuantSSD."""
    rng = np.random.default_rng(seed)
    h, g, n = s.nheads, s.ngroups, s.d_state
    acts = {"x": _int8(rng, batch, seqlen, s.d_ssm), "dt": _int8(rng, batch, seqlen, h),
            "B": _int8(rng, batch, seqlen, g * n), "C": _int8(rng, batch, seqlen, g * n)}
    if with_state:
        acts["ssm_state"] = _int8(rng, batch, h, s.headdim, n)
    groups = group_tensors(s, rng)
    params = {"A_log": np.log(rng.uniform(1.0, 16.0, h)).astype(np.float32),
              "D": rng.uniform(0.5, 1.5, h).astype(np.float32),
              "dt_bias": np.log(np.expm1(rng.uniform(0.001, 0.1, h))).astype(np.float32),
              **groups,
              "ssm_state_scale": rng.uniform(0.002, 0.02, (g, s.n_head_groups, s.n_dim_groups, n))
              .astype(np.float32)}
    attrs = {"dt_scale": float(np.float32(rng.uniform(0.01, 0.03))), **_sizes(s),
             "chunk_size": chunk_size}
    return acts, params, attrs
