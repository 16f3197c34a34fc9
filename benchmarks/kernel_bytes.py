"""Bytes a kernel must move per call: the numerator of the fraction-of-bound column of
bench_kernels.py (bytes that must move / copy bandwidth = the fastest the call could run).

Each tensor the call must read or write is counted once at its storage width; intermediates a
kernel keeps on chip or spills are not (they are the kernel's cost, not the bound's). The SSD's
per-head parameters (A, D, dt_bias, scales: a few KiB) are left out; the conv's weight and bias
are counted.
"""
from __future__ import annotations

INT8, FP16, FP32 = 1, 2, 4


def quant_conv_bytes(bt: int, L: int, conv_dim: int, d_conv: int) -> int:
    """QuantConv1dSiLU, prefill or decode step: int8 xBC in, int8 x|B|C out, the int8 conv state
    (K-1 rows) in and out, int8 weight [conv_dim, K] and bias."""
    tokens = 2 * bt * L * conv_dim * INT8
    state = 2 * bt * (d_conv - 1) * conv_dim * INT8
    return tokens + state + conv_dim * (d_conv + 1) * INT8


def in_proj_conv_bytes(bt: int, L: int, conv_dim: int, d_conv: int) -> int:
    """QmambaInProjConv (the conv reading in_proj's float output): fp32 xBC columns in, int8 x|B|C out, the int8
    conv state out (a prefill from zeros), the int8 weight and bias and the fp32 column scales."""
    tokens = bt * L * conv_dim * (FP32 + INT8)
    return tokens + bt * (d_conv - 1) * conv_dim * INT8 + conv_dim * (d_conv + 1) * INT8 + conv_dim * FP32


def quant_ssd_bytes(bt: int, L: int, nheads: int, headdim: int, d_state: int, ngroups: int,
                    decode: bool) -> int:
    """QuantSSD: int8 x, dt, B, C in, fp16 y out; the int8 state out, and in as well for a decode
    step (a prefill starts from zeros)."""
    d_ssm = nheads * headdim
    tokens = bt * L * (d_ssm + nheads + 2 * ngroups * d_state) * INT8 + bt * L * d_ssm * FP16
    state = bt * nheads * headdim * d_state * INT8
    return tokens + (2 * state if decode else state)


def fp16_conv_bytes(bt: int, L: int, conv_dim: int, d_conv: int, decode: bool) -> int:
    """The fp16 conv + SiLU (causal_conv1d, or PyTorch's conv1d): fp16 xBC in and out, fp16 weight
    and bias; a decode step also reads and writes the K-1 state columns it needs (a prefill from
    zeros has no state to read, and leaves saving it to a copy outside the kernel)."""
    tokens = 2 * bt * L * conv_dim * FP16
    state = 2 * bt * (d_conv - 1) * conv_dim * FP16 if decode else 0
    return tokens + state + conv_dim * (d_conv + 1) * FP16


def fp16_ssd_bytes(bt: int, L: int, nheads: int, headdim: int, d_state: int, ngroups: int,
                   decode: bool) -> int:
    """mamba_ssm's SSD in fp16: x, dt, B, C in, y out, all fp16 (dt one value per head, also for
    the decode step's head-dim broadcast). Prefill (``mamba_chunk_scan_combined`` with
    ``return_final_states``): the fp32 final state out. Decode (``selective_state_update``): the
    fp16 state read and written in place."""
    d_ssm = nheads * headdim
    tokens = bt * L * (2 * d_ssm + nheads + 2 * ngroups * d_state) * FP16
    state = bt * nheads * headdim * d_state
    return tokens + (2 * state * FP16 if decode else state * FP32)
