"""ctypes binding of the engines' own kernels in libqmamba_kernels, for torch CUDA tensors.

``w8a8_linear`` (QmambaW8A8Linear, ``runtime/w8a8_linear.py``), ``decode_mixer`` (QmambaDecodeMixer,
``runtime/decode_mixer.py``), ``gated_norm`` (QmambaGatedNorm, ``runtime/gated_norm.py``) and ``in_proj_conv``
(QmambaInProjConv, ``runtime/in_proj_conv.py``) take the arguments of their reference twins and return the same
outputs; the ``*_launcher`` forms check once and return a launch for graph capture.
The library, its structures and error handling are ``qmamba.export.kernels``'.
"""
from __future__ import annotations

import ctypes
import math

import torch

from qmamba.export.kernels import (ConvFloatInput, ConvParams, ConvTensors, GatedNormParams, GatedNormTensors,
                                   LinearParams, LinearTensors, MixerParams, MixerTensors, conv_params, launcher,
                                   on_cuda, ptr)
from qmamba.export.ops import check_conv_call
from qmamba.export.validate import check_tensor
from .decode_mixer import CONV_SCALES, OP_NAME as MIXER_OP, check_mixer_inputs
from .gated_norm import OP_NAME as NORM_OP, check_gated_norm_inputs
from .in_proj_conv import OP_NAME as IN_PROJ_CONV_OP, check_in_proj_conv_inputs
from .w8a8_linear import OP_NAME as LINEAR_OP, check_linear_inputs


def w8a8_linear(x, weight, out_scale, input_scale, norm_weight=None, eps: float = 1e-5, residual=None,
                out=None, norm_group: int = 0, rotation=None):
    """QmambaW8A8Linear on the GPU (``runtime/w8a8_linear.py``); same arguments and output as
    ``w8a8_linear_ref``. ``out``: optional preallocated y (it may be ``residual``: an in-place add)."""
    launch, y = w8a8_linear_launcher(x, weight, out_scale, input_scale, norm_weight, eps, residual, out, norm_group,
                                     rotation)
    launch()
    return y


def w8a8_linear_launcher(x, weight, out_scale, input_scale, norm_weight=None, eps: float = 1e-5, residual=None,
                         out=None, norm_group: int = 0, rotation=None):
    """(launch, y): the arguments of ``w8a8_linear`` checked once (checks read the GPU: not allowed while a
    CUDA graph captures), and a no-argument launch on the current stream, e.g. for graph capture."""
    k, n = check_linear_inputs(x, weight, out_scale, input_scale, norm_weight, residual, norm_group, rotation)
    f0, f1, first = rotation if rotation is not None else (1, 1, None)
    first = first.contiguous() if f0 > 1 else None
    dev = on_cuda(LINEAR_OP, x=x, weight=weight, out_scale=out_scale, input_scale=input_scale,
                   norm_weight=norm_weight, residual=residual, rotation_first=first)
    if out is None:
        y = torch.empty(x.shape[0], x.shape[1], n, dtype=torch.float32, device=dev)
    else:
        y = check_tensor(LINEAR_OP, "out y", out, torch.float32, (x.shape[0], x.shape[1], n))
        on_cuda(LINEAR_OP, x=x, out_y=y)
    rows = x.shape[0] * x.shape[1]
    workspace = torch.empty(rows, k, dtype=torch.float32, device=dev) if rotation is not None else None
    params = LinearParams(in_features=k, out_features=n, norm=int(norm_weight is not None), eps=float(eps),
                          norm_group=int(norm_group), rotation_first=f0, rotation_last=f1)
    tensors = LinearTensors(ptr(x), ptr(weight), ptr(out_scale), ptr(input_scale), ptr(norm_weight),
                            ptr(residual), ptr(y), ptr(first), ptr(workspace))
    return launcher(dev, lambda lib, stream: lib.qmamba_w8a8_linear(ctypes.byref(params), ctypes.byref(tensors),
                                                                     rows, stream),
                     (x, weight, out_scale, input_scale, norm_weight, residual, y, first, workspace)), y


