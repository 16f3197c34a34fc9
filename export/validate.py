"""Input checks shared by the reference ops, the quantized modules and the exporter.

Every error names where it happened (an op or a layer), the tensor, and what is wrong, so that a
bad checkpoint or a bad call is diagnosed from the message alone.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from qmamba.errors import BadInputError


class QMambaInputError(BadInputError):
    """A tensor, scale or size that breaks the contract of docs/ops.md."""


def check_tensor(where: str, name: str, t, dtype: torch.dtype | None = None,
                 shape: Sequence[int | None] | None = None, *, finite: bool = False,
                 positive: bool = False) -> torch.Tensor:
    """Checks dtype, shape (None = any size), and optionally that values are finite / > 0."""
    if not isinstance(t, torch.Tensor):
        raise QMambaInputError(f"{where}: {name} is missing (got {type(t).__name__})")
    if dtype is not None and t.dtype != dtype:
        raise QMambaInputError(f"{where}: {name} must be {dtype}, got {t.dtype}")
    if shape is not None:
        ok = t.dim() == len(shape) and all(s is None or s == d for s, d in zip(shape, t.shape))
        if not ok:
            want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
            raise QMambaInputError(f"{where}: {name} must have shape {want}, got {list(t.shape)}")
    if finite and t.is_floating_point() and not torch.isfinite(t).all():
        raise QMambaInputError(f"{where}: {name} has non-finite values")
    if positive and not (t > 0).all():
        raise QMambaInputError(f"{where}: {name} must be > 0 everywhere, min is {t.min().item():g}")
    return t


def check_scales(where: str, **scales: float) -> None:
    """Scalar scales must be finite and > 0."""
    for name, v in scales.items():
        if v is None:
            raise QMambaInputError(f"{where}: scale {name} is missing")
        v = float(v)
        if not math.isfinite(v) or v <= 0:
            raise QMambaInputError(f"{where}: scale {name} must be finite and > 0, got {v!r}")


def check_group_ranges(where: str, x_out_scales, B_out_scales, C_out_scales,
                       x_head_group_range, x_dim_group_range, ngroups: int, nheads: int,
                       headdim: int) -> None:
    """Shapes, dtypes and values of the group-scale tensors and ranges (docs/ops.md, Group lookup)."""
    if ngroups < 1 or nheads % ngroups:
        raise QMambaInputError(f"{where}: ngroups={ngroups} does not divide nheads={nheads}")
    g = ngroups
    check_tensor(where, "x_out_scales", x_out_scales, torch.float32, (g, None, None),
                 finite=True, positive=True)
    nhg, ndg = x_out_scales.shape[1], x_out_scales.shape[2]
    check_tensor(where, "B_out_scales", B_out_scales, torch.float32, (g,), finite=True, positive=True)
    check_tensor(where, "C_out_scales", C_out_scales, torch.float32, (g,), finite=True, positive=True)
    check_tensor(where, "x_head_group_range", x_head_group_range, torch.int32, (g, nhg))
    check_tensor(where, "x_dim_group_range", x_dim_group_range, torch.int32, (g, nhg, ndg))
    hpg = nheads // g
    hr = x_head_group_range.cpu()
    dr = x_dim_group_range.cpu()
    for sg in range(g):
        _check_ends(where, f"x_head_group_range[{sg}]", hr[sg], hpg, "heads per SSD group")
        for hg in range(nhg):
            _check_ends(where, f"x_dim_group_range[{sg}, {hg}]", dr[sg, hg], headdim, "headdim")


def _check_ends(where: str, name: str, ends: torch.Tensor, total: int, what: str) -> None:
    e = ends.tolist()
    if e[0] <= 0 or any(b <= a for a, b in zip(e, e[1:])):
        raise QMambaInputError(f"{where}: {name} = {e} must be strictly increasing cumulative ends > 0")
    if e[-1] != total:
        raise QMambaInputError(f"{where}: {name} = {e} must end at {what} = {total}")
