"""Standard-ONNX pieces of a W8A8 Mamba2 graph, each the ONNX twin of one method of
``qmamba.export.quant_modules`` / ``qmixer`` (their docstrings state the math followed here).

- W8A8 linear: ``QuantizeLinear -> DequantizeLinear`` on the activation and ``DequantizeLinear``
  on the int8 weight around ``MatMul`` (the Q/DQ pattern TensorRT turns into an INT8 GEMM), with
  unit DQ scales and the output scale applied after the MatMul, so that the result is the exact
  integer accumulation of the reference times its fp32 output scale (see ``quant_linear``).
- Embedding: per-row ``DequantizeLinear`` of the int8 table, then ``Gather`` of the ids clamped
  to ``[0, vocab)``; ``flag_bad_token_ids`` turns the logits of an out-of-range id into NaN.
- RMSNorm, gated RMSNorm, Hadamard rotation (``MatMul`` by each of its Kronecker factors): plain fp32 ops.

``GraphBuilder`` collects nodes and initializers; an initializer is added once by name, so a
tensor used by several nodes (a layer's group scales feed both custom ops) is stored once.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import hadamard as had
from .onnx_ops import INT8_ZERO, UNIT_SCALE

# The one initializer that holds NaN on purpose: the logits of an out-of-range token id.
NAN_LOGITS = "token_id.nan_logits"


class GraphBuilder:
    """Nodes and initializers of one graph, with unique names for intermediate tensors."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        # The weights as arrays (views of the model's tensors where they can be): TensorProtos are made
        # one at a time as they go into the model (``add_initializers_to``), so a model's weights are
        # not held two or three times over while a graph of several GB is built.
        self.arrays: dict[str, np.ndarray] = {}
        self._count = 0

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}.{self._count}"

    def op(self, op_type: str, *inputs: str, out: str | None = None, outputs=None,
           domain: str = "", **attrs) -> str:
        """Adds one node; returns its (first) output name."""
        outs = outputs or [out or self.fresh(op_type.lower())]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs,
                                           name=f"{outs[0]}/{op_type}", domain=domain, **attrs))
        return outs[0]

    def add_node(self, node: onnx.NodeProto) -> None:
        self.nodes.append(node)

    def initializer(self, name: str, array) -> str:
        """Adds ``array`` as initializer ``name`` once; a second add must hold the same bits."""
        array = np.asarray(array)  # keeps 0-d scalars 0-d
        if not array.flags.c_contiguous:
            array = np.array(array, order="C")
        if name in self.arrays:
            old = self.arrays[name]
            if old.dtype != array.dtype or old.shape != array.shape or old.tobytes() != array.tobytes():
                raise ValueError(f"initializer {name}: added twice with different values")
            return name
        self.arrays[name] = array
        return name

    def add_initializers_to(self, graph: onnx.GraphProto) -> None:
        """Appends every initializer to ``graph``, each TensorProto made just before it is copied in."""
        for name, array in self.arrays.items():
            graph.initializer.append(numpy_helper.from_array(array, name))

    def const(self, value, dtype=np.float32, name: str | None = None) -> str:
        arr = np.asarray(value, dtype=dtype)
        key = name or f"const.{arr.dtype}.{'_'.join(map(str, arr.shape))}.{arr.tobytes().hex()}"
        return self.initializer(key, arr)


def _np(t) -> np.ndarray:
    """A torch tensor or array as numpy (scales keep their exact fp32 bits)."""
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def quantize(b: GraphBuilder, x: str, scale: str, out: str | None = None) -> str:
    """``Q(x, scale)`` (docs/ops.md) as QuantizeLinear with an int8 zero point of 0."""
    return b.op("QuantizeLinear", x, scale, b.initializer(INT8_ZERO, np.array(0, np.int8)), out=out)


def dequantize(b: GraphBuilder, q: str, scale: str, axis: int | None = None) -> str:
    attrs = {} if axis is None else {"axis": axis}
    return b.op("DequantizeLinear", q, scale, **attrs)


def quant_linear(b: GraphBuilder, x: str, prefix: str, module, out: str | None = None) -> str:
    """``QuantLinear`` on the fp32 activation ``x``, as the reference computes it:
    ``float(int32(Q(x, s_in)) @ int32(W).T) * fp32(s_in * s_w[row])``.

    ONNX: ``QuantizeLinear(x, s_in)``, then ``DequantizeLinear`` with scale 1 of both the int8
    activation and the int8 weight, ``MatMul`` (an INT8 GEMM for TensorRT; in fp32 the integer
    products and sums are exact while partial sums stay below 2^24, which real activations do
    by orders of magnitude), then ``Mul`` by the per-column ``s_in * s_w`` computed in the graph
    from the two stored scales. Dequantizing with the real scales before the MatMul would round
    every product and sum instead, and those roundings flip int8 ties in the layers that follow.

    Initializers: ``{prefix}.input_scale`` (scalar), ``{prefix}.weight`` (int8 ``[out, in]``, as
    in PyTorch; transposed in the graph), ``{prefix}.weight_scale`` (fp32 ``[out]``).
    """
    s_in = b.initializer(f"{prefix}.input_scale", _np(module.input_scale))
    q = quantize(b, x, s_in, out=f"{prefix}.input_q")
    w = b.initializer(f"{prefix}.weight", _np(module.weight))
    s_w = b.initializer(f"{prefix}.weight_scale", _np(module.weight_scale))
    unit = b.initializer(UNIT_SCALE, np.array(1.0, np.float32))
    w_t = b.op("Transpose", dequantize(b, w, unit), perm=[1, 0])
    acc = b.op("MatMul", dequantize(b, q, unit), w_t)
    return b.op("Mul", acc, b.op("Mul", s_in, s_w), out=out)


