"""QmambaW8A8Linear's rotation pass in its own order, on the CPU (torch float32, one rounding per operation).

``trt_plugins/kernels/w8a8LinearRotate.cu`` norms and rotates each activation row with its own rounding
points: each of its 256 threads sums the squares of its channels of a norm group (k = t, t + 256, ...), the
block adds the threads' sums by a warp shuffle tree (offsets 16, 8, 4, 2, 1) and then warp after warp;
1 / rms as the graph orders it; then each rotated value is a sum over k in order of separately rounded
products (no fused multiply-add): first ``V F_1``, then ``F_0^T`` of that. This module repeats those
operations so that the kernel's rotated rows can be predicted bit for bit; the linear after it is exact.

    v = rotation_pass_order(x, norm_weight, eps, norm_group, rotation)   # [rows.., K], what Q then takes
"""
from __future__ import annotations

import torch

THREADS = 256  # kRotateThreads


def _block_sum(parts: torch.Tensor) -> torch.Tensor:
    """The block's sum of per-thread partial sums [.., THREADS] as block_sums<1> adds them."""
    v = parts.clone()
    lane = torch.arange(32)
    warps = v.reshape(*v.shape[:-1], THREADS // 32, 32)
    for o in (16, 8, 4, 2, 1):
        warps = warps + warps[..., lane ^ o]
    total = torch.zeros(v.shape[:-1], dtype=torch.float32)
    for w in range(THREADS // 32):
        total = total + warps[..., w, 0]
    return total


def _f32(v: torch.Tensor) -> torch.Tensor:
    """One IEEE float32 rounding of a float64 result (exact for +, -, *, / and sqrt of float32 operands)."""
    return v.float()


def _inv_rms(total: torch.Tensor, count: int, eps: float) -> torch.Tensor:
    """inv_rms_of: 1 / sqrt(total / count + eps), each operation rounded to float32 once (torch's own float32
    sqrt on the CPU is not always correctly rounded; the GPU's __fsqrt_rn is)."""
    eps32 = torch.tensor(eps, dtype=torch.float32).double()
    mean = _f32(total.double() / float(count))
    root = _f32(torch.sqrt(_f32(mean.double() + eps32).double()))
    return _f32(1.0 / root.double())


def rotation_pass_order(x: torch.Tensor, norm_weight, eps: float, norm_group: int, rotation) -> torch.Tensor:
    """The rows the rotation pass writes: RMSNorm (if ``norm_weight``) over groups of ``norm_group`` channels
    (0: the whole row), then ``F_0 (x) F_1`` (or one factor), in the kernel's order. CPU float32."""
    x = x.detach().float().cpu()
    k = x.shape[-1]
    v = x.clone()
    if norm_weight is not None:
        group = norm_group or k
        nw = norm_weight.detach().float().cpu()
        inv = torch.empty(*x.shape[:-1], k // group)
        for g in range(k // group):
            seg = x[..., g * group:(g + 1) * group]
            parts = torch.zeros(*x.shape[:-1], THREADS)
            for start in range(0, group, THREADS):  # thread t adds k = t, t + 256, ... in order
                chunk = seg[..., start:start + THREADS]
                parts[..., :chunk.shape[-1]] = parts[..., :chunk.shape[-1]] + chunk * chunk
            s = _block_sum(parts)
            inv[..., g] = _inv_rms(s, group, eps)
        v = (x * inv.repeat_interleave(group, dim=-1)) * nw
    factors = [f.detach().float().cpu() for f in rotation]
    first, last = (factors if len(factors) == 2 else [None, factors[0]])
    f1 = last.shape[0]
    f0 = k // f1
    m = v.reshape(*v.shape[:-1], f0, f1)
    y = torch.zeros_like(m)
    for i in range(f1):  # Y[r, c] = sum_k V[r, k] F_1[k, c], k in order
        y = y + m[..., i:i + 1] * last[i]
    if first is None:
        return y.reshape(v.shape)
    out = torch.zeros_like(y)
    for r in range(f0):  # out[j, c] = sum_r F_0[r, j] Y[r, c], r in order
        out = out + first[r].unsqueeze(-1) * y[..., r:r + 1, :]
    return out.reshape(v.shape)