def decode_mixer(zxbcdt, conv_weight, conv_bias, x_out_scales, B_out_scales, C_out_scales,
                 x_head_group_range, x_dim_group_range, A_log, D, dt_bias, ssm_state_scale,
                 conv_state, ssm_state, **fields):
    """QmambaDecodeMixer on the GPU (``runtime/decode_mixer.py``); same arguments and outputs as
    ``decode_mixer_ref`` (int8 states and conv weight/bias in the ops' layouts)."""
    launch, outputs = decode_mixer_launcher(zxbcdt, conv_weight, conv_bias, x_out_scales, B_out_scales,
                                            C_out_scales, x_head_group_range, x_dim_group_range, A_log, D, dt_bias,
                                            ssm_state_scale, conv_state, ssm_state, **fields)
    launch()
    return outputs


def decode_mixer_launcher(zxbcdt, conv_weight, conv_bias, x_out_scales, B_out_scales, C_out_scales,
                          x_head_group_range, x_dim_group_range, A_log, D, dt_bias, ssm_state_scale,
                          conv_state, ssm_state, **fields):
    """(launch, (gated, conv_state_out, ssm_state_out)): ``decode_mixer``'s arguments checked once, and a
    no-argument launch on the current stream (see w8a8_linear_launcher)."""
    bt, d_ssm, gn, K = check_mixer_inputs(zxbcdt, conv_weight, conv_bias, x_out_scales, B_out_scales, C_out_scales,
                                          x_head_group_range, x_dim_group_range, A_log, D, dt_bias,
                                          ssm_state_scale, conv_state, ssm_state, fields)
    g, h, p, n = (int(fields[k]) for k in ("ngroups", "nheads", "headdim", "d_state"))
    nhg, ndg = x_out_scales.shape[1], x_out_scales.shape[2]
    dev = on_cuda(MIXER_OP, zxbcdt=zxbcdt, conv_weight=conv_weight, conv_bias=conv_bias,
                   x_out_scales=x_out_scales, B_out_scales=B_out_scales, C_out_scales=C_out_scales,
                   x_head_group_range=x_head_group_range, x_dim_group_range=x_dim_group_range, A_log=A_log, D=D,
                   dt_bias=dt_bias, ssm_state_scale=ssm_state_scale, conv_state=conv_state, ssm_state=ssm_state)
    gated = torch.empty(bt, 1, d_ssm, dtype=torch.float32, device=dev)
    conv_out, ssm_out = torch.empty_like(conv_state), torch.empty_like(ssm_state)
    conv = ConvParams(**{k: float(fields[k]) for k in CONV_SCALES}, ngroups=g, nheads=h, headdim=p, d_state=n,
                      d_conv=K, n_head_groups=nhg, n_dim_groups=ndg)
    params = MixerParams(conv=conv, z_scale=float(fields["z_scale"]), dt_scale=float(fields["dt_scale"]),
                         dt_min=float(fields.get("dt_min", 0.0)), dt_max=float(fields.get("dt_max", math.inf)))
    held = (zxbcdt, conv_weight, conv_bias, x_out_scales, B_out_scales, C_out_scales, x_head_group_range,
            x_dim_group_range, A_log, D, dt_bias, ssm_state_scale, conv_state, ssm_state, gated, conv_out, ssm_out)
    tensors = MixerTensors(*(ptr(t) for t in held))
    return launcher(dev, lambda lib, stream: lib.qmamba_decode_mixer(ctypes.byref(params), ctypes.byref(tensors),
                                                                      bt, stream), held), (gated, conv_out, ssm_out)


def gated_norm(y, z, weight, *, group_size: int, eps: float, z_scale: float = 0.0, rotation=None,
               z_col_scale=None, z_row_width: int = 0, out=None):
    """QmambaGatedNorm on the GPU (``runtime/gated_norm.py``); same arguments as ``gated_norm_ref`` (``z`` None:
    no gate), fp32 out ``[..., K]`` like y. ``out``: optional preallocated output (it must not overlap y, z or
    z_col_scale)."""
    launch, o = gated_norm_launcher(y, z, weight, group_size=group_size, eps=eps, z_scale=z_scale,
                                    rotation=rotation, z_col_scale=z_col_scale, z_row_width=z_row_width, out=out)
    launch()
    return o


