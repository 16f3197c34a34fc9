"""fp32 re-statement of transformers' ``Mamba2Mixer`` forward that keeps every intermediate.

Calibration needs tensors the transformers forward never exposes (the conv+SiLU output, the SSM
state at chunk ends), so it runs this trace on the mixer's own weights and input. A test checks
that ``trace_mixer(m, u).out`` equals ``m(u)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .ops import ssd_chunked_fp32
from .validate import QMambaInputError


@dataclass
class MixerTrace:
    """Intermediates of one mixer call, fp32, ``[B, L, ...]`` unless said."""
    u: torch.Tensor          # mixer input (the block norm's output)
    z_in: torch.Tensor       # in_proj segments ...
    x_in: torch.Tensor
    B_in: torch.Tensor
    C_in: torch.Tensor
    dt_in: torch.Tensor
    x: torch.Tensor          # conv + SiLU outputs
    B: torch.Tensor
    C: torch.Tensor
    states: list             # SSM state [B, h, p, n] after every chunk (last = final state)
    y: torch.Tensor          # SSD output [B, L, d_ssm]
    gated: torch.Tensor      # gated norm output (out_proj input before any rotation)
    out: torch.Tensor        # mixer output


def mixer_dims(m) -> dict:
    """Sizes of a transformers Mamba2Mixer, with the checks the W8A8 model needs."""
    h, p, g, n = m.num_heads, m.head_dim, m.n_groups, m.ssm_state_size
    if g < 1 or h % g:
        raise QMambaInputError(f"layer {m.layer_idx}: ngroups={g} does not divide nheads={h}")
    if m.activation not in ("silu", "swish"):
        raise QMambaInputError(f"layer {m.layer_idx}: activation must be silu, got {m.activation!r}")
    for name in ("in_proj", "out_proj"):
        if getattr(m, name).bias is not None:
            raise QMambaInputError(f"layer {m.layer_idx}: {name} has a bias; W8A8 in_proj/out_proj "
                                   "have none (Mamba2 use_bias=False)")
    return dict(nheads=h, headdim=p, ngroups=g, d_state=n, d_ssm=h * p, conv_dim=m.conv_dim,
                d_conv=m.conv_kernel_size)


def dt_limits(m) -> tuple[float, float]:
    lo, hi = m.time_step_limit
    return float(lo), float(hi)


@torch.no_grad()
def trace_mixer(m, u: torch.Tensor, state_chunk: int = 64) -> MixerTrace:
    """Runs mixer ``m`` on ``u [B, L, d_model]`` in fp32 from zero states, keeping intermediates.

    ``state_chunk`` sets where the SSM state is sampled (every ``state_chunk`` tokens and at the end).
    """
    d = mixer_dims(m)
    h, p, g, n, d_ssm = d["nheads"], d["headdim"], d["ngroups"], d["d_state"], d["d_ssm"]
    u = u.float()
    bt, L, _ = u.shape
    proj = u @ m.in_proj.weight.float().t()
    z, xBC, dt_in = torch.split(proj, [d_ssm, m.conv_dim, h], dim=-1)
    w = m.conv1d.weight.float()                                  # [conv_dim, 1, K]
    b = m.conv1d.bias.float() if m.conv1d.bias is not None else None
    conv = F.conv1d(xBC.transpose(1, 2), w, b, padding=w.shape[-1] - 1, groups=m.conv_dim)
    xBC_act = F.silu(conv[..., :L].transpose(1, 2))
    x, B, C = torch.split(xBC_act, [d_ssm, g * n, g * n], dim=-1)
    lo, hi = dt_limits(m)
    dt = F.softplus(dt_in + m.dt_bias.float()).clamp(lo, hi)
    A = -torch.exp(m.A_log.float())
    Bh = B.reshape(bt, L, g, n).repeat_interleave(h // g, dim=2)
    Ch = C.reshape(bt, L, g, n).repeat_interleave(h // g, dim=2)
    S0 = u.new_zeros(bt, h, p, n)
    y, _, states = ssd_chunked_fp32(x.reshape(bt, L, h, p), dt, A, Bh, Ch, m.D.float(), S0,
                                    state_chunk)
    gated = m.norm(y, z)
    out = gated.float() @ m.out_proj.weight.float().t()
    x_in, B_in, C_in = torch.split(xBC, [d_ssm, g * n, g * n], dim=-1)
    return MixerTrace(u=u, z_in=z, x_in=x_in, B_in=B_in, C_in=C_in, dt_in=dt_in, x=x, B=B, C=C,
                      states=states, y=y, gated=gated.float(), out=out)
