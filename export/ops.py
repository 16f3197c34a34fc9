"""PyTorch reference twins of qmamba's custom ops, written straight from docs/ops.md.

``quant_conv1d_silu_ref`` and ``quant_ssd_ref`` are the executable spec: plain loops over the
definition, fp32, no tricks. ``quant_ssd_chunked`` is the fast form the model uses (same signature
plus ``chunk_size``); its tests compare it with ``quant_ssd_ref``. The CUDA kernels, the ONNX
function bodies and the TensorRT plugins are all checked against these functions.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .validate import QMambaInputError, check_group_ranges, check_scales, check_tensor

INT8_MIN, INT8_MAX = -128, 127


def quantize(v: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """Q(v, s) of docs/ops.md: fp32 true division, round half to even, saturate, int8."""
    q = torch.round(v.float() / scale)  # torch.round rounds half to even
    return q.clamp_(INT8_MIN, INT8_MAX).to(torch.int8)


def head_dim_groups(x_head_group_range: torch.Tensor, x_dim_group_range: torch.Tensor,
                    nheads: int, headdim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per head: SSD group and head group; per (head, dim): dim group. The lookup of docs/ops.md."""
    g = x_head_group_range.shape[0]
    hpg = nheads // g
    heads = torch.arange(nheads)
    sg = heads // hpg
    h_loc = heads % hpg
    hr = x_head_group_range.long().cpu()
    dr = x_dim_group_range.long().cpu()
    hg = (hr[sg] <= h_loc[:, None]).sum(-1)                        # [h]
    dims = torch.arange(headdim)
    dg = (dr[sg, hg][:, None, :] <= dims[None, :, None]).sum(-1)   # [h, p]
    return sg, hg, dg


def x_channel_scales(x_out_scales, x_head_group_range, x_dim_group_range, nheads, headdim):
    """s_x(c) for every x channel, shape [nheads * headdim] (fp32)."""
    sg, hg, dg = head_dim_groups(x_head_group_range, x_dim_group_range, nheads, headdim)
    dev = x_out_scales.device
    s = x_out_scales.float()[sg[:, None].to(dev), hg[:, None].to(dev), dg.to(dev)]
    return s.reshape(nheads * headdim)


def state_scales(ssm_state_scale, x_head_group_range, x_dim_group_range, nheads, headdim):
    """The scale of every state element, shape [nheads, headdim, d_state] (fp32)."""
    sg, hg, dg = head_dim_groups(x_head_group_range, x_dim_group_range, nheads, headdim)
    dev = ssm_state_scale.device
    return ssm_state_scale.float()[sg[:, None].to(dev), hg[:, None].to(dev), dg.to(dev)]


def _conv_segment_scales(conv_dim, d_ssm, gn, **a):
    """Per channel (s_in * s_w, s_b) as fp32 tensors of [conv_dim]."""
    acc_scale = torch.empty(conv_dim, dtype=torch.float32)
    bias_scale = torch.empty(conv_dim, dtype=torch.float32)
    for seg, lo, hi in (("x", 0, d_ssm), ("B", d_ssm, d_ssm + gn), ("C", d_ssm + gn, conv_dim)):
        # fp32(s_in * s_w): the product is rounded to fp32 once, as every implementation does.
        acc_scale[lo:hi] = torch.tensor(a[f"{seg}_scale"], dtype=torch.float32) * torch.tensor(
            a[f"w{seg}_scale"], dtype=torch.float32)
        bias_scale[lo:hi] = a[f"b{seg}_scale"]
    return acc_scale, bias_scale


def check_conv_inputs(xBC, weight, bias, x_out_scales, B_out_scales, C_out_scales,
                      x_head_group_range, x_dim_group_range, conv_state, scalars: dict,
                      ngroups, nheads, headdim, d_state) -> tuple[int, int, int]:
    """QuantConv1dSiLU's input checks (docs/ops.md), shared by ``quant_conv1d_silu_ref`` and the
    CUDA binding (``qmamba.export.kernels``) so that both refuse a bad call with one message.
    ``scalars``: the nine scale attributes by name; ``conv_state`` may be None. Returns (bt, L, K)."""
    op = "QuantConv1dSiLU"
    check_scales(op, **scalars)
    conv_dim = nheads * headdim + 2 * ngroups * d_state
    check_tensor(op, "xBC", xBC, torch.int8, (None, None, conv_dim))
    bt, L, _ = xBC.shape
    check_tensor(op, "weight", weight, torch.int8, (conv_dim, None))
    K = weight.shape[1]
    check_tensor(op, "bias", bias, torch.int8, (conv_dim,))
    check_group_ranges(op, x_out_scales, B_out_scales, C_out_scales, x_head_group_range,
                       x_dim_group_range, ngroups, nheads, headdim)
    if conv_state is not None:
        check_tensor(op, "conv_state", conv_state, torch.int8, (bt, K - 1, conv_dim))
    return bt, L, K



