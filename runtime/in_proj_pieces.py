"""in_proj as one GEMM per piece, its int8 pieces quantized in the GEMM, for TensorRT (``runtime/build.py``
``trt_graph``, ``qmamba build --in-proj-pieces``).

After ``weight_channel_scales`` the prefill graph computes in_proj as one MatMul over all its output columns,
then Splits the fp32 result into z | x | B | C | dt, quantizes x, B, C and dt with their scalar scales and
Concats x, B, C into the conv's input: passes of their own over the [batch x seq, 10 576] fp32 output of a
2.7b layer (with the scales as Muls, H100, L 2048: x's scale 3.4 ms, B, C and dt's 1.1, the quantizations
2.8 and 0.35 of a 69.8 ms prefill, docs/tensorrt.md). Here each run of pieces gets a MatMul of its own over
its rows of the weight:

- pieces that go through one QuantizeLinear each into one Concat (x, B, C), or through one QuantizeLinear
  alone (dt), fold their quantization scale s into the weight's per-channel scale, ``c[n] / s``, and end in
  ``QuantizeLinear(scale 1)``: a GEMM with its output quantized, which TensorRT's explicit quantization can
  run as one int8-output GEMM writing the Concat's (or the QuantizeLinear's) int8 output directly;
- any other piece gets a MatMul that writes its fp32 values under the same name: z, whose Q/DQ pair
  QmambaGatedNorm takes along from the fp32 values (``runtime/prefill_fusion.py``).

Each int8 value is ``round(acc * fp32(c / s))`` instead of ``round(fp32(acc * c) / s)``: the same number
within a few fp32 ulp, so it may differ by one at a rounding tie (``tests/runtime/test_in_proj_pieces.py``
counts how often). The activation is read once per MatMul (int8, [batch x seq, d_model]: a fraction of
what the fp32 output was).
"""
from __future__ import annotations

from .graph_index import GraphIndex, attributes, replace_nodes


def in_proj_pieces(model, notes: dict | None = None):
    """Every ``Split(MatMul(a, Transpose(DequantizeLinear(W, c, axis=0))), sizes, axis=-1)`` with W an int8
    [N, K] initializer, c an fp32 [N] initializer (weight_channel_scales' form), nothing else reading the
    MatMul's output and at least one piece quantized alone (``QuantizeLinear`` of a finite scalar fp32 scale
    > 0 and an int8 zero point 0, the piece's only reader) becomes one MatMul per piece, except that pieces
    whose quantized values go, in order and nowhere else, into one Concat along the last axis share one
    MatMul that writes the Concat's output. How many linears it took: ``notes["in_proj_pieces"]``."""
    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    taken = []
    # One linear at a time, each spliced in before the next is looked for: the graph holds the old and the new
    # weights of one in_proj at once, not of all of them (an 8b model's are some 4 GB).
    while True:
        ix = GraphIndex(g)
        for split in (n for n in g.node if n.op_type == "Split"):
            linear = _channel_scaled_linear(split, ix)
            if linear is None:
                continue
            mm, tr, dq, w_init, c = linear
            sizes = numpy_helper.to_array(ix.inits[split.input[1]]).astype(np.int64).tolist()
            if sum(sizes) != w_init.dims[0] or len(sizes) != len(split.output):
                continue
            runs = _runs(split, sizes, ix)
            if any(r["quantized"] for r in runs):
                break
        else:
            break
        prefix = dq.input[0]
        w = numpy_helper.to_array(w_init)  # only the weight being split is copied
        nodes, drop, new_inits = [], [split, tr, dq], {}
        for k, r in enumerate(runs):
            rows = slice(r["start"], r["end"])
            scale = c[rows]
            if r["quantized"]:
                scale = np.concatenate([np.divide(c[start:end], np.float32(s), dtype=np.float32)
                                        for start, end, s in r["quantized"]])
            w_name, s_name = f"{prefix}.piece{k}", f"{prefix}.piece{k}.channel_scale"
            new_inits[w_name] = numpy_helper.from_array(np.ascontiguousarray(w[rows]), w_name)
            new_inits[s_name] = numpy_helper.from_array(np.ascontiguousarray(scale, np.float32), s_name)
            base = f"{mm.name}/piece{k}"
            nodes += [helper.make_node("DequantizeLinear", [w_name, s_name], [f"{base}.w"], name=f"{base}/dq", axis=0),
                      helper.make_node("Transpose", [f"{base}.w"], [f"{base}.wt"], name=f"{base}/t", perm=[1, 0])]
            if not r["quantized"]:
                nodes.append(helper.make_node("MatMul", [mm.input[0], f"{base}.wt"], [r["output"]], name=base))
                continue
            unit = f"{prefix}.piece_unit_scale"
            new_inits.setdefault(unit, numpy_helper.from_array(np.array(1.0, np.float32), unit))
            nodes += [helper.make_node("MatMul", [mm.input[0], f"{base}.wt"], [f"{base}.acc"], name=base),
                      helper.make_node("QuantizeLinear", [f"{base}.acc", unit, r["zero_point"]], [r["output"]],
                                       name=f"{base}/q")]
            drop += r["nodes"]
        taken.append((mm.name, len(runs), sum(bool(r["quantized"]) for r in runs)))
        del w, w_init, c, linear
        replace_nodes(g, {id(n) for n in drop}, {id(mm): nodes}, new_inits)
    if notes is not None:
        notes["in_proj_pieces"] = (f"{len(taken)} linears as {sum(t[1] for t in taken)} MatMuls, "
                                   f"{sum(t[2] for t in taken)} of them with int8 outputs")
    return model


