"""QmambaW8A8Linear: the W8A8 linear of a decode step as TensorRT runs it (docs/tensorrt.md).

Not an op of the exported ONNX graphs: ``qmamba build`` puts it in the decode graph in place of each
W8A8 linear (QuantizeLinear -> DequantizeLinear -> MatMul with the int8 weight -> Mul by the output
scale, ``export/onnx_layers.quant_linear``), taking the RMSNorm in front of it and the residual Add
after it along when they are there (``runtime/decode_fusion.py``, ``fuse_decode_linears``). At decode the
activation is one row per batch row, and TensorRT's int8 GEMM read the weights at about a third of
the memory bandwidth; this op is one matrix-vector kernel that reads them once
(``trt_plugins/kernels/w8a8Linear*.cu``).

Inputs: ``x`` fp32 ``[batch, seq, K]``; ``weight`` int32 ``[N, ceil(K/4)]``, the int8 ``[N, K]`` weight
4 per word (``pack_int8_words``: int32 is what TensorRT 8.6 lets a constant reach a float plugin as);
``out_scale`` fp32 ``[N]`` = ``fp32(input_scale * weight_scale)``; ``input_scale`` fp32 ``[]`` or ``[1]``; then
``norm_weight`` fp32 ``[K]`` if field ``norm`` is 1, then ``residual`` fp32 ``[batch, seq, N]`` if field
``residual`` is 1, then the factors of a Hadamard rotation fp32 ``F_0 [f0, f0]``, ``F_1 [f1, f1]`` (K = f0 * f1)
if field ``rotation`` is 2, ``F_0 [K, K]`` if it is 1: out_proj's input ``rotate(norm(x))`` in a model with a
rotation before out_proj (``export/hadamard.py``; fused from the graph's MatMuls by ``fuse_decode_linears``).
Output ``y`` fp32 ``[batch, seq, N]``.

``w8a8_linear_ref`` is the kernel's reference twin, in the ONNX graph's order of operations.
"""
from __future__ import annotations

import torch

from ..export import ops
from ..export.validate import QMambaInputError, check_tensor

OP_NAME = "QmambaW8A8Linear"
# (name, type, default) in the order of the plugin's field table (w8a8LinearCore.cpp,
# trt_plugins/w8a8LinearPlugin/README.md).
FIELDS = (("norm", "int", 0), ("eps", "float", 1e-5), ("residual", "int", 0), ("norm_group", "int", 0),
          ("rotation", "int", 0))
MAX_NORM_GROUPS = 16  # kMaxNormGroups of trt_plugins/kernels/w8a8Linear.cuh
# The rotation pass keeps a normed row and f0 x 16 floats in the 46 KiB of shared memory a block gets
# (rotation_shared_bytes, kSharedLimit of trt_plugins/kernels/w8a8Linear.cuh).
ROTATION_SHARED_LIMIT = 46 * 1024
ROTATION_COLUMNS = 16


def rotation_fits(k: int, f0: int) -> bool:
    """Whether the kernel's rotation pass takes a row of ``k`` channels whose first factor has order ``f0``."""
    return (k + f0 * ROTATION_COLUMNS) * 4 <= ROTATION_SHARED_LIMIT