class ConvCall(NamedTuple):
    """A QuantConv1dSiLU call that passed ``check_conv_inputs``: its nine scale attributes by name,
    its shape attributes by name, and ``sizes`` = (bt, L, K, d_ssm, gn, conv_dim)."""
    scalars: dict
    shape: dict
    sizes: tuple[int, int, int, int, int, int]


def check_conv_call(xBC, weight, bias, x_out_scales, B_out_scales, C_out_scales,
                    x_head_group_range, x_dim_group_range, conv_state=None, *,
                    x_scale, wx_scale, bx_scale, B_scale, wB_scale, bB_scale,
                    C_scale, wC_scale, bC_scale, ngroups, nheads, headdim, d_state) -> ConvCall:
    """Checks a QuantConv1dSiLU call made with ``quant_conv1d_silu_ref``'s arguments; the reference and
    the CUDA binding (``qmamba.export.kernels.quant_conv1d_silu``) both start here."""
    scalars = dict(x_scale=x_scale, wx_scale=wx_scale, bx_scale=bx_scale, B_scale=B_scale,
                   wB_scale=wB_scale, bB_scale=bB_scale, C_scale=C_scale, wC_scale=wC_scale,
                   bC_scale=bC_scale)
    shape = dict(ngroups=ngroups, nheads=nheads, headdim=headdim, d_state=d_state)
    bt, L, K = check_conv_inputs(xBC, weight, bias, x_out_scales, B_out_scales, C_out_scales,
                                 x_head_group_range, x_dim_group_range, conv_state, scalars, **shape)
    d_ssm, gn = nheads * headdim, ngroups * d_state
    return ConvCall(scalars, shape, (bt, L, K, d_ssm, gn, d_ssm + 2 * gn))

def quant_conv1d_silu_ref(xBC, weight, bias, x_out_scales, B_out_scales, C_out_scales,
                          x_head_group_range, x_dim_group_range, conv_state=None, *,
                          x_scale, wx_scale, bx_scale, B_scale, wB_scale, bB_scale,
                          C_scale, wC_scale, bC_scale, ngroups, nheads, headdim, d_state):
    """QuantConv1dSiLU of docs/ops.md. Returns (x, B, C, conv_state_out), all int8."""
    call = check_conv_call(xBC, weight, bias, x_out_scales, B_out_scales, C_out_scales, x_head_group_range,
                           x_dim_group_range, conv_state, x_scale=x_scale, wx_scale=wx_scale,
                           bx_scale=bx_scale, B_scale=B_scale, wB_scale=wB_scale, bB_scale=bB_scale,
                           C_scale=C_scale, wC_scale=wC_scale, bC_scale=bC_scale, ngroups=ngroups,
                           nheads=nheads, headdim=headdim, d_state=d_state)
    scalars, (bt, L, K, d_ssm, gn, conv_dim) = call.scalars, call.sizes
    dev = xBC.device
    if conv_state is None:
        conv_state = torch.zeros(bt, K - 1, conv_dim, dtype=torch.int8, device=dev)

    u = torch.cat([conv_state, xBC], dim=1).to(torch.int32)          # [bt, K-1+L, conv_dim]
    acc = torch.zeros(bt, L, conv_dim, dtype=torch.int32, device=dev)
    for w in range(K):
        acc += weight[:, w].to(torch.int32) * u[:, w:w + L]
    acc_scale, bias_scale = _conv_segment_scales(conv_dim, d_ssm, gn, **scalars)
    v = acc.float() * acc_scale.to(dev) + bias.float() * bias_scale.to(dev)
    v = v * torch.sigmoid(v)

    s_out = torch.cat([
        x_channel_scales(x_out_scales, x_head_group_range, x_dim_group_range, nheads, headdim),
        B_out_scales.float().repeat_interleave(d_state),
        C_out_scales.float().repeat_interleave(d_state),
    ]).to(dev)
    q = quantize(v, s_out)
    state_out = u[:, L:].to(torch.int8).contiguous() if K > 1 else conv_state
    return (q[..., :d_ssm].contiguous(), q[..., d_ssm:d_ssm + gn].contiguous(),
            q[..., d_ssm + gn:].contiguous(), state_out)