def _channel_scaled_linear(split, ix: GraphIndex):
    """(MatMul, Transpose, DequantizeLinear, W's initializer, c) of weight_channel_scales' form that the Split alone
    reads, split along the last axis by constant sizes; None otherwise."""
    import numpy as np
    from onnx import TensorProto

    axis = attributes(split).get("axis", 0)
    if axis != -1 or len(split.input) < 2 or split.input[1] not in ix.inits:
        return None
    mm = ix.made_by(split.input[0], "MatMul")
    if mm is None or ix.sole(mm.output[0], "Split") is not split:
        return None
    weight = ix.transposed_weight(mm)
    if weight is None or attributes(weight[1]).get("axis", 1) != 0:
        return None
    tr, dq = weight
    w_init = ix.inits.get(dq.input[0])
    if w_init is None or w_init.data_type != TensorProto.INT8 or len(w_init.dims) != 2:
        return None
    c = ix.constant(dq.input[1])
    if c is None or c.dtype != np.float32 or c.shape != (w_init.dims[0],) or not np.all(np.isfinite(c)):
        return None
    if len(dq.input) > 2 and dq.input[2]:
        zero = ix.constant(dq.input[2])
        if zero is None or np.any(zero != 0):
            return None
    return mm, tr, dq, w_init, c


def _quantized_alone(piece, ix: GraphIndex):
    """(QuantizeLinear, its scale, its zero point's name) when ``piece``'s only reader quantizes it with a
    finite scalar fp32 scale > 0 and an int8 zero point 0 for readers other than a DequantizeLinear; None
    otherwise. (z's quantization is a float Q/DQ pair that QmambaGatedNorm takes along from the fp32 piece;
    int8 out of the GEMM, it would cost a DequantizeLinear pass of its own.)"""
    import numpy as np
    from onnx import TensorProto

    q = ix.sole(piece, "QuantizeLinear")
    if q is None or len(q.input) < 3 or not q.input[2] or "axis" in attributes(q) \
            or any(n.op_type == "DequantizeLinear" for n in ix.consumers.get(q.output[0], [])):
        return None
    s, zero_init = ix.constant(q.input[1]), ix.inits.get(q.input[2])
    if s is None or s.shape != () or s.dtype != np.float32 or not np.isfinite(s) or s <= 0 \
            or zero_init is None or zero_init.data_type != TensorProto.INT8 or np.any(ix.constant(q.input[2]) != 0):
        return None
    return q, float(s), q.input[2]


def _runs(split, sizes, ix: GraphIndex) -> list[dict]:
    """The Split's pieces as runs of rows: a Concat's worth of quantized pieces, one quantized piece, or one
    plain piece. Each: start, end (rows of W), output (the tensor the run's MatMul or QuantizeLinear writes),
    quantized ([(start, end, scale)] of its pieces; empty for a plain piece), zero_point, nodes it replaces."""
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    quant = [_quantized_alone(p, ix) if p not in ix.outputs else None for p in split.output]
    runs, i = [], 0
    while i < len(sizes):
        q = quant[i]
        concat = ix.sole(q[0].output[0], "Concat") if q is not None else None
        if concat is not None and attributes(concat).get("axis") == -1 and concat.input[0] == q[0].output[0]:
            n = len(concat.input)
            members = quant[i:i + n]
            if len(members) == n and all(m is not None and ix.sole(m[0].output[0], "Concat") is concat
                                         and m[0].output[0] == x and m[2] == q[2]
                                         for m, x in zip(members, concat.input)):
                runs.append({"start": starts[i], "end": starts[i] + sum(sizes[i:i + n]), "output": concat.output[0],
                             "quantized": [(starts[j], starts[j] + sizes[j], quant[j][1]) for j in range(i, i + n)],
                             "zero_point": q[2], "nodes": [*(m[0] for m in members), concat]})
                i += n
                continue
        if q is not None and ix.sole(q[0].output[0], "Concat") is None:
            runs.append({"start": starts[i], "end": starts[i] + sizes[i], "output": q[0].output[0],
                         "quantized": [(starts[i], starts[i] + sizes[i], q[1])], "zero_point": q[2], "nodes": [q[0]]})
        else:
            runs.append({"start": starts[i], "end": starts[i] + sizes[i], "output": split.output[i], "quantized": [],
                         "zero_point": None, "nodes": []})
        i += 1
    return runs