def _clamped_ids(b: GraphBuilder, ids: str, vocab: int) -> str:
    """``min(max(ids, 0), vocab - 1)``: Gather wraps negative ids (-1 reads the last row) and
    fails on ids >= vocab, so it only ever sees valid rows; ``flag_bad_token_ids`` reports the rest.
    Max/Min rather than Clip: TensorRT runs elementwise Max/Min on integer tensors."""
    low = b.op("Max", ids, b.const(0, np.int64, name="token_id.min"))
    return b.op("Min", low, b.const(vocab - 1, np.int64, name="token_id.max"), out=f"{ids}.clamped")


def embedding(b: GraphBuilder, ids: str, prefix: str, module) -> str:
    """``QuantEmbedding``: ``float(W[ids]) * scale[ids]`` = Gather of the per-row dequantized table,
    at the ids clamped to the table (see ``flag_bad_token_ids``)."""
    w = b.initializer(f"{prefix}.weight", _np(module.weight))
    s = b.initializer(f"{prefix}.scale", _np(module.scale))
    clamped = _clamped_ids(b, ids, int(module.weight.shape[0]))
    return b.op("Gather", dequantize(b, w, s, axis=0), clamped, axis=0, out=f"{prefix}.out")


def flag_bad_token_ids(b: GraphBuilder, logits: str, ids: str, vocab: int, out: str) -> str:
    """``Where(ids < 0 or ids >= vocab, NaN, logits)`` over the last axis: the logits of a token
    position whose id is outside the vocabulary are all NaN, every other row is ``logits`` bit for
    bit. Applied to the final fp32 logits, after the last Q/DQ, so that no quantization step can
    round the NaN away; the states of such a position are those of the clamped id, so later logits
    of the row are not trustworthy either (docs/onnx.md, "Token ids")."""
    too_low = b.op("Less", ids, b.const(0, np.int64, name="token_id.min"))
    too_high = b.op("Greater", ids, b.const(vocab - 1, np.int64, name="token_id.max"))
    bad = b.op("Unsqueeze", b.op("Or", too_low, too_high), b.const([-1], np.int64),
               out=f"{ids}.out_of_range")
    return b.op("Where", bad, b.const(np.nan, np.float32, name=NAN_LOGITS), logits, out=out)


def _rms(b: GraphBuilder, x: str, eps: float) -> str:
    """``x * rsqrt(mean(x^2, -1) + eps)`` (rsqrt as Reciprocal(Sqrt), both standard ops)."""
    ms = b.op("ReduceMean", b.op("Mul", x, x), axes=[-1], keepdims=1)
    inv = b.op("Reciprocal", b.op("Sqrt", b.op("Add", ms, b.const(eps))))
    return b.op("Mul", x, inv)


def rms_norm(b: GraphBuilder, x: str, prefix: str, module, out: str | None = None) -> str:
    """``QuantRMSNorm``: ``res * rsqrt(mean(res^2) + eps) * weight`` in fp32."""
    w = b.initializer(f"{prefix}.weight", _np(module.weight))
    return b.op("Mul", _rms(b, x, module.eps), w, out=out)


def gated_rms_norm(b: GraphBuilder, y: str, z: str, prefix: str, module) -> str:
    """``QuantGatedRMSNorm``: ``g = y * z * sigmoid(z)``; RMS per group of ``group_size``; ``* w``."""
    g = b.op("Mul", y, b.op("Mul", z, b.op("Sigmoid", z)))
    grouped = b.op("Reshape", g, b.const([0, 0, -1, module.group_size], np.int64))
    normed = b.op("Reshape", _rms(b, grouped, module.eps), b.const([0, 0, -1], np.int64))
    w = b.initializer(f"{prefix}.weight", _np(module.weight))
    return b.op("Mul", normed, w)


def hadamard(b: GraphBuilder, x: str, n: int) -> str:
    """``x @ R`` for the orthogonal Hadamard rotation R of order n, as ``hadamard.rotate`` computes it: x
    reshaped to ``[batch, seq, pre, f_i, post]`` (axes of 1 left out) and multiplied by each Kronecker factor ``F_i`` along its
    axis, the last first (``x @ F_k``, then ``F_i^T @ x``). The factors are initializers
    ``hadamard.<n>.<i>``, shared by the layers."""
    sizes, factors = had.rotation_sizes(n), had.rotation_factors_fp32(n)
    if len(sizes) == 1:  # one factor: the matrix itself (order 128 at most, or a base order)
        return b.op("MatMul", x, b.initializer(f"hadamard.{n}.0", factors[0].numpy()))
    for i in reversed(range(len(sizes))):
        pre, post, f = math.prod(sizes[:i]), math.prod(sizes[i + 1:]), factors[i].numpy()
        shape = [0, 0, *([pre] if pre > 1 else []), sizes[i], *([post] if post > 1 else [])]
        x = b.op("Reshape", x, b.const(shape, np.int64))
        if post == 1:
            x = b.op("MatMul", x, b.initializer(f"hadamard.{n}.{i}", f))
        else:
            x = b.op("MatMul", b.initializer(f"hadamard.{n}.{i}.T", np.ascontiguousarray(f.T)), x)
    return b.op("Reshape", x, b.const([0, 0, n], np.int64))
