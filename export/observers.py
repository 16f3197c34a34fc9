"""Activation observers: the range each static int8 scale is made from (scale = range / 127).

- ``minmax``: the range of a group of channels is its absolute maximum over all calibration data.
- ``percentile``: the range is the ``alpha`` quantile of ``|v|`` over the group's elements, i.e. the
  top ``1 - alpha`` of the magnitudes is ignored (clipped). Each group is calibrated on its own, so
  one group's outliers never widen another group's scale.

``ChannelObserver`` sees a tensor ``[..., C]`` per calibration batch and keeps the per-channel
absmax (for grouping and min-max) and, for the percentile observer, a random subsample of rows of
``|v|`` (fixed seed, about ``sample_budget`` values over ``n_updates`` batches), from which any group
of channels gets its own quantile later.
"""
from __future__ import annotations

import math

import torch

OBSERVERS = ("minmax", "percentile")


class ChannelObserver:
    """Per-channel statistics of a ``[..., C]`` activation across calibration batches."""

    def __init__(self, kind: str = "minmax", alpha: float = 0.9995, sample_budget: int = 1 << 20,
                 n_updates: int = 1, seed: int = 0):
        if kind not in OBSERVERS:
            raise ValueError(f"observer must be one of {OBSERVERS}, got {kind!r}")
        if kind == "percentile" and not 0.0 < alpha <= 1.0:
            raise ValueError(f"percentile must be in (0, 1], got {alpha}")
        self.kind, self.alpha = kind, alpha
        self.sample_budget, self.n_updates = sample_budget, max(1, n_updates)
        self.absmax: torch.Tensor | None = None
        self._rows: list[torch.Tensor] = []
        self._gen = torch.Generator().manual_seed(seed)

    def update(self, v: torch.Tensor) -> None:
        a = v.detach().float().abs().reshape(-1, v.shape[-1]).cpu()
        m = a.amax(dim=0)
        self.absmax = m if self.absmax is None else torch.maximum(self.absmax, m)
        if self.kind == "percentile":
            rows = max(16, self.sample_budget // (a.shape[1] * self.n_updates))
            if a.shape[0] > rows:
                a = a[torch.randperm(a.shape[0], generator=self._gen)[:rows]]
            self._rows.append(a)

    def channel_absmax(self) -> torch.Tensor:
        if self.absmax is None:
            raise RuntimeError("observer saw no data")
        return self.absmax

    def group_range(self, channels: torch.Tensor | slice | None = None) -> float:
        """The range of one group of channels (all channels if None)."""
        sel = slice(None) if channels is None else channels
        if self.kind == "minmax":
            return float(self.channel_absmax()[sel].max())
        vals = torch.cat([r[:, sel].reshape(-1) for r in self._rows])
        return percentile_of_abs(vals, self.alpha)


def percentile_of_abs(vals: torch.Tensor, alpha: float) -> float:
    """The value at rank ceil(alpha * N) of ascending ``vals`` (``alpha = 1`` gives the max)."""
    k = min(vals.numel(), max(1, math.ceil(alpha * vals.numel())))
    return float(torch.kthvalue(vals, k).values)


class StateObserver:
    """Element-wise absmax ``[h, p, n]`` of the SSM state (always min-max: a clipped state keeps
    its error through every later step, so the state is never clipped on purpose)."""

    def __init__(self):
        self.absmax: torch.Tensor | None = None

    def update(self, state_absmax: torch.Tensor) -> None:
        m = state_absmax.detach().float().cpu()
        self.absmax = m if self.absmax is None else torch.maximum(self.absmax, m)
