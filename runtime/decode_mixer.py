"""QmambaDecodeMixer: one decode step of a Mamba2 mixer as TensorRT runs it (docs/tensorrt.md).

Not an op of the exported ONNX graphs: ``qmamba build`` puts it in the decode graph in place of what
lies between in_proj and the gated norm's RMS (``runtime/decode_fusion.py``, ``fuse_decode_mixers``): the split
of in_proj's output into z | x | B | C | dt and their QuantizeLinear, the Concat of xBC, QuantConv1dSiLU,
QuantSSD and the gate ``y * (z' * sigmoid(z'))`` with ``z' = DequantizeLinear(Q(z))``. On TensorRT 8.6
those were some forty small kernels per layer; this is one (``trt_plugins/kernels/decodeMixerKernel.cu``).

``decode_mixer_ref`` is its reference twin, built from the two ops' own references
(``qmamba.export.ops``), so it is docs/ops.md's math and nothing else. In the graph and the plugin the
int8 tensors travel as int32 words of the same bytes (``int8_words``): the conv weight and bias, and the
states, which the decode engine takes and returns as int32 ``[.., last / 4]`` (TensorRT 8.6 builds a
plugin with int8 network inputs or outputs only through Q/DQ pairs, one more kernel each).
"""
from __future__ import annotations

import math

import torch

from ..export import ops
from ..export.validate import QMambaInputError, check_scales, check_tensor

OP_NAME = "QmambaDecodeMixer"
CONV_SCALES = ("x_scale", "wx_scale", "bx_scale", "B_scale", "wB_scale", "bB_scale",
               "C_scale", "wC_scale", "bC_scale")
SIZES = ("ngroups", "nheads", "headdim", "d_state", "d_conv")
# (name, type, default) in the order of the plugin's field table (decodeMixerCore.cpp,
# trt_plugins/decodeMixerPlugin/README.md); None: required.
FIELDS = (*((k, "float", None) for k in CONV_SCALES), *((k, "int", None) for k in SIZES),
          ("z_scale", "float", None), ("dt_scale", "float", None), ("dt_min", "float", 0.0),
          ("dt_max", "float", math.inf))


def int8_words(t: torch.Tensor) -> torch.Tensor:
    """int8 ``[..., m]`` with m % 4 == 0 -> int32 ``[..., m / 4]``, the same bytes (little-endian words)."""
    check_tensor(OP_NAME, "int8 tensor", t, torch.int8)
    if t.dim() == 0 or t.shape[-1] % 4:
        raise QMambaInputError(f"{OP_NAME}: the last dimension must be a multiple of 4 to travel as int32 words, "
                               f"got shape {list(t.shape)}")
    return t.contiguous().view(torch.int32)


