"""W8A8 building blocks of the quantized Mamba2 (the "rest of a W8A8 layer" of docs/ops.md).

Every step is one small method whose docstring states its exact fp32 math, so that the ONNX exporter
can rebuild it from standard ops. ``Q(v, s)`` is ``ops.quantize``: fp32 true division, round half to
even, saturate to [-128, 127], int8. Scalar scales are 0-dim fp32 buffers (state_dict friendly);
``float(buffer)`` is the exact fp32 value an ONNX attribute carries.

- ``QuantLinear``: int8 weight ``[out, in]`` with one fp32 scale per output row, a static per-tensor
  input scale; ``acc = int32(q_in) @ int32(W).T`` (exact), ``y = float(acc) * fp32(s_in * s_w[row])``.
- ``QuantEmbedding``: int8 table ``[V, D]`` with one scale per row: ``e = float(W[id]) * s[id]``.
- ``QuantRMSNorm``: residual-stream RMSNorm ``r * rsqrt(mean(r^2) + eps) * w`` (fp32); its int8
  output is quantized with the *consumer's* ``input_scale`` (one value, never two copies).
- ``QuantGatedRMSNorm``: ``g = y * silu(z)``; RMS over norm groups of ``group_size`` channels; ``* w``.
"""
from __future__ import annotations

import torch
from torch import nn

from . import ops
from .validate import QMambaInputError, check_tensor

# Activation scale used where the observer saw only zeros (an unused channel): any positive value
# quantizes zeros exactly; 1/127 keeps a unit range representable.
ZERO_RANGE_SCALE = 1.0 / 127.0


def absmax_scale(t: torch.Tensor) -> float:
    """Symmetric int8 scale absmax/127 of a tensor (ZERO_RANGE_SCALE if it is all zeros)."""
    m = float(t.detach().abs().max()) if t.numel() else 0.0
    return m / 127.0 if m > 0 else ZERO_RANGE_SCALE


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric int8: (Q(w, s[:, None]) int8, s fp32 [rows]) with s = absmax(row)/127."""
    w = w.detach().float()
    amax = w.abs().amax(dim=1)
    s = torch.where(amax > 0, amax / 127.0, torch.full_like(amax, ZERO_RANGE_SCALE))
    return ops.quantize(w, s[:, None]), s


def quantize_per_tensor(t: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Per-tensor symmetric int8: (Q(t, s) int8, s) with s = absmax/127 (rounded to fp32)."""
    s = float(torch.tensor(absmax_scale(t), dtype=torch.float32))
    return ops.quantize(t.detach().float(), s), s


def scalar_buffer(v: float) -> torch.Tensor:
    return torch.tensor(float(v), dtype=torch.float32)


def int_matmul(q_in: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Exact int32 ``q_in @ w.T`` of int8 operands (computed in float64: exact below 2^53)."""
    return (q_in.double() @ w.double().t()).to(torch.int32)


class QuantLinear(nn.Module):
    """W8A8 linear layer without bias: int8 weight, per-row weight scale, static input scale."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32))
        self.register_buffer("input_scale", scalar_buffer(1.0))

    @classmethod
    def from_float(cls, weight: torch.Tensor, input_scale: float) -> "QuantLinear":
        q = cls(weight.shape[1], weight.shape[0])
        q.weight, q.weight_scale = quantize_rows(weight)
        q.input_scale = scalar_buffer(input_scale)
        return q

    def quantize_input(self, v: torch.Tensor) -> torch.Tensor:
        """``Q(v, input_scale)``: the int8 activation this layer consumes."""
        return ops.quantize(v, self.input_scale)

    def output_scale(self) -> torch.Tensor:
        """fp32 ``[out]``: ``fp32(input_scale * weight_scale[row])``, the dequantization of ``acc``."""
        return self.input_scale * self.weight_scale

    def forward(self, q_in: torch.Tensor) -> torch.Tensor:
        """``float(int32(q_in) @ int32(W).T) * output_scale()`` in fp32, shape ``[..., out]``."""
        acc = int_matmul(q_in, self.weight)
        return acc.float() * self.output_scale()

    def validate(self, where: str) -> None:
        check_tensor(where, "weight", self.weight, torch.int8, (self.out_features, self.in_features))
        check_tensor(where, "weight_scale", self.weight_scale, torch.float32, (self.out_features,),
                     finite=True, positive=True)
        check_tensor(where, "input_scale", self.input_scale, torch.float32, (), finite=True,
                     positive=True)


class QuantEmbedding(nn.Module):
    """int8 embedding table with one fp32 scale per row."""

    def __init__(self, num_embeddings: int, dim: int):
        super().__init__()
        self.register_buffer("weight", torch.zeros(num_embeddings, dim, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(num_embeddings, dtype=torch.float32))

    @classmethod
    def from_float(cls, weight: torch.Tensor) -> "QuantEmbedding":
        q = cls(*weight.shape)
        q.weight, q.scale = quantize_rows(weight)
        return q

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``float(W[ids]) * scale[ids]``: fp32 ``[..., D]``."""
        return self.weight[ids].float() * self.scale[ids].unsqueeze(-1)

    def validate(self, where: str, vocab_size: int, dim: int) -> None:
        check_tensor(where, "weight", self.weight, torch.int8, (vocab_size, dim))
        check_tensor(where, "scale", self.scale, torch.float32, (vocab_size,), finite=True,
                     positive=True)


class QuantRMSNorm(nn.Module):
    """RMSNorm of the fp32 residual stream; quantized to int8 by its consumer's input scale."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = float(eps)
        self.register_buffer("weight", torch.ones(dim, dtype=torch.float32))

    def forward(self, res: torch.Tensor) -> torch.Tensor:
        """``res * rsqrt(mean(res^2, -1) + eps) * weight`` in fp32."""
        res = res.float()
        return res * torch.rsqrt(res.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight

    def validate(self, where: str, dim: int) -> None:
        check_tensor(where, "weight", self.weight, torch.float32, (dim,), finite=True)


class QuantGatedRMSNorm(nn.Module):
    """Mamba2's gated RMSNorm (gate first, then RMS over norm groups of ``group_size`` channels)."""

    def __init__(self, dim: int, group_size: int, eps: float):
        super().__init__()
        if group_size < 1 or dim % group_size:
            raise QMambaInputError(f"gated norm: group_size {group_size} does not divide {dim}")
        self.group_size, self.eps = group_size, float(eps)
        self.register_buffer("weight", torch.ones(dim, dtype=torch.float32))

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``g = y * z * sigmoid(z)``; per group ``g * rsqrt(mean(g^2) + eps)``; ``* weight`` (fp32)."""
        g = y.float() * (z * torch.sigmoid(z))
        shape = g.shape
        g = g.reshape(*shape[:-1], shape[-1] // self.group_size, self.group_size)
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.eps)
        return g.reshape(shape) * self.weight

    def validate(self, where: str, dim: int) -> None:
        check_tensor(where, "weight", self.weight, torch.float32, (dim,), finite=True)
