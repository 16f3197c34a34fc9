"""fp32 re-statement of transformers' ``Mamba2Mixer`` forward that keeps every intermediate.

Calibration needs tensors the transformers forward never exposes (the conv+SiLU output, the SSM
state at chunk ends), so it runs this trace on the mixer's own weights and input. A test checks
that ``trace_mixer(m, u).out`` equals ``m(u)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .ops import _segsum, ssd_chunked_fp32
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
    state_absmax: torch.Tensor | None  # [h, p, n]: max |SSM state| over the batch and every token
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


def state_absmax_all_tokens(x, dt, A, Bh, chunk: int = 32) -> torch.Tensor:
    """max over batch and time of |S_t| (``[h, p, n]``), S_t the fp32 SSM state after token t.

    Decode quantizes the state after every token, so its scale must cover every S_t, not only
    the states at chunk ends (a peak between them would saturate). Inside a chunk of T tokens,
    ``S_t = exp(a_cum[t]) S_in + sum_{s<=t} exp(a_cum[t] - a_cum[s]) dt_s x_s B_s^T``.
    """
    bt, L, h, p = x.shape
    n = Bh.shape[-1]
    S = x.new_zeros(bt, h, 1, p, n)
    amax = x.new_zeros(h, p, n)
    xp, Bp, dtp = x.permute(0, 2, 1, 3), Bh.permute(0, 2, 1, 3), dt.permute(0, 2, 1)
    for c0 in range(0, L, chunk):
        sl = slice(c0, min(L, c0 + chunk))
        a = dtp[:, :, sl] * A[:, None]                                  # [bt, h, T]
        a_cum = torch.cumsum(a, dim=-1)
        W = torch.exp(_segsum(a)) * dtp[:, :, None, sl]                 # [bt, h, t, s]
        Y = W[..., None] * xp[:, :, None, sl]                            # [bt, h, t, s, p]
        St = Y.transpose(-1, -2) @ Bp[:, :, None, sl]                    # [bt, h, t, p, n]
        St += torch.exp(a_cum)[..., None, None] * S
        S = St[:, :, -1:]
        amax = torch.maximum(amax, torch.linalg.vector_norm(St, float("inf"), dim=(0, 2)))
    return amax


@torch.no_grad()
def trace_mixer(m, u: torch.Tensor, with_state: bool = True) -> MixerTrace:
    """Runs mixer ``m`` on ``u [B, L, d_model]`` in fp32 from zero states, keeping intermediates.

    ``with_state=False`` skips the (costly) per-token state maximum (``state_absmax`` is None).
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
    xh = x.reshape(bt, L, h, p)
    y, _, _ = ssd_chunked_fp32(xh, dt, A, Bh, Ch, m.D.float(), S0, m.chunk_size)
    gated = m.norm(y, z)
    out = gated.float() @ m.out_proj.weight.float().t()
    x_in, B_in, C_in = torch.split(xBC, [d_ssm, g * n, g * n], dim=-1)
    return MixerTrace(u=u, z_in=z, x_in=x_in, B_in=B_in, C_in=C_in, dt_in=dt_in, x=x, B=B, C=C,
                      state_absmax=state_absmax_all_tokens(xh, dt, A, Bh) if with_state else None, y=y, gated=gated.float(), out=out)


@torch.no_grad()
def float_forward(model, input_ids: torch.Tensor, on_mixer=None, with_state: bool = True):
    """fp32 forward of a transformers Mamba2ForCausalLM through ``trace_mixer``; returns the final
    norm's output ``[B, L, d_model]`` (the lm_head input: ``logits = lm_head(result)``).

    Mamba2Block is ``res = res + mixer(norm(res))``; ``on_mixer(i, trace)`` sees every layer.
    One mixer computation per layer (the transformers forward would be a second one).
    """
    bb = model.backbone
    res = bb.embeddings(input_ids).float()
    for i, layer in enumerate(bb.layers):
        t = trace_mixer(layer.mixer, layer.norm(res), with_state)
        if on_mixer is not None:
            on_mixer(i, t)
        res = res + t.out
    return bb.norm_f(res)