def flat_int8_words(t: torch.Tensor) -> torch.Tensor:
    """Any int8 tensor -> int32 ``[ceil(numel / 4)]`` of its bytes in order, zero-padded (the conv weight
    and bias as constants of the plugin)."""
    check_tensor(OP_NAME, "int8 tensor", t, torch.int8)
    flat = t.contiguous().reshape(-1)
    padded = torch.zeros(-(-flat.numel() // 4) * 4, dtype=torch.int8, device=t.device)
    padded[:flat.numel()] = flat
    return padded.view(torch.int32)


def unflat_int8_words(words: torch.Tensor, shape) -> torch.Tensor:
    """The inverse of ``flat_int8_words``: int8 of ``shape``."""
    check_tensor(OP_NAME, "words", words, torch.int32)
    n = math.prod(shape)
    if words.dim() != 1 or words.numel() != -(-n // 4):
        raise QMambaInputError(f"{OP_NAME}: {-(-n // 4)} int32 words hold an int8 {list(shape)}, got {list(words.shape)}")
    return words.contiguous().view(torch.int8)[:n].reshape(shape)


def sizes(zxbcdt: torch.Tensor, ngroups: int, nheads: int, headdim: int, d_state: int) -> tuple[int, int, int]:
    """(batch, d_ssm, g * n) after checking in_proj's output ``[batch, 1, 2 d_ssm + 2 g n + h]``."""
    d_ssm, gn = nheads * headdim, ngroups * d_state
    check_tensor(OP_NAME, "zxbcdt", zxbcdt, torch.float32, (None, 1, 2 * d_ssm + 2 * gn + nheads))
    return zxbcdt.shape[0], d_ssm, gn


def check_mixer_inputs(zxbcdt, conv_weight, conv_bias, x_out_scales, B_out_scales, C_out_scales,
                       x_head_group_range, x_dim_group_range, A_log, D, dt_bias, ssm_state_scale,
                       conv_state, ssm_state, fields: dict) -> tuple[int, int, int, int]:
    """QmambaDecodeMixer's input checks, shared by the twin and the CUDA binding
    (``qmamba.runtime.kernels.decode_mixer``) so that both refuse a bad call with one message: the
    fields, in_proj's output, and everything QuantConv1dSiLU's and QuantSSD's own checks ask of their
    inputs (``ops.check_conv_inputs``, ``ops.check_ssd_inputs``; the int8 segments they would receive
    stand in as meta tensors of their shapes). Returns (batch, d_ssm, g * n, d_conv)."""
    missing = [k for k, _, default in FIELDS if default is None and k != "d_conv" and fields.get(k) is None]
    if missing:
        raise QMambaInputError(f"{OP_NAME}: missing fields {missing}")
    g, h, p, n = (int(fields[k]) for k in ("ngroups", "nheads", "headdim", "d_state"))
    bt, d_ssm, gn = sizes(zxbcdt, g, h, p, n)
    d_conv = fields.get("d_conv")
    if d_conv is not None and (not isinstance(conv_weight, torch.Tensor) or conv_weight.dim() != 2
                               or conv_weight.shape[1] != d_conv):
        shape = list(conv_weight.shape) if isinstance(conv_weight, torch.Tensor) else conv_weight
        raise QMambaInputError(f"{OP_NAME}: conv_weight must be [conv_dim, d_conv = {d_conv}], got {shape}")
    check_scales(OP_NAME, z_scale=fields["z_scale"], dt_scale=fields["dt_scale"])
    segment = lambda width: torch.empty(bt, 1, width, dtype=torch.int8, device="meta")  # noqa: E731
    shape = dict(ngroups=g, nheads=h, headdim=p, d_state=n)
    _, _, K = ops.check_conv_inputs(segment(d_ssm + 2 * gn), conv_weight, conv_bias, x_out_scales, B_out_scales,
                                    C_out_scales, x_head_group_range, x_dim_group_range, conv_state,
                                    {k: fields[k] for k in CONV_SCALES}, **shape)
    if conv_state is None or ssm_state is None:
        raise QMambaInputError(f"{OP_NAME}: conv_state and ssm_state are required (a decode step)")
    ops.check_ssd_inputs(segment(d_ssm), segment(h), segment(gn), segment(gn), A_log, D, dt_bias, x_out_scales,
                         B_out_scales, C_out_scales, x_head_group_range, x_dim_group_range, ssm_state_scale,
                         ssm_state, fields["dt_scale"], fields.get("dt_min", 0.0), fields.get("dt_max", math.inf),
                         **shape)
    return bt, d_ssm, gn, K


def decode_mixer_ref(zxbcdt, conv_weight, conv_bias, x_out_scales, B_out_scales, C_out_scales,
                     x_head_group_range, x_dim_group_range, A_log, D, dt_bias, ssm_state_scale,
                     conv_state, ssm_state, *, x_scale, wx_scale, bx_scale, B_scale, wB_scale, bB_scale,
                     C_scale, wC_scale, bC_scale, ngroups, nheads, headdim, d_state, z_scale, dt_scale,
                     dt_min=0.0, dt_max=math.inf, d_conv=None):
    """(gated fp32 ``[batch, 1, d_ssm]``, conv_state_out, ssm_state_out int8) of one decode step:
    ``z, x, B, C, dt = Q(segment, scale)``; ``x, B, C, conv_state_out = QuantConv1dSiLU(xBC, conv_state)``;
    ``y, ssm_state_out = QuantSSD(x, dt, B, C, ssm_state)`` (y fp32); ``gated = y * (z' * sigmoid(z'))``
    with ``z' = float(Q(z)) * z_scale``. The conv's x_scale, B_scale and C_scale quantize the segments.
    ``d_conv`` (the plugin's field), when given, must be the conv weight's width."""
    conv = dict(x_scale=x_scale, wx_scale=wx_scale, bx_scale=bx_scale, B_scale=B_scale, wB_scale=wB_scale,
                bB_scale=bB_scale, C_scale=C_scale, wC_scale=wC_scale, bC_scale=bC_scale)
    shape = dict(ngroups=ngroups, nheads=nheads, headdim=headdim, d_state=d_state)
    _, d_ssm, gn, _ = check_mixer_inputs(
        zxbcdt, conv_weight, conv_bias, x_out_scales, B_out_scales, C_out_scales, x_head_group_range,
        x_dim_group_range, A_log, D, dt_bias, ssm_state_scale, conv_state, ssm_state,
        dict(conv, **shape, z_scale=z_scale, dt_scale=dt_scale, dt_min=dt_min, dt_max=dt_max, d_conv=d_conv))
    f32 = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731 (fp32 scales, as the graph holds them)
    z, x, B, C, dt = torch.split(zxbcdt, [d_ssm, d_ssm, gn, gn, nheads], dim=-1)
    xBC = torch.cat([ops.quantize(x, f32(x_scale)), ops.quantize(B, f32(B_scale)), ops.quantize(C, f32(C_scale))], -1)
    xq, Bq, Cq, conv_out = ops.quant_conv1d_silu_ref(xBC, conv_weight, conv_bias, x_out_scales, B_out_scales,
                                                     C_out_scales, x_head_group_range, x_dim_group_range,
                                                     conv_state, **conv, **shape)
    y, ssm_out = ops.quant_ssd_ref(xq, ops.quantize(dt, f32(dt_scale)), Bq, Cq, A_log, D, dt_bias, x_out_scales,
                                   B_out_scales, C_out_scales, x_head_group_range, x_dim_group_range,
                                   ssm_state_scale, ssm_state, dt_scale=dt_scale, dt_min=dt_min, dt_max=dt_max,
                                   **shape)
    zf = ops.quantize(z, f32(z_scale)).float() * f32(z_scale)
    return y * (zf * torch.sigmoid(zf)), conv_out, ssm_out
