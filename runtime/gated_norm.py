"""QmambaGatedNorm: a prefill Mamba2 mixer's gated RMSNorm and Hadamard rotation as one op (docs/kernels.md).

Not an op of the exported ONNX graphs: it stands for what the prefill graph computes between QuantSSD's y and
out_proj's QuantizeLinear: optionally in_proj's output scale on the z piece (``z_col_scale``, the Mul that
``runtime/scale_after_split.py`` puts after the Split), z's QuantizeLinear and DequantizeLinear, the gate
``y * (z' * sigmoid(z'))``, the RMSNorm over groups of ``group_size`` channels and its weight
(``export/quant_modules.QuantGatedRMSNorm``, ``export/onnx_layers.gated_rms_norm``) and, in a model with a
Hadamard rotation, the rotation's MatMuls (``export/hadamard.rotate``). The kernel is ``trt_plugins/kernels/gatedNormKernel.cu``.

The rotation is given as ``(f0, f1, F_0)``: each row as an ``[f0, f1]`` matrix V becomes ``F_0^T V S_f1`` with
``S_f1`` the normalized Sylvester matrix of order f1 (a power of two up to 128, natural order: the last Kronecker
factor of every rotation ``export/hadamard.py`` makes) and ``F_0`` a dense ``[f0, f0]`` matrix (``None`` when
f0 is 1). ``hadamard_rotation(k)`` gives that form of a model's rotation.

``gated_norm_ref`` is the kernel's reference twin: z scaled, quantized and dequantized in fp32 as the graph does
(an IEEE product, then an IEEE division decides each rounding), everything after it in float64 by default, an
independent reference for the kernel's fp32 sums.
"""
from __future__ import annotations

import math

import torch

from ..export import hadamard, ops
from ..export.validate import QMambaInputError, check_tensor

OP_NAME = "QmambaGatedNorm"
MAX_CHANNELS = 65536  # kMaxChannels of trt_plugins/kernels/gatedNormKernel.cu
MAX_FACTOR = hadamard.MAX_FACTOR  # the largest order of either factor


def hadamard_rotation(k: int) -> tuple[int, int, torch.Tensor | None]:
    """``(f0, f1, F_0)`` of the model rotation of order k (``hadamard.rotation_factors_fp32``, the values the
    graphs hold): two factors are the dense F_0 and the Sylvester F_1; one factor is Sylvester (f0 = 1) when
    k is a power of two, else dense (f1 = 1). Raises for a size of more than two factors (k > 16384)."""
    sizes = hadamard.rotation_sizes(k)
    factors = hadamard.rotation_factors_fp32(k)
    if len(sizes) == 2:
        return sizes[0], sizes[1], factors[0]
    if len(sizes) == 1:
        return (1, k, None) if hadamard.hadamard_base(k)[0] == 1 else (k, 1, factors[0])
    raise QMambaInputError(f"{OP_NAME}: the rotation of {k} channels has {len(sizes)} factors; the op takes two")


