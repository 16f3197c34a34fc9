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
``residual`` is 1, then the dense factor ``F_0 [f0, f0]`` of a Hadamard rotation if field ``rotation_first`` (f0)
is above 1. The rotation (fields ``rotation_first`` f0 and ``rotation_last`` f1, K = f0 * f1, with the norm) is
QmambaGatedNorm's form (``runtime/gated_norm.py``): each normed row as an ``[f0, f1]`` matrix V becomes
``F_0^T V S_f1``, ``S_f1`` the normalized Sylvester matrix, which no input carries: out_proj's input
``rotate(norm(x))`` in a model with a rotation before out_proj (``export/hadamard.py``; fused from the graph's
MatMuls by ``fuse_decode_linears`` where the last factor is Sylvester). Output ``y`` fp32 ``[batch, seq, N]``.

``w8a8_linear_ref`` is the kernel's reference twin, in the ONNX graph's order of operations.
"""
from __future__ import annotations

import torch

from ..export import ops
from ..export.validate import QMambaInputError, check_tensor
from .gated_norm import check_rotation, rotate_rows

OP_NAME = "QmambaW8A8Linear"
# (name, type, default) in the order of the plugin's field table (w8a8LinearCore.cpp,
# trt_plugins/w8a8LinearPlugin/README.md).
FIELDS = (("norm", "int", 0), ("eps", "float", 1e-5), ("residual", "int", 0), ("norm_group", "int", 0),
          ("rotation_first", "int", 1), ("rotation_last", "int", 1))
MAX_NORM_GROUPS = 16  # kMaxNormGroups of trt_plugins/kernels/w8a8Linear.cuh


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
    """Shapes and dtypes of the op's inputs (and the norm group, the rotation ``(f0, f1, F_0)``); returns
    (K, N)."""
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
        check_rotation(OP_NAME, k, rotation)
        if norm_weight is None:
            raise QMambaInputError(f"{OP_NAME}: a rotation needs the norm (norm_weight): its pass norms each row")
    return k, n


def one_tie_error(out_scale: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """fp32 ``[N]``: how far y[.., n] moves when one activation lands on the other side of a rounding
    tie (1 LSB times the row's largest |weight|, dequantized): the bound an implementation that sums the
    RMSNorm in another order keeps to. ``weight`` is the int8 ``[N, K]`` matrix."""
    return out_scale * weight.to(torch.int32).abs().amax(dim=1).float()  # int32: |-128| overflows int8


def near_tie_error(v: torch.Tensor, input_scale: torch.Tensor, weight: torch.Tensor, out_scale: torch.Tensor,
                   tol) -> torch.Tensor:
    """fp32 ``[..., N]``: how far y[.., n] may move when its activation ``v [..., K]`` (the twin's, before Q) is
    computed in another order, each value within ``tol`` (broadcast against v) of the twin's: the values within
    tol of a rounding tie of Q may land on either side (1 LSB each), so y moves by at most the sum of their
    |weights| times out_scale (``one_tie_error`` with every near tie counted). ``weight`` is the int8 ``[N, K]``
    matrix."""
    q = v.double() / input_scale.double()
    near = ((q - q.floor() - 0.5).abs() <= torch.as_tensor(tol, dtype=torch.float64) / input_scale.double())
    return ((near.double() @ weight.double().abs().t()) * out_scale.double()).float()


def activation_ref(x, norm_weight=None, eps: float = 1e-5, norm_group: int = 0, rotation=None) -> torch.Tensor:
    """The row that ``w8a8_linear_ref`` quantizes: ``x``, or its RMSNorm ``(x * (1 / sqrt(mean(x^2) + eps))) *
    norm_weight`` (the ONNX graph's ReduceMean, Add, Sqrt, Reciprocal, Mul, Mul) with the mean over groups of
    ``norm_group`` channels (0: the whole row), then with ``rotation = (f0, f1, F_0)`` each row as an ``[f0, f1]``
    matrix V made ``F_0^T V S_f1`` (``gated_norm.rotate_rows``: the graph's two MatMuls); fp32."""
    k = x.shape[-1]
    v = x
    if norm_weight is not None:
        gs = norm_group or k
        xg = x.reshape(*x.shape[:-1], k // gs, gs)
        inv = torch.reciprocal(torch.sqrt((xg * xg).mean(-1, keepdim=True) + torch.tensor(eps, dtype=torch.float32)))
        v = (xg * inv).reshape(x.shape) * norm_weight
    return v if rotation is None else rotate_rows(v, *rotation)


def w8a8_linear_ref(x, weight, out_scale, input_scale, norm_weight=None, eps: float = 1e-5, residual=None,
                    norm_group: int = 0, rotation=None):
    """``y = float(Q(v, input_scale) @ W.T) * out_scale (+ residual)`` with ``v = activation_ref(x, ...)``
    (x, or its RMSNorm, then rotated); fp32 throughout, no fused multiply-add."""
    k, _ = check_linear_inputs(x, weight, out_scale, input_scale, norm_weight, residual, norm_group, rotation)
    q = ops.quantize(activation_ref(x, norm_weight, eps, norm_group, rotation), input_scale)
    acc = (q.double() @ unpack_int8_words(weight, k).double().t()).to(torch.int32)
    y = acc.float() * out_scale
    return y if residual is None else residual + y
