"""The sizes a Mamba2 layer derives from its heads, head dim, SSD groups and state size (docs/ops.md)."""
from __future__ import annotations


class Mamba2LayerSizes:
    """Mixin of ``d_ssm`` and ``conv_dim`` for a class with ``nheads``, ``headdim``, ``ngroups``
    and ``d_state`` attributes (``QuantConfig``, ``op_cases.LayerShape``)."""

    @property
    def d_ssm(self) -> int:
        """x channels: ``nheads * headdim``."""
        return self.nheads * self.headdim

    @property
    def conv_dim(self) -> int:
        """conv channels, x then B then C: ``d_ssm + 2 * ngroups * d_state``."""
        return self.d_ssm + 2 * self.ngroups * self.d_state