def gated_norm_launcher(y, z, weight, *, group_size: int, eps: float, z_scale: float = 0.0, rotation=None,
                        z_col_scale=None, z_row_width: int = 0, out=None):
    """(launch, out): ``gated_norm``'s arguments checked once, and a no-argument launch on the current stream
    (see w8a8_linear_launcher)."""
    k, f0, f1, first = check_gated_norm_inputs(y, z, weight, group_size, eps, z_scale, rotation, z_col_scale,
                                               z_row_width)
    first = first.contiguous() if first is not None else None
    z_col_scale = z_col_scale.contiguous() if z is not None and z_col_scale is not None else None
    dev = on_cuda(NORM_OP, y=y, z=z, z_col_scale=z_col_scale, weight=weight, rotation_first=first)
    if out is None:
        o = torch.empty_like(y, memory_format=torch.contiguous_format)
    else:
        o = check_tensor(NORM_OP, "out", out, torch.float32, tuple(y.shape))
        on_cuda(NORM_OP, y=y, out=o)
    params = GatedNormParams(channels=k, group_size=group_size, eps=float(eps), z_scale=float(z_scale),
                             rotation_first=f0, rotation_last=f1, z_row_width=z_row_width if z is not None else 0)
    tensors = GatedNormTensors(ptr(y), ptr(z), ptr(z_col_scale), ptr(weight), ptr(first), ptr(o))
    rows = y.numel() // k
    held = (y, z, z_col_scale, weight, first, o)
    return launcher(dev, lambda lib, stream: lib.qmamba_gated_norm(ctypes.byref(params), ctypes.byref(tensors),
                                                                    rows, stream), held), o


def in_proj_conv(zxbcdt, weight, bias, x_out_scales, B_out_scales, C_out_scales, x_head_group_range,
                 x_dim_group_range, col_scale=None, *, xbc_offset: int, **attributes):
    """QmambaInProjConv on the GPU (``runtime/in_proj_conv.py``); same arguments and outputs as
    ``in_proj_conv_ref``: (x, B, C, conv_state_out), int8."""
    check_tensor(IN_PROJ_CONV_OP, "zxbcdt", zxbcdt, torch.float32, (None, None, None))
    bt, L, width = zxbcdt.shape
    # QuantConv1dSiLU's own checks, on an int8 stand-in of xBC's shape (only its shape is read).
    d_ssm, gn = attributes["nheads"] * attributes["headdim"], attributes["ngroups"] * attributes["d_state"]
    shape_only = torch.empty(bt, L, max(d_ssm + 2 * gn, 0), dtype=torch.int8, device="meta")
    call = check_conv_call(shape_only, weight, bias, x_out_scales, B_out_scales, C_out_scales, x_head_group_range,
                           x_dim_group_range, None, **attributes)
    _, _, K, d_ssm, gn, conv_dim = call.sizes
    check_in_proj_conv_inputs(zxbcdt, col_scale, xbc_offset, conv_dim)
    dev = on_cuda(IN_PROJ_CONV_OP, zxbcdt=zxbcdt, col_scale=col_scale, weight=weight, bias=bias,
                  x_out_scales=x_out_scales, B_out_scales=B_out_scales, C_out_scales=C_out_scales,
                  x_head_group_range=x_head_group_range, x_dim_group_range=x_dim_group_range)
    x = torch.empty(bt, L, d_ssm, dtype=torch.int8, device=dev)
    B = torch.empty(bt, L, gn, dtype=torch.int8, device=dev)
    C = torch.empty(bt, L, gn, dtype=torch.int8, device=dev)
    state_out = torch.empty(bt, K - 1, conv_dim, dtype=torch.int8, device=dev)
    params = conv_params(call, K, x_out_scales)
    source = ConvFloatInput(ptr(zxbcdt), ptr(col_scale), width, xbc_offset)
    tensors = ConvTensors(None, ptr(weight), ptr(bias), ptr(x_out_scales), ptr(B_out_scales), ptr(C_out_scales),
                          ptr(x_head_group_range), ptr(x_dim_group_range), None, ptr(x), ptr(B), ptr(C),
                          ptr(state_out))
    held = (zxbcdt, col_scale, weight, bias, x_out_scales, B_out_scales, C_out_scales, x_head_group_range,
            x_dim_group_range, x, B, C, state_out)
    launch = launcher(dev, lambda lib, stream: lib.qmamba_quant_conv1d_silu_prefill_from_float(
        ctypes.byref(params), ctypes.byref(source), ctypes.byref(tensors), bt, L, stream), held)
    launch()
    return x, B, C, state_out