def check_ssd_inputs(x, dt, B, C, A_log, D, dt_bias, x_out_scales, B_out_scales, C_out_scales,
                     x_head_group_range, x_dim_group_range, ssm_state_scale, ssm_state,
                     dt_scale, dt_min, dt_max, ngroups, nheads, headdim, d_state) -> tuple[int, int]:
    """QuantSSD's input checks (docs/ops.md), shared by the reference forms and the CUDA binding
    (``qmamba.export.kernels``) so that both refuse a bad call with one message.
    ``ssm_state`` may be None. Returns (bt, L)."""
    op = "QuantSSD"
    check_scales(op, dt_scale=dt_scale)
    if not (dt_min >= 0 and dt_max > dt_min) or math.isnan(dt_max):
        raise QMambaInputError(f"{op}: need 0 <= dt_min < dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    h, p, n, g = nheads, headdim, d_state, ngroups
    check_tensor(op, "x", x, torch.int8, (None, None, h * p))
    bt, L, _ = x.shape
    check_tensor(op, "dt", dt, torch.int8, (bt, L, h))
    check_tensor(op, "B", B, torch.int8, (bt, L, g * n))
    check_tensor(op, "C", C, torch.int8, (bt, L, g * n))
    for name, t in (("A_log", A_log), ("D", D), ("dt_bias", dt_bias)):
        check_tensor(op, name, t, torch.float32, (h,), finite=True)
    check_group_ranges(op, x_out_scales, B_out_scales, C_out_scales,
                       x_head_group_range, x_dim_group_range, ngroups, nheads, headdim)
    nhg, ndg = x_out_scales.shape[1], x_out_scales.shape[2]
    check_tensor(op, "ssm_state_scale", ssm_state_scale, torch.float32, (g, nhg, ndg, n),
                 finite=True, positive=True)
    if ssm_state is not None:
        check_tensor(op, "ssm_state", ssm_state, torch.int8, (bt, h, p, n))
    return bt, L


def _ssd_inputs(x, dt, B, C, A_log, D, dt_bias, x_out_scales, B_out_scales, C_out_scales,
                x_head_group_range, x_dim_group_range, ssm_state_scale, ssm_state,
                dt_scale, dt_min, dt_max, ngroups, nheads, headdim, d_state):
    """Validates QuantSSD's inputs and dequantizes them (docs/ops.md, QuantSSD, Computation)."""
    bt, L = check_ssd_inputs(x, dt, B, C, A_log, D, dt_bias, x_out_scales, B_out_scales,
                             C_out_scales, x_head_group_range, x_dim_group_range, ssm_state_scale,
                             ssm_state, dt_scale, dt_min, dt_max, ngroups, nheads, headdim, d_state)
    h, p, n, g = nheads, headdim, d_state, ngroups
    dev = x.device
    hpg = h // g
    xs = x_channel_scales(x_out_scales, x_head_group_range, x_dim_group_range, h, p).to(dev)
    xh = (x.float() * xs).view(bt, L, h, p)
    Bh = (B.float().view(bt, L, g, n) * B_out_scales.float().view(g, 1)).repeat_interleave(hpg, dim=2)
    Ch = (C.float().view(bt, L, g, n) * C_out_scales.float().view(g, 1)).repeat_interleave(hpg, dim=2)
    v = dt.float() * dt_scale + dt_bias.float()
    dtv = torch.where(v > 20.0, v, torch.log1p(torch.exp(v))).clamp(dt_min, dt_max)  # [bt, L, h]
    A = -torch.exp(A_log.float())
    sscale = state_scales(ssm_state_scale, x_head_group_range, x_dim_group_range, h, p).to(dev)
    if ssm_state is None:
        S0 = torch.zeros(bt, h, p, n, dtype=torch.float32, device=dev)
    else:
        S0 = ssm_state.float() * sscale
    return xh, Bh, Ch, dtv, A, D.float(), S0, sscale


def out_dtype_of(out_dtype) -> torch.dtype:
    """QuantSSD's y dtype from its ``out_dtype`` (an ONNX TensorProto code or a torch dtype)."""
    if out_dtype in (torch.float32, 1):
        return torch.float32
    if out_dtype in (torch.float16, 10):
        return torch.float16
    raise ValueError(f"QuantSSD: out_dtype must be 1 (float32) or 10 (float16), got {out_dtype!r}")


def quant_ssd_ref(x, dt, B, C, A_log, D, dt_bias, x_out_scales, B_out_scales, C_out_scales,
                  x_head_group_range, x_dim_group_range, ssm_state_scale, ssm_state=None, *,
                  dt_scale, dt_min=0.0, dt_max=math.inf, ngroups, nheads, headdim, d_state,
                  out_dtype=torch.float32, chunk_size=None):
    """QuantSSD of docs/ops.md, one step per token in fp32. Returns (y, ssm_state_out int8).

    ``chunk_size`` is accepted (and ignored) so that the reference and the chunked form share
    one signature.
    """
    ydt = out_dtype_of(out_dtype)
    xh, Bh, Ch, dtv, A, Dv, S, sscale = _ssd_inputs(
        x, dt, B, C, A_log, D, dt_bias, x_out_scales, B_out_scales, C_out_scales,
        x_head_group_range, x_dim_group_range, ssm_state_scale, ssm_state,
        dt_scale, dt_min, dt_max, ngroups, nheads, headdim, d_state)
    bt, L, h, p = xh.shape
    ys = []
    for t in range(L):
        dA = torch.exp(dtv[:, t] * A)                                             # [bt, h]
        dBx = (dtv[:, t, :, None] * xh[:, t])[..., None] * Bh[:, t, :, None, :]   # [bt, h, p, n]
        S = dA[:, :, None, None] * S + dBx
        y = (S * Ch[:, t, :, None, :]).sum(-1) + Dv[:, None] * xh[:, t]           # [bt, h, p]
        ys.append(y)
    y = torch.stack(ys, dim=1).reshape(bt, L, h * p) if L else xh.new_zeros(bt, 0, h * p)
    return y.to(ydt), quantize(S, sscale)


def _segsum(a: torch.Tensor) -> torch.Tensor:
    """exp-able segment sums: out[..., i, j] = sum_{k=j+1..i} a[..., k] for j <= i, -inf above."""
    T = a.shape[-1]
    cs = torch.cumsum(a, dim=-1)
    out = cs[..., :, None] - cs[..., None, :]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device))
    return out.masked_fill(~mask, -math.inf)


