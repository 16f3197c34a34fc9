"""QuantMamba2LM: the W8A8 Mamba2 language model with Quamba2-style group scales.

Forward (all fp32 unless int8 is said)::

    res = embedding(input_ids)                                  # int8 table * row scale
    for each layer:                                             # QuantBlock
        u_q = Q(norm(res), mixer.in_proj.input_scale)          # residual-fused RMSNorm, int8 out
        res = res + mixer(u_q, conv_state, ssm_state)           # fp32 residual
    logits = lm_head(Q(norm_f(res), lm_head.input_scale))       # W8A8, fp32 [B, L, V]

``forward(input_ids [B, L] long, states=None) -> (logits, states)``; ``states`` is a list, one
``(conv_state int8 [B, K-1, conv_dim], ssm_state int8 [B, h, p, n])`` per layer, as docs/ops.md
defines them. ``states=None`` starts from zero states (prefill); ``L == 1`` with the states of the
previous call is a decode step. ``ops_backend`` ("reference" | "kernels") picks who runs the two
custom ops (see ``qmixer``); ``last_ops_backend`` says which did.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from . import hadamard as had
from .layer_sizes import Mamba2LayerSizes
from .qmixer import OPS_BACKENDS, QuantMamba2Mixer
from .quant_modules import QuantEmbedding, QuantLinear, QuantRMSNorm
from .validate import QMambaInputError, check_tensor


@dataclass
class QuantConfig(Mamba2LayerSizes):
    """Sizes and quantization layout of a QuantMamba2LM (saved as config.json)."""
    vocab_size: int
    d_model: int
    n_layer: int
    nheads: int
    headdim: int
    d_state: int
    ngroups: int
    d_conv: int
    norm_eps: float = 1e-5
    gated_norm_eps: float = 1e-5
    n_head_groups: int = 4
    n_dim_groups: int = 4
    hadamard: bool = False
    dt_min: float = 0.0
    dt_max: float = math.inf
    chunk_size: int = 128
    per_tensor: bool = False
    # How the scales were made (informational): observer name, percentile, source model, ...
    calibration: dict = field(default_factory=dict)

    def validate(self) -> None:
        for name in ("vocab_size", "d_model", "n_layer", "nheads", "headdim", "d_state", "ngroups",
                     "n_head_groups", "n_dim_groups", "chunk_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise QMambaInputError(f"config: {name} must be a positive integer, got {v!r}")
        if self.nheads % self.ngroups:
            raise QMambaInputError(f"config: ngroups={self.ngroups} does not divide nheads={self.nheads}")
        if not 2 <= self.d_conv <= 4:
            raise QMambaInputError(f"config: d_conv must be 2..4, got {self.d_conv}")
        if self.n_head_groups > self.nheads // self.ngroups:
            raise QMambaInputError(f"config: n_head_groups={self.n_head_groups} exceeds the "
                                   f"{self.nheads // self.ngroups} heads per SSD group")
        if self.n_dim_groups > self.headdim:
            raise QMambaInputError(f"config: n_dim_groups={self.n_dim_groups} exceeds headdim={self.headdim}")
        if self.hadamard and not had.is_supported_size(self.d_ssm):
            raise QMambaInputError(f"config: hadamard needs d_ssm = 2^k, 12*2^k or 40*2^k, got {self.d_ssm}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "QuantConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   and f.name not in d]
        if missing:
            raise QMambaInputError(f"config: missing keys {missing}")
        unknown = sorted(set(d) - names)
        if unknown:
            raise QMambaInputError(f"config: unknown keys {unknown}")
        return cls(**d)


class QuantBlock(nn.Module):
    """Residual-fused RMSNorm (int8 out) + mixer; the residual stays fp32."""

    def __init__(self, cfg: QuantConfig, layer_idx: int):
        super().__init__()
        self.norm = QuantRMSNorm(cfg.d_model, cfg.norm_eps)
        self.mixer = QuantMamba2Mixer(cfg, layer_idx)

    @property
    def norm_output_scale(self) -> torch.Tensor:
        """The int8 scale of the norm output (it is the mixer's in_proj input scale)."""
        return self.mixer.in_proj.input_scale

    def forward(self, res, conv_state=None, ssm_state=None, ops_backend="reference"):
        u_q = self.mixer.in_proj.quantize_input(self.norm(res))
        out, states = self.mixer(u_q, conv_state, ssm_state, ops_backend)
        return res + out, states


class QuantMamba2LM(nn.Module):
    """W8A8 Mamba2 LM; see the module docstring for the exact forward."""

    def __init__(self, cfg: QuantConfig, ops_backend: str = "reference"):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.ops_backend = ops_backend
        self.embedding = QuantEmbedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(QuantBlock(cfg, i) for i in range(cfg.n_layer))
        self.norm_f = QuantRMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = QuantLinear(cfg.d_model, cfg.vocab_size)

    @property
    def last_ops_backend(self) -> str | None:
        return self.layers[0].mixer.last_ops_backend if len(self.layers) else None

    def validate(self) -> None:
        """Checks every tensor of the model; errors name the layer and the tensor."""
        cfg = self.config
        self.embedding.validate("embedding", cfg.vocab_size, cfg.d_model)
        for i, layer in enumerate(self.layers):
            layer.norm.validate(f"layer {i} norm", cfg.d_model)
            layer.mixer.validate()
        self.norm_f.validate("norm_f", cfg.d_model)
        self.lm_head.validate("lm_head")

    def empty_states(self, batch: int, device=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Zero int8 states for every layer (what ``states=None`` means)."""
        c = self.config
        return [(torch.zeros(batch, c.d_conv - 1, c.conv_dim, dtype=torch.int8, device=device),
                 torch.zeros(batch, c.nheads, c.headdim, c.d_state, dtype=torch.int8, device=device))
                for _ in range(c.n_layer)]

    def _check_inputs(self, input_ids, states):
        c = self.config
        check_tensor("QuantMamba2LM", "input_ids", input_ids, torch.int64, (None, None))
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= c.vocab_size):
            raise QMambaInputError(f"QuantMamba2LM: input_ids must be in [0, {c.vocab_size}), got "
                                   f"[{int(input_ids.min())}, {int(input_ids.max())}]")
        if self.ops_backend not in OPS_BACKENDS:
            raise QMambaInputError(f"QuantMamba2LM: ops_backend must be one of {OPS_BACKENDS}, "
                                   f"got {self.ops_backend!r}")
        if states is None:
            return
        if len(states) != c.n_layer:
            raise QMambaInputError(f"QuantMamba2LM: states must hold {c.n_layer} layers, got {len(states)}")
        bt = input_ids.shape[0]
        for i, st in enumerate(states):
            if len(st) != 2:
                raise QMambaInputError(f"layer {i}: state must be (conv_state, ssm_state)")
            check_tensor(f"layer {i}", "conv_state", st[0], torch.int8, (bt, c.d_conv - 1, c.conv_dim))
            check_tensor(f"layer {i}", "ssm_state", st[1], torch.int8,
                         (bt, c.nheads, c.headdim, c.d_state))

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, states=None):
        """(logits fp32 [B, L, V], new states); see the module docstring."""
        self._check_inputs(input_ids, states)
        res = self.embedding(input_ids)
        new_states = []
        for i, layer in enumerate(self.layers):
            conv_state, ssm_state = (None, None) if states is None else states[i]
            res, st = layer(res, conv_state, ssm_state, self.ops_backend)
            new_states.append(st)
        logits = self.lm_head(self.lm_head.quantize_input(self.norm_f(res)))
        return logits, new_states
