"""The sizes a Mamba2 layer derives from its heads, head dim, SSD groups and state size (docs/ops.md),
and the layer shapes of the real models."""
from __future__ import annotations

from dataclasses import dataclass


class Mamba2LayerSizes:
    """Mixin of ``d_ssm`` and ``conv_dim`` for a class with ``nheads``, ``headdim``, ``ngroups``
    and ``d_state`` attributes (``QuantConfig``, ``LayerShape``)."""

    @property
    def d_ssm(self) -> int:
        """x channels: ``nheads * headdim``."""
        return self.nheads * self.headdim

    @property
    def conv_dim(self) -> int:
        """conv channels, x then B then C: ``d_ssm + 2 * ngroups * d_state``."""
        return self.d_ssm + 2 * self.ngroups * self.d_state


@dataclass(frozen=True)
class LayerShape(Mamba2LayerSizes):
    """One Mamba2 layer as the two custom ops see it: SSD groups, heads, head dim, state size,
    conv width, and the head x dim groups of the x scales within each SSD group."""
    ngroups: int
    nheads: int
    headdim: int
    d_state: int
    d_conv: int = 4
    n_head_groups: int = 4
    n_dim_groups: int = 4


# The mixer layers of Mamba2-130m and Mamba2-8b (4 x 4 head/dim groups per SSD group, as Quamba2).
LAYER_SHAPES = {
    "130m": LayerShape(ngroups=1, nheads=24, headdim=64, d_state=128),
    "8b": LayerShape(ngroups=8, nheads=128, headdim=64, d_state=128),
}