def pack_int8_words(weight: torch.Tensor) -> torch.Tensor:
    """int8 ``[N, K]`` -> int32 ``[N, ceil(K/4)]``: byte j of word w is column 4w + j (little-endian
    words), the row padded with zeros to a multiple of 4 (zeros add nothing to the sums)."""
    check_tensor(OP_NAME, "weight", weight, torch.int8)
    if weight.dim() != 2:
        raise QMambaInputError(f"{OP_NAME}: weight must be 2-D [N, K], got {list(weight.shape)}")
    n, k = weight.shape
    padded = torch.zeros(n, -(-k // 4) * 4, dtype=torch.int8, device=weight.device)
    padded[:, :k] = weight
    return padded.contiguous().view(torch.int32)


def unpack_int8_words(words: torch.Tensor, in_features: int) -> torch.Tensor:
    """The inverse of ``pack_int8_words``: int8 ``[N, in_features]``."""
    check_tensor(OP_NAME, "weight", words, torch.int32)
    if words.dim() != 2 or words.shape[1] != -(-in_features // 4):
        raise QMambaInputError(f"{OP_NAME}: weight must be int32 [N, {-(-in_features // 4)}] for "
                               f"K = {in_features}, got {list(words.shape)}")
    return words.contiguous().view(torch.int8)[:, :in_features]


def check_linear_inputs(x, weight, out_scale, input_scale, norm_weight=None, residual=None, norm_group: int = 0,
                        rotation=None):
    """Shapes and dtypes of the op's inputs (and the norm group); returns (K, N)."""
    check_tensor(OP_NAME, "x", x, torch.float32, (None, None, None))
    k = x.shape[-1]
    check_tensor(OP_NAME, "weight", weight, torch.int32, (None, -(-k // 4)))
    n = weight.shape[0]
    check_tensor(OP_NAME, "out_scale", out_scale, torch.float32, (n,), finite=True)
    check_tensor(OP_NAME, "input_scale", input_scale, torch.float32, finite=True, positive=True)
    if input_scale.numel() != 1 or input_scale.dim() > 1:
        raise QMambaInputError(f"{OP_NAME}: input_scale must hold one value ([] or [1]), got {list(input_scale.shape)}")
    if norm_weight is not None:
        check_tensor(OP_NAME, "norm_weight", norm_weight, torch.float32, (k,), finite=True)
    if residual is not None:
        check_tensor(OP_NAME, "residual", residual, torch.float32, (x.shape[0], x.shape[1], n))
    if norm_group and (norm_group < 0 or k % norm_group or k // norm_group > MAX_NORM_GROUPS):
        raise QMambaInputError(f"{OP_NAME}: norm_group must be 0 or a divisor of K = {k} giving at most "
                               f"{MAX_NORM_GROUPS} groups, got {norm_group}")
    if rotation is not None:
        if len(rotation) not in (1, 2):
            raise QMambaInputError(f"{OP_NAME}: a rotation has 1 or 2 factors, got {len(rotation)}")
        for i, f in enumerate(rotation):
            check_tensor(OP_NAME, f"rotation factor {i}", f, torch.float32, (None, None), finite=True)
            if f.shape[0] != f.shape[1]:
                raise QMambaInputError(f"{OP_NAME}: rotation factor {i} must be square, got {list(f.shape)}")
        orders = [f.shape[0] for f in rotation]
        if orders[0] * (orders[1] if len(orders) == 2 else 1) != k:
            raise QMambaInputError(f"{OP_NAME}: the rotation's factors of orders {orders} do not make K = {k}")
        if not rotation_fits(k, orders[0] if len(orders) == 2 else 1):
            raise QMambaInputError(f"{OP_NAME}: a rotation of K = {k} channels does not fit the kernel's shared memory")
    return k, n


def rotate_rows(v: torch.Tensor, rotation) -> torch.Tensor:
    """``v`` (last axis K) times ``F_0 (x) F_1``: each row as a [f0, f1] matrix V, ``F_0^T (V F_1)`` (the last
    factor first, as ``export/hadamard.rotate`` applies them); one factor ``F_0``: ``v @ F_0``."""
    if len(rotation) == 1:
        return v @ rotation[0]
    first, last = rotation
    m = v.reshape(*v.shape[:-1], first.shape[0], last.shape[0]) @ last
    return (first.t() @ m).reshape(v.shape)


def one_tie_error(out_scale: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """fp32 ``[N]``: how far y[.., n] moves when one activation lands on the other side of a rounding
    tie (1 LSB times the row's largest |weight|, dequantized): the bound an implementation that sums the
    RMSNorm in another order keeps to. ``weight`` is the int8 ``[N, K]`` matrix."""
    return out_scale * weight.to(torch.int32).abs().amax(dim=1).float()  # int32: |-128| overflows int8


def activation_ref(x, norm_weight=None, eps: float = 1e-5, norm_group: int = 0, rotation=None) -> torch.Tensor:
    """The row that ``w8a8_linear_ref`` quantizes: ``x``, or its RMSNorm ``(x * (1 / sqrt(mean(x^2) + eps))) *
    norm_weight`` (the ONNX graph's ReduceMean, Add, Sqrt, Reciprocal, Mul, Mul) with the mean over groups of
    ``norm_group`` channels (0: the whole row), then ``rotate_rows`` with ``rotation``; fp32."""
    k = x.shape[-1]
    v = x
    if norm_weight is not None:
        gs = norm_group or k
        xg = x.reshape(*x.shape[:-1], k // gs, gs)
        inv = torch.reciprocal(torch.sqrt((xg * xg).mean(-1, keepdim=True) + torch.tensor(eps, dtype=torch.float32)))
        v = (xg * inv).reshape(x.shape) * norm_weight
    return v if rotation is None else rotate_rows(v, rotation)


def w8a8_linear_ref(x, weight, out_scale, input_scale, norm_weight=None, eps: float = 1e-5, residual=None,
                    norm_group: int = 0, rotation=None):
    """``y = float(Q(v, input_scale) @ W.T) * out_scale (+ residual)`` with ``v = activation_ref(x, ...)``
    (x, or its RMSNorm, then rotated); fp32 throughout, no fused multiply-add."""
    k, _ = check_linear_inputs(x, weight, out_scale, input_scale, norm_weight, residual, norm_group, rotation)
    q = ops.quantize(activation_ref(x, norm_weight, eps, norm_group, rotation), input_scale)
    acc = (q.double() @ unpack_int8_words(weight, k).double().t()).to(torch.int32)
    y = acc.float() * out_scale
    return y if residual is None else residual + y
