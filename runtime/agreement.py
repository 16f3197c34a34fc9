"""How two results of the same computation are compared, with the budgets of docs/ops.md.

int8 outputs may differ by 1 LSB where the value lies within an ulp of a rounding tie (``exp``
differs by an ulp between libraries; a chunked scan sums in another order): the budget is
``<= 1 LSB on <= 0.1 %`` of the elements. Float outputs are compared by relative L2 error.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TIE_MAX_LSB = 1
TIE_MAX_FRACTION = 1e-3
# The CUDA SSD prefill (the TensorRT plugin's too) sums chunk by chunk on tensor cores (int8 and split f16
# operands, about fp32's precision, in another order than the sequential reference; docs/kernels.md): its
# int8 states may land on the other side of a rounding boundary more often than ties alone would. The budget
# was set for an earlier plain-TF32 kernel (0.6 % seen at L = 37 on the H100) and kept: <= 1 LSB on up to 2 %.
PREFILL_STATE_MAX_FRACTION = 2e-2


@dataclass(frozen=True)
class Agreement:
    name: str
    kind: str              # "int8" or "float"
    max_abs: float         # max |a - b| (LSB for int8)
    fraction: float        # int8: share of differing elements; float: relative L2 error
    ok: bool
    bound: str

    def row(self) -> str:
        status = "ok" if self.ok else "FAIL"
        what = f"{self.fraction * 100:.4f}% differ" if self.kind == "int8" else f"rel {self.fraction:.2e}"
        return f"{self.name:<42} {self.kind:<6} {self.max_abs:<10.3g} {what:<18} {self.bound:<18} {status}"


def _check_shapes(name: str, a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name}: shapes differ, {list(a.shape)} vs {list(b.shape)}")


def _numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def int8_agreement(name: str, a, b, max_fraction: float = TIE_MAX_FRACTION) -> Agreement:
    """int8 equality except at rounding ties (<= 1 LSB on <= max_fraction of the elements, 0.1 %
    unless the computation's own precision says otherwise, e.g. PREFILL_STATE_MAX_FRACTION)."""
    a, b = _numpy(a), _numpy(b)
    _check_shapes(name, a, b)
    d = np.abs(a.astype(np.int32) - b.astype(np.int32))
    max_abs = int(d.max()) if d.size else 0
    frac = float((d > 0).mean()) if d.size else 0.0
    ok = max_abs <= TIE_MAX_LSB and frac <= max_fraction
    return Agreement(name, "int8", max_abs, frac, ok, f"<={TIE_MAX_LSB} LSB on <={max_fraction:.1%}")


def float_agreement(name: str, a, b, rel_bound: float) -> Agreement:
    """Relative L2 error ||a - b|| / ||b|| against ``rel_bound``."""
    a, b = _numpy(a).astype(np.float64), _numpy(b).astype(np.float64)
    _check_shapes(name, a, b)
    if not np.isfinite(a).all():
        return Agreement(name, "float", float("inf"), float("inf"), False, f"rel <= {rel_bound:.0e}")
    d = a - b
    denom = np.linalg.norm(b) or 1.0
    rel = float(np.linalg.norm(d) / denom)
    max_abs = float(np.abs(d).max()) if d.size else 0.0
    return Agreement(name, "float", max_abs, rel, rel <= rel_bound, f"rel <= {rel_bound:.0e}")
