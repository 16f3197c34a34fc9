"""The fp16 peers of the qmamba kernels, for bench_kernels.py: mamba_ssm's own Triton kernels
(``mamba_chunk_scan_combined`` for the SSD prefill, ``selective_state_update`` for the decode step)
and causal_conv1d's conv + SiLU where that package is installed, called as mamba_ssm's Mamba2
calls them, on the benchmark's int8 inputs dequantized to fp16.

mamba_ssm's package ``__init__`` imports its CUDA extension (``selective_scan_cuda``); a wheel built
with ``MAMBA_SKIP_CUDA_BUILD=TRUE`` has none, yet the Triton kernels need only their own modules
(and triton, einops). When the plain import fails, :func:`load_peers` enters the package without
running its ``__init__``.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from qmamba.export import ops

PEER_CHUNK_SIZE = 256  # Mamba2's default chunk_size


@dataclass(frozen=True)
class Peers:
    chunk_scan: Callable                 # mamba_chunk_scan_combined
    state_update: Callable               # selective_state_update
    conv_fn: Callable | None = None      # causal_conv1d_fn, if causal_conv1d is installed
    conv_update: Callable | None = None  # causal_conv1d_update


def import_skipping_init(package: str, module: str):
    """``importlib.import_module(module)``; if that fails, again with ``package`` entered as a bare
    namespace whose ``__init__`` is not run (the import error of the second try is raised)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if package in sys.modules:
            raise
        spec = importlib.util.find_spec(package)
        if spec is None or spec.submodule_search_locations is None:
            raise
    sys.modules[package] = importlib.util.module_from_spec(spec)  # __path__ set, __init__ not run
    try:
        return importlib.import_module(module)
    except ImportError:
        del sys.modules[package]
        raise


def load_peers() -> tuple[Peers | None, str]:
    """(the peers, "") or (None, why mamba_ssm's kernels cannot be imported)."""
    try:
        scan = import_skipping_init("mamba_ssm", "mamba_ssm.ops.triton.ssd_combined")
        update = import_skipping_init("mamba_ssm", "mamba_ssm.ops.triton.selective_state_update")
    except ImportError as e:
        return None, str(e)
    try:
        import causal_conv1d
        conv_fn, conv_update = causal_conv1d.causal_conv1d_fn, causal_conv1d.causal_conv1d_update
    except ImportError:
        conv_fn = conv_update = None
    return Peers(scan.mamba_chunk_scan_combined, update.selective_state_update, conv_fn, conv_update), ""


def ssd_fp16_inputs(t: dict, a: dict) -> dict:
    """QuantSSD's case tensors as mamba_ssm's SSD takes them: x [bt, L, h, p], dt [bt, L, h]
    (before dt_bias and softplus, which the kernels apply), B, C [bt, L, g, n] in fp16; A, D,
    dt_bias [h] and the state [bt, h, p, n] (fp16, for a decode step)."""
    bt, L, _ = t["x"].shape
    h, p, n, g = a["nheads"], a["headdim"], a["d_state"], a["ngroups"]
    xs = ops.x_channel_scales(t["x_out_scales"], t["x_head_group_range"], t["x_dim_group_range"], h, p)
    out = dict(x=(t["x"].float() * xs).half().view(bt, L, h, p),
               dt=(t["dt"].float() * a["dt_scale"]).half(),
               B=(t["B"].float().view(bt, L, g, n) * t["B_out_scales"].view(g, 1)).half(),
               C=(t["C"].float().view(bt, L, g, n) * t["C_out_scales"].view(g, 1)).half(),
               A=-torch.exp(t["A_log"].float()), D=t["D"].float(), dt_bias=t["dt_bias"].float())
    if t.get("ssm_state") is not None:
        scales = ops.state_scales(t["ssm_state_scale"], t["x_head_group_range"], t["x_dim_group_range"], h, p)
        out["state"] = (t["ssm_state"].float() * scales).half()
    return out


def ssd_peer(peers: Peers, t: dict, a: dict, decode: bool) -> Callable:
    """A no-argument call of mamba_ssm's SSD on the case: the chunked scan (with its final state)
    for a prefill, one in-place state update for a decode step."""
    v = ssd_fp16_inputs(t, a)
    if not decode:
        return lambda: peers.chunk_scan(v["x"], v["dt"], v["A"], v["B"], v["C"], PEER_CHUNK_SIZE,
                                        D=v["D"], dt_bias=v["dt_bias"], dt_softplus=True,
                                        return_final_states=True)
    # Mamba2.step's layout: per-head A, dt, dt_bias, D broadcast over the head dim with stride 0,
    # which selective_state_update detects (tie_hdim) and reads once per head.
    state = v["state"]
    bt, h, p, n = state.shape
    x, B, C = v["x"][:, 0], v["B"][:, 0], v["C"][:, 0]
    dt = v["dt"][:, 0, :, None].expand(bt, h, p)
    A = v["A"][:, None, None].expand(h, p, n)
    D, dt_bias = v["D"][:, None].expand(h, p), v["dt_bias"][:, None].expand(h, p)
    return lambda: peers.state_update(state, x, dt, A, B, C, D=D, z=None, dt_bias=dt_bias,
                                      dt_softplus=True)


def conv_peer(peers: Peers, t: dict, a: dict, decode: bool) -> Callable | None:
    """A no-argument call of causal_conv1d's conv + SiLU on the case, as Mamba2 makes it (channels
    last input, a [bt, conv_dim, K] state for the decode step); None without causal_conv1d."""
    if peers.conv_fn is None:
        return None
    x = t["xBC"].half() * a["x_scale"]                       # [bt, L, conv_dim]
    w = t["weight"].half() * a["wx_scale"]                  # [conv_dim, K]
    b = t["bias"].half() * a["bx_scale"]
    if not decode:
        return lambda: peers.conv_fn(x.transpose(1, 2), w, b, activation="silu")
    state = torch.zeros(x.shape[0], x.shape[2], w.shape[1], dtype=torch.float16, device=x.device)
    return lambda: peers.conv_update(x[:, 0], state, w, b, "silu")