def sylvester(f: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """The normalized Sylvester matrix of order f (a power of two), natural order, with fp32 entries
    ``+-fp32(1 / sqrt(f))`` as the graphs hold them, in ``dtype``."""
    s = hadamard.hadamard_matrix(f) / math.sqrt(f)
    return s.float().to(dtype=dtype, device=device)


def check_gated_norm_inputs(y, z, weight, group_size: int, eps: float, z_scale: float, rotation,
                            z_col_scale=None, z_row_width: int = 0):
    """Shapes, dtypes and attributes (``z`` None: no gate, ``z_scale``, ``z_col_scale`` and ``z_row_width`` not
    read; ``z_row_width`` > 0: z is ``[..., z_row_width]`` and the gate's z its first K columns); returns
    ``(K, f0, f1, F_0 or None)``."""
    check_tensor(OP_NAME, "y", y, torch.float32)
    if y.dim() < 1 or y.shape[-1] < 1:
        raise QMambaInputError(f"{OP_NAME}: y must be [..., K] with K >= 1, got {list(y.shape)}")
    k = y.shape[-1]
    if k > MAX_CHANNELS:
        raise QMambaInputError(f"{OP_NAME}: K = {k} channels are more than the {MAX_CHANNELS} the kernel takes")
    if z is not None:
        if z_row_width and not (isinstance(z_row_width, int) and z_row_width >= k):
            raise QMambaInputError(f"{OP_NAME}: z_row_width must be 0 or at least K = {k}, got {z_row_width!r}")
        check_tensor(OP_NAME, "z", z, torch.float32, (*y.shape[:-1], z_row_width or k))
        if z_col_scale is not None:
            check_tensor(OP_NAME, "z_col_scale", z_col_scale, torch.float32, (k,))
    check_tensor(OP_NAME, "weight", weight, torch.float32, (k,), finite=True)
    if not isinstance(group_size, int) or group_size < 1 or k % group_size:
        raise QMambaInputError(f"{OP_NAME}: group_size must divide K = {k}, got {group_size!r}")
    if not (math.isfinite(eps) and eps >= 0):
        raise QMambaInputError(f"{OP_NAME}: eps must be finite and >= 0, got {eps!r}")
    if z is not None and not (math.isfinite(z_scale) and z_scale >= 0):
        raise QMambaInputError(f"{OP_NAME}: z_scale must be finite and >= 0 (0: z as is), got {z_scale!r}")
    return (k, *check_rotation(OP_NAME, k, rotation))


def check_rotation(op: str, k: int, rotation) -> tuple[int, int, torch.Tensor | None]:
    """``(f0, f1, F_0 or None)`` of a rotation ``(f0, f1, F_0)`` of k channels (None: no rotation, f0 = f1 = 1),
    refused in ``op``'s name unless f1 is a power of two, both orders at most 128 and f0 * f1 = k."""
    if rotation is None:
        return 1, 1, None
    f0, f1, first = rotation
    if not 1 <= f1 <= MAX_FACTOR or f1 & (f1 - 1):
        raise QMambaInputError(f"{op}: f1 must be a power of two up to {MAX_FACTOR}, got {f1}")
    if not 1 <= f0 <= MAX_FACTOR or f0 * f1 != k:
        raise QMambaInputError(f"{op}: f0 = {f0} (at most {MAX_FACTOR}) and f1 = {f1} must make K = {k}")
    if f0 > 1:
        check_tensor(op, "F_0", first, torch.float32, (f0, f0), finite=True)
    return f0, f1, first if f0 > 1 else None


def gated_norm_ref(y, z, weight, *, group_size: int, eps: float, z_scale: float = 0.0, rotation=None,
                   z_col_scale=None, z_row_width: int = 0, dtype=torch.float64) -> torch.Tensor:
    """``out [..., K]`` in ``dtype``: z (its first K columns with ``z_row_width``) times ``z_col_scale [K]`` in
    fp32 when given (the graph's Mul), then
    ``z' = DequantizeLinear(QuantizeLinear(z, z_scale))`` in fp32 (z when ``z_scale`` is 0), then in ``dtype``:
    ``g = y * (z' * sigmoid(z'))`` (``g = y`` when ``z`` is None: no gate, ``z_scale`` and ``z_col_scale``
    ignored), per group of ``group_size`` channels
    ``g * (1 / sqrt(mean(g^2) + eps))``, ``* weight``, and with ``rotation = (f0, f1, F_0)`` each row as an
    ``[f0, f1]`` matrix V becomes ``F_0^T V S_f1``. ``dtype=torch.float32`` is the graph's own arithmetic."""
    k, f0, f1, first = check_gated_norm_inputs(y, z, weight, group_size, eps, z_scale, rotation, z_col_scale,
                                               z_row_width)
    g = y.to(dtype)
    if z is not None:
        z = z[..., :k]
        if z_col_scale is not None:
            z = z * z_col_scale
        if z_scale > 0:
            # A tensor scale on z's device: torch divides by a CPU scalar as a product with its reciprocal.
            s = torch.tensor(z_scale, dtype=torch.float32, device=z.device)
            z = ops.quantize(z, s).float() * s
        zd = z.to(dtype)
        g = g * (zd * torch.sigmoid(zd))
    grouped = g.reshape(*g.shape[:-1], k // group_size, group_size)
    eps_t = torch.tensor(eps, dtype=torch.float32, device=y.device).to(dtype)  # the fp32 attribute
    inv = torch.reciprocal(torch.sqrt((grouped * grouped).mean(-1, keepdim=True) + eps_t))
    v = (grouped * inv).reshape(g.shape) * weight.to(dtype)
    return rotate_rows(v, f0, f1, first)


def rotate_rows(v: torch.Tensor, f0: int, f1: int, first) -> torch.Tensor:
    """``v [..., K]`` (K = f0 * f1) with each row as an ``[f0, f1]`` matrix V made ``F_0^T V S_f1`` in v's dtype;
    ``first`` (F_0) is not read when f0 is 1, and f0 = f1 = 1 is no rotation."""
    if f0 == 1 and f1 == 1:
        return v
    m = v.reshape(*v.shape[:-1], f0, f1)
    if f1 > 1:
        m = m @ sylvester(f1, v.dtype, v.device)
    if f0 > 1:
        m = first.to(v.dtype).t() @ m
    return m.reshape(v.shape)
