"""The W8A8 linears' per-column output scale moved into their weight's DequantizeLinear, for TensorRT
(``runtime/build.py`` ``trt_graph``, ``qmamba build --weight-channel-scales``).

The exported graph computes a linear as ``Mul(MatMul(DQ(q, 1), Transpose(DQ(W, 1))), c)``, c = fp32(s_in *
s_w[n]) per output column (``export/onnx_layers.quant_linear``: exact integer sums for ONNX Runtime). TensorRT
builds the int8 GEMM from the two DequantizeLinear but runs the Mul as passes of its own over the fp32 output
(in a 2.7b prefill at L 2048 on an H100: in_proj's pieces 3.4 ms for x, 1.1 for B, C and dt; out_proj's scale
with the residual 1.8). With c as the weight's per-channel scale (axis 0 of W [N, K]) TensorRT applies it in
the GEMM's epilogue: ``float(acc) * c[n]``, the same fp32 product as the Mul when the activation's scale is 1.
ONNX Runtime on this graph instead rounds each ``W * c`` before summing (within fp32 rounding of the export);
only the graphs handed to TensorRT are rewritten.
"""
from __future__ import annotations

from .graph_index import GraphIndex, replace_nodes


def weight_channel_scales(model, notes: dict | None = None):
    """Every ``Mul(MatMul(a, Transpose(DequantizeLinear(W, s), perm=[1, 0])), c)`` with W an int8 [N, K]
    initializer, s a scalar fp32 constant, c an fp32 [N] constant (or ``Mul`` of two) and nothing else reading
    the MatMul's output or the transposed weight becomes ``MatMul(a, Transpose(DequantizeLinear(W, s * c,
    axis=0)))`` writing the Mul's output. How many it took goes to ``notes["weight_channel_scales"]``."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    ix = GraphIndex(g)
    dropped, replace, new_inits, taken = set(), {}, {}, []
    for mm in [n for n in g.node if n.op_type == "MatMul"]:
        mul = ix.sole(mm.output[0], "Mul")
        weight = ix.transposed_weight(mm)
        if mul is None or weight is None:
            continue
        _, dq = weight
        w = ix.inits.get(dq.input[0])
        s = ix.constant(dq.input[1])
        zero = ix.constant(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
        scale_name = next((x for x in mul.input if x != mm.output[0]), None)
        c = ix.constant(scale_name) if scale_name is not None and list(mul.input).count(mm.output[0]) == 1 else None
        if w is None or w.data_type != TensorProto.INT8 or len(w.dims) != 2 or s is None or s.shape != () \
                or s.dtype != np.float32 or (zero is not None and np.any(zero != 0)) or c is None \
                or c.dtype != np.float32 or c.shape != (w.dims[0],):
            continue
        name = f"{dq.input[0]}.channel_scale"
        new_inits[name] = numpy_helper.from_array(np.multiply(s, c, dtype=np.float32), name)
        new_dq = helper.make_node("DequantizeLinear", [dq.input[0], name], [dq.output[0]], name=dq.name, axis=0)
        new_mm = helper.make_node("MatMul", list(mm.input), [mul.output[0]], name=mm.name)
        replace[id(dq)], replace[id(mm)] = new_dq, new_mm
        dropped.add(id(mul))
        made = ix.made_by(scale_name, "Mul")
        if made is not None and len(ix.consumers.get(scale_name, [])) == 1:
            dropped.add(id(made))  # the constant product of s_in and s_w, now inside the weight's scale
        taken.append(mm.name)
    if replace:
        replace_nodes(g, dropped, replace, new_inits)
    if notes is not None:
        notes["weight_channel_scales"] = f"in the weights' DequantizeLinear of {len(taken)} linears"
    return model
