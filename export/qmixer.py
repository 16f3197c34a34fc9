"""The W8A8 Mamba2 mixer: in_proj -> QuantConv1dSiLU -> QuantSSD -> gated norm -> (Hadamard) -> out_proj.

One method per step, each stating its fp32 math (``Q`` = ``ops.quantize``):

1. ``in_proj_step(u_q)``: ``v = in_proj(u_q)`` (QuantLinear, fp32), split ``z | x | B | C | dt``
   (sizes ``d_ssm | d_ssm | g*n | g*n | h``, transformers' order), ``z_q = Q(v_z, z_scale)``,
   ``xBC_q = concat(Q(v_x, x_scale), Q(v_B, B_scale), Q(v_C, C_scale))``, ``dt_q = Q(v_dt, dt_scale)``.
2. ``conv_step``: ``ops.quant_conv1d_silu_ref`` (or the GPU kernel) with ``conv_op_tensors()`` /
   ``conv_op_attributes()``; returns int8 x, B, C and the new conv state.
3. ``ssd_step``: ``ops.quant_ssd_chunked`` (or the GPU kernel) with ``ssd_op_tensors()`` /
   ``ssd_op_attributes()``; returns fp32 y and the new int8 SSM state.
4. ``gate_norm_step(y, z_q)``: ``z = float(z_q) * z_scale``; ``QuantGatedRMSNorm(y, z)``.
5. ``rotate_step(g)``: ``g @ R`` with ``R = hadamard.rotation_matrix(d_ssm)`` if ``hadamard``, computed
   one Kronecker factor at a time (``hadamard.rotate``; R is folded into the out_proj weight: it holds
   ``Q(W @ R)``, so ``(g @ R) @ (W @ R).T == g @ W.T``), else ``g``.
6. ``out_proj_step(g)``: ``out_proj(Q(g, out_proj.input_scale))``, fp32 ``[B, L, d_model]``.

Op backends: ``ops_backend="reference"`` runs the PyTorch twins of ``qmamba.export.ops``;
``"kernels"`` runs ``qmamba.export.kernels.quant_conv1d_silu`` / ``quant_ssd`` (same signatures as
the twins, CUDA tensors). There is no silent fallback: a missing backend raises, and
``last_ops_backend`` tells which one ran.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from . import hadamard as had
from . import ops
from .quant_modules import QuantGatedRMSNorm, QuantLinear, scalar_buffer
from .validate import QMambaInputError, check_group_ranges, check_scales, check_tensor

OPS_BACKENDS = ("reference", "kernels")

# Scalar scales of the conv op, in the attribute order of docs/ops.md.
CONV_SCALE_NAMES = ("x_scale", "wx_scale", "bx_scale", "B_scale", "wB_scale", "bB_scale",
                    "C_scale", "wC_scale", "bC_scale")


def ops_functions(backend: str):
    """(conv1d_silu, ssd) callables of an op backend; raises if that backend is not available."""
    if backend == "reference":
        return ops.quant_conv1d_silu_ref, ops.quant_ssd_chunked
    if backend == "kernels":
        from . import kernels  # ctypes only: the CUDA library loads at the first call

        return kernels.quant_conv1d_silu, kernels.quant_ssd
    raise ValueError(f"ops_backend must be one of {OPS_BACKENDS}, got {backend!r}")


class QuantMamba2Mixer(nn.Module):
    """One W8A8 Mamba2 mixer. Dimensions come from a ``QuantConfig`` (see ``qmodel``)."""

    def __init__(self, cfg, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.where = f"layer {layer_idx} mixer"
        self.nheads, self.headdim, self.d_state = cfg.nheads, cfg.headdim, cfg.d_state
        self.ngroups, self.d_conv = cfg.ngroups, cfg.d_conv
        self.d_ssm, self.conv_dim = cfg.d_ssm, cfg.conv_dim
        self.dt_min, self.dt_max = float(cfg.dt_min), float(cfg.dt_max)
        self.chunk_size = cfg.chunk_size
        self.hadamard = bool(cfg.hadamard)     # sizes checked by QuantConfig.validate
        g, nhg, ndg, n = cfg.ngroups, cfg.n_head_groups, cfg.n_dim_groups, cfg.d_state
        d_in_proj = 2 * self.d_ssm + 2 * g * n + self.nheads
        self.in_proj = QuantLinear(cfg.d_model, d_in_proj)
        for name in ("z_scale", "dt_scale") + CONV_SCALE_NAMES:
            self.register_buffer(name, scalar_buffer(1.0))
        self.register_buffer("conv_weight", torch.zeros(self.conv_dim, self.d_conv, dtype=torch.int8))
        self.register_buffer("conv_bias", torch.zeros(self.conv_dim, dtype=torch.int8))
        self.register_buffer("x_out_scales", torch.ones(g, nhg, ndg))
        self.register_buffer("B_out_scales", torch.ones(g))
        self.register_buffer("C_out_scales", torch.ones(g))
        self.register_buffer("x_head_group_range", torch.zeros(g, nhg, dtype=torch.int32))
        self.register_buffer("x_dim_group_range", torch.zeros(g, nhg, ndg, dtype=torch.int32))
        self.register_buffer("A_log", torch.zeros(self.nheads))
        self.register_buffer("D", torch.zeros(self.nheads))
        self.register_buffer("dt_bias", torch.zeros(self.nheads))
        self.register_buffer("ssm_state_scale", torch.ones(g, nhg, ndg, n))
        self.norm = QuantGatedRMSNorm(self.d_ssm, self.d_ssm // g, cfg.gated_norm_eps)
        self.out_proj = QuantLinear(self.d_ssm, cfg.d_model)
        self.last_ops_backend: str | None = None

    # ---- what the ONNX exporter reads ------------------------------------------------------
    def conv_op_tensors(self) -> dict[str, torch.Tensor]:
        """Tensor inputs 1..7 of QuantConv1dSiLU, named as in docs/ops.md."""
        return {"weight": self.conv_weight, "bias": self.conv_bias,
                "x_out_scales": self.x_out_scales, "B_out_scales": self.B_out_scales,
                "C_out_scales": self.C_out_scales, "x_head_group_range": self.x_head_group_range,
                "x_dim_group_range": self.x_dim_group_range}

    def conv_op_attributes(self) -> dict[str, float | int]:
        """Attributes of QuantConv1dSiLU (docs/ops.md), scales as exact fp32 values."""
        attrs: dict[str, float | int] = {k: float(getattr(self, k)) for k in CONV_SCALE_NAMES}
        attrs.update(ngroups=self.ngroups, nheads=self.nheads, headdim=self.headdim,
                     d_state=self.d_state)
        return attrs

    def ssd_op_tensors(self) -> dict[str, torch.Tensor]:
        """Tensor inputs 4..12 of QuantSSD, named as in docs/ops.md."""
        return {"A_log": self.A_log, "D": self.D, "dt_bias": self.dt_bias,
                "x_out_scales": self.x_out_scales, "B_out_scales": self.B_out_scales,
                "C_out_scales": self.C_out_scales, "x_head_group_range": self.x_head_group_range,
                "x_dim_group_range": self.x_dim_group_range, "ssm_state_scale": self.ssm_state_scale}

    def ssd_op_attributes(self, out_dtype: int = 1) -> dict[str, float | int]:
        """Attributes of QuantSSD (docs/ops.md); ``out_dtype`` 1 = float32, 10 = float16."""
        return {"dt_scale": float(self.dt_scale), "dt_min": self.dt_min, "dt_max": self.dt_max,
                "ngroups": self.ngroups, "nheads": self.nheads, "headdim": self.headdim,
                "d_state": self.d_state, "out_dtype": out_dtype, "chunk_size": self.chunk_size}

    def in_proj_segment_scales(self) -> dict[str, float]:
        """Output scale of each in_proj segment, in split order z, x, B, C, dt."""
        return {k: float(getattr(self, f"{k}_scale")) for k in ("z", "x", "B", "C", "dt")}

    def in_proj_split_sizes(self) -> list[int]:
        gn = self.ngroups * self.d_state
        return [self.d_ssm, self.d_ssm, gn, gn, self.nheads]

    # ---- the steps --------------------------------------------------------------------------
    def in_proj_step(self, u_q: torch.Tensor):
        """int8 ``[B, L, d_model]`` -> (z_q, xBC_q, dt_q), int8, see the module docstring."""
        v = self.in_proj(u_q)
        vz, vx, vB, vC, vdt = torch.split(v, self.in_proj_split_sizes(), dim=-1)
        xBC_q = torch.cat([ops.quantize(vx, self.x_scale), ops.quantize(vB, self.B_scale),
                           ops.quantize(vC, self.C_scale)], dim=-1)
        return ops.quantize(vz, self.z_scale), xBC_q, ops.quantize(vdt, self.dt_scale)

    def conv_step(self, xBC_q, conv_state=None, backend: str = "reference"):
        conv_fn, _ = ops_functions(backend)
        t = self.conv_op_tensors()
        return conv_fn(xBC_q, t["weight"], t["bias"], t["x_out_scales"], t["B_out_scales"],
                       t["C_out_scales"], t["x_head_group_range"], t["x_dim_group_range"],
                       conv_state, **self.conv_op_attributes())

    def ssd_step(self, x_q, dt_q, B_q, C_q, ssm_state=None, backend: str = "reference"):
        _, ssd_fn = ops_functions(backend)
        t = self.ssd_op_tensors()
        return ssd_fn(x_q, dt_q, B_q, C_q, t["A_log"], t["D"], t["dt_bias"], t["x_out_scales"],
                      t["B_out_scales"], t["C_out_scales"], t["x_head_group_range"],
                      t["x_dim_group_range"], t["ssm_state_scale"], ssm_state,
                      **self.ssd_op_attributes())

    def gate_norm_step(self, y: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
        """``norm(y, float(z_q) * z_scale)``, fp32."""
        return self.norm(y.float(), z_q.float() * self.z_scale)

    def rotate_step(self, g: torch.Tensor) -> torch.Tensor:
        """``g @ R`` (fp32, ``hadamard.rotate``) with Hadamard, else ``g`` unchanged."""
        return had.rotate(g) if self.hadamard else g

    def out_proj_step(self, g: torch.Tensor) -> torch.Tensor:
        """``out_proj(Q(g, out_proj.input_scale))``: fp32 ``[B, L, d_model]``."""
        return self.out_proj(self.out_proj.quantize_input(g))

    def forward(self, u_q: torch.Tensor, conv_state=None, ssm_state=None,
                ops_backend: str = "reference"):
        """int8 ``[B, L, d_model]`` -> (fp32 ``[B, L, d_model]``, (conv_state, ssm_state))."""
        z_q, xBC_q, dt_q = self.in_proj_step(u_q)
        x_q, B_q, C_q, conv_state = self.conv_step(xBC_q, conv_state, ops_backend)
        y, ssm_state = self.ssd_step(x_q, dt_q, B_q, C_q, ssm_state, ops_backend)
        self.last_ops_backend = ops_backend
        out = self.out_proj_step(self.rotate_step(self.gate_norm_step(y, z_q)))
        return out, (conv_state, ssm_state)

    # ---- checks -----------------------------------------------------------------------------
    def validate(self) -> None:
        """Every tensor's dtype/shape and every scale's range; errors name this layer."""
        w = self.where
        self.in_proj.validate(f"{w} in_proj")
        self.out_proj.validate(f"{w} out_proj")
        self.norm.validate(f"{w} norm", self.d_ssm)
        for name in ("z_scale", "dt_scale") + CONV_SCALE_NAMES:
            check_tensor(w, name, getattr(self, name), torch.float32, ())
        check_scales(w, **{k: float(getattr(self, k)) for k in ("z_scale", "dt_scale") + CONV_SCALE_NAMES})
        check_tensor(w, "conv_weight", self.conv_weight, torch.int8, (self.conv_dim, self.d_conv))
        check_tensor(w, "conv_bias", self.conv_bias, torch.int8, (self.conv_dim,))
        check_group_ranges(w, self.x_out_scales, self.B_out_scales, self.C_out_scales,
                           self.x_head_group_range, self.x_dim_group_range, self.ngroups,
                           self.nheads, self.headdim)
        nhg, ndg = self.x_out_scales.shape[1:]
        for name in ("A_log", "D", "dt_bias"):
            check_tensor(w, name, getattr(self, name), torch.float32, (self.nheads,), finite=True)
        check_tensor(w, "ssm_state_scale", self.ssm_state_scale, torch.float32,
                     (self.ngroups, nhg, ndg, self.d_state), finite=True, positive=True)
        if not (self.dt_min >= 0 and self.dt_max > self.dt_min) or math.isnan(self.dt_max):
            raise QMambaInputError(f"{w}: need 0 <= dt_min < dt_max, got {self.dt_min}, {self.dt_max}")