def quant_ssd_chunked(x, dt, B, C, A_log, D, dt_bias, x_out_scales, B_out_scales, C_out_scales,
                      x_head_group_range, x_dim_group_range, ssm_state_scale, ssm_state=None, *,
                      dt_scale, dt_min=0.0, dt_max=math.inf, ngroups, nheads, headdim, d_state,
                      out_dtype=torch.float32, chunk_size=128):
    """QuantSSD in the chunked (SSD) form: quadratic inside a chunk, recurrent between chunks.

    Same result as ``quant_ssd_ref`` up to fp32 summation order.
    """
    ydt = out_dtype_of(out_dtype)
    xh, Bh, Ch, dtv, A, Dv, S, sscale = _ssd_inputs(
        x, dt, B, C, A_log, D, dt_bias, x_out_scales, B_out_scales, C_out_scales,
        x_head_group_range, x_dim_group_range, ssm_state_scale, ssm_state,
        dt_scale, dt_min, dt_max, ngroups, nheads, headdim, d_state)
    if chunk_size < 1:
        raise ValueError(f"QuantSSD: chunk_size must be >= 1, got {chunk_size}")
    y, S, _ = ssd_chunked_fp32(xh, dtv, A, Bh, Ch, Dv, S, chunk_size)
    return y.to(ydt), quantize(S, sscale)


def ssd_chunked_fp32(xh, dtv, A, Bh, Ch, Dv, S, chunk_size):
    """The fp32 chunked SSD scan shared by ``quant_ssd_chunked`` and calibration.

    ``xh [bt, L, h, p]``, ``dtv [bt, L, h]`` (after softplus and clamp), ``A [h]`` (negative),
    ``Bh, Ch [bt, L, h, n]`` (already repeated per head), ``Dv [h]``, ``S [bt, h, p, n]`` the state
    entering the sequence. Returns ``(y [bt, L, h*p], final state, states)``, ``states`` listing
    the state after every chunk (the last one is the final state).
    """
    bt, L, h, p = xh.shape
    ys, states = [], []
    for c0 in range(0, L, chunk_size):
        sl = slice(c0, min(L, c0 + chunk_size))
        a = (dtv[:, sl] * A).permute(0, 2, 1)                     # [bt, h, T]
        xc, Bc, Cc = xh[:, sl], Bh[:, sl], Ch[:, sl]              # [bt, T, h, *]
        dtc = dtv[:, sl]                                          # [bt, T, h]
        a_cum = torch.cumsum(a, dim=-1)                           # [bt, h, T]
        decay = torch.exp(_segsum(a))                             # [bt, h, T, T]
        # y_intra[t] = sum_{s<=t} (C_t . B_s) decay[t, s] dt_s x_s
        cb = torch.einsum("bthn,bshn->bhts", Cc, Bc) * decay
        y = torch.einsum("bhts,bsh,bshp->bthp", cb, dtc, xc)
        # y from the state entering the chunk: C_t . (exp(a_cum[t]) S)
        y = y + torch.einsum("bthn,bhpn,bht->bthp", Cc, S, torch.exp(a_cum))
        y = y + Dv[None, None, :, None] * xc
        ys.append(y)
        # state leaving the chunk
        to_end = torch.exp(a_cum[..., -1:] - a_cum)              # [bt, h, T]
        S = S * torch.exp(a_cum[..., -1])[..., None, None] + torch.einsum(
            "bht,bth,bthp,bthn->bhpn", to_end, dtc, xc, Bc)
        states.append(S)
    y = torch.cat(ys, dim=1).reshape(bt, L, h * p) if L else xh.new_zeros(bt, 0, h * p)
    return y, S, states
