"""QmambaInProjConv: a prefill QuantConv1dSiLU that reads in_proj's float output (docs/tensorrt.md).

Not an op of the exported ONNX graphs: ``qmamba build --fuse-in-proj-split`` (``runtime/in_proj_conv_fusion.py``,
``fuse_in_proj_convs``) puts it in the prefill graph in place of what lies between in_proj's output and the conv:
the Split's x, B and C pieces, each piece's Mul by its slice of in_proj's output scale (``scale_after_split``'s, or
none where the scale went into the GEMM, ``--weight-channel-scales``), their QuantizeLinear and the Concat of xBC,
and the QuantConv1dSiLU itself. TensorRT 8.6 ran the first four as passes of their own over in_proj's output
(docs/tensorrt.md); the plugin's kernel quantizes each value as it reads it
(``qmamba_quant_conv1d_silu_prefill_from_float``, trt_plugins/kernels/quantConv1dSiLUKernel.cu).

``in_proj_conv_ref`` is its reference twin: the graph's pieces, products and QuantizeLinear in torch (IEEE products
and divisions), then ``quant_conv1d_silu_ref``.
"""
from __future__ import annotations

import torch

from ..export import ops
from ..export.validate import QMambaInputError, check_tensor
from .decode_mixer import CONV_SCALES

OP_NAME = "QmambaInProjConv"
SIZES = ("ngroups", "nheads", "headdim", "d_state")
# (name, type, default; None: required) in the order of the plugin's field table (inProjConvCore.cpp,
# trt_plugins/inProjConvPlugin/README.md): QuantConv1dSiLU's thirteen attributes, then where xBC lies.
FIELDS = (*((k, "float", None) for k in CONV_SCALES), *((k, "int", None) for k in SIZES),
          ("xbc_offset", "int", None), ("col_scale", "int", 0))


def check_in_proj_conv_inputs(zxbcdt, col_scale, xbc_offset: int, conv_dim: int) -> None:
    """in_proj's output ``[batch, seq, width]`` (fp32) holds xBC at columns ``[xbc_offset, xbc_offset + conv_dim)``;
    ``col_scale``, when given, is fp32 ``[conv_dim]``."""
    check_tensor(OP_NAME, "zxbcdt", zxbcdt, torch.float32, (None, None, None))
    if xbc_offset < 0 or xbc_offset + conv_dim > zxbcdt.shape[-1]:
        raise QMambaInputError(f"{OP_NAME}: xBC at columns {xbc_offset}..{xbc_offset + conv_dim} lies outside "
                               f"zxbcdt's {zxbcdt.shape[-1]} columns")
    if col_scale is not None:
        check_tensor(OP_NAME, "col_scale", col_scale, torch.float32, (conv_dim,), finite=True)


def quantized_xbc(zxbcdt, col_scale, *, xbc_offset: int, x_scale, B_scale, C_scale, ngroups, nheads, headdim,
                  d_state, **_) -> torch.Tensor:
    """int8 xBC as the prefill graph makes it from in_proj's output: each column times its output scale (one fp32
    product; none without ``col_scale``), then QuantizeLinear with its segment's scale (x, B or C)."""
    d_ssm, gn = nheads * headdim, ngroups * d_state
    conv_dim = d_ssm + 2 * gn
    check_in_proj_conv_inputs(zxbcdt, col_scale, xbc_offset, conv_dim)
    v = zxbcdt[..., xbc_offset:xbc_offset + conv_dim]
    if col_scale is not None:
        v = v * col_scale.to(v.device)
    scale = torch.cat([torch.full((d_ssm,), float(x_scale)), torch.full((gn,), float(B_scale)),
                       torch.full((gn,), float(C_scale))]).to(v.device)
    return ops.quantize(v, scale)


def in_proj_conv_ref(zxbcdt, weight, bias, x_out_scales, B_out_scales, C_out_scales, x_head_group_range,
                     x_dim_group_range, col_scale=None, *, xbc_offset: int, **attributes):
    """QmambaInProjConv: ``quant_conv1d_silu_ref`` of ``quantized_xbc``; ``attributes`` are QuantConv1dSiLU's
    thirteen. Returns (x, B, C, conv_state_out), all int8."""
    xbc = quantized_xbc(zxbcdt, col_scale, xbc_offset=xbc_offset, **attributes)
    return ops.quant_conv1d_silu_ref(xbc, weight, bias, x_out_scales, B_out_scales, C_out_scales, x_head_group_range,
                                     x_dim_group_range, None, **attributes)
