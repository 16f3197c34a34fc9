"""The prefill graph with the last position's logits only (``qmamba build --prefill-logits last``).

Generation reads nothing of a prompt's logits but the last row, and for a real vocabulary the rest is
most of the prefill's lm_head work and of what it writes (2.7b, batch 8, L 2048: 16,384 x 50,288 fp32
logits, 3.3 GB); mamba_ssm's ``generate`` asks its model for the last token's logits only
(``num_last_tokens=1``) for the same reason. The rewrite cuts the residual stream to its last
position before ``norm_f``: every op after it works per position, so the one row left is bit for bit
the last row of the full graph's logits. ``logits`` becomes ``[batch, 1, vocab]``, which the runner
reads as it reads the decode graph's. The out-of-range token flag (``flag_bad_token_ids``) is reduced
over the sequence: the row is NaN when any of its ids was outside the vocabulary. The full graph
makes NaN only the flagged position's logits, but the states after a clamped id make every later
logit of the row untrustworthy (docs/onnx.md, "Token ids"), the last one included.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph_index import consumer_map

FLAG = "input_ids.out_of_range"  # [batch, seq, 1] bool, written by the exporter's flag_bad_token_ids


def _norm_input(model: onnx.ModelProto) -> str:
    """The residual stream that enters the final norm: the tensor multiplied by itself in the first node
    of norm_f's RMS (the exporter's ``rms_norm``, whose weight initializer is ``norm_f.weight``)."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    scaled = next((n for n in g.node if n.op_type == "Mul" and "norm_f.weight" in n.input), None)
    if scaled is None:
        raise ValueError("prefill graph: no norm_f (Mul by norm_f.weight) to cut before")
    rms = producer.get(next(i for i in scaled.input if i != "norm_f.weight"))
    if rms is None or rms.op_type != "Mul":
        raise ValueError("prefill graph: norm_f is not the exporter's x * rsqrt(mean(x^2) + eps)")
    return rms.input[0]


def last_position_logits(model: onnx.ModelProto) -> onnx.ModelProto:
    """The prefill graph rewritten to return ``logits [batch, 1, vocab]``, the last position's."""
    g = model.graph
    if not any(o.name == "logits" for o in g.output):
        raise ValueError("prefill graph: no output named logits")
    res = _norm_input(model)
    consumers = consumer_map(g.node)
    if not consumers.get(FLAG):
        raise ValueError(f"prefill graph: no {FLAG} (the out-of-range token flag) to reduce")
    last, any_bad = f"{res}.last", f"{FLAG}.any"
    g.initializer.extend([numpy_helper.from_array(np.array([-1], np.int64), "last_position.start"),
                          numpy_helper.from_array(np.array([np.iinfo(np.int64).max], np.int64), "last_position.end"),
                          numpy_helper.from_array(np.array([1], np.int64), "last_position.axis"),
                          numpy_helper.from_array(np.array(1.0, np.float32), "last_position.one"),
                          numpy_helper.from_array(np.array(0.0, np.float32), "last_position.zero"),
                          numpy_helper.from_array(np.array(0.5, np.float32), "last_position.half")])
    slice_last = helper.make_node("Slice", [res, "last_position.start", "last_position.end", "last_position.axis"],
                                  [last], name=f"{res}.slice_last")
    # Any out-of-range id of the row, as a bool [batch, 1, 1]: bool -> float, max over seq, > 0.5
    # (a Where and a float reduction: what every TensorRT version supports).
    reduce_flag = [
        helper.make_node("Where", [FLAG, "last_position.one", "last_position.zero"], [f"{FLAG}.float"],
                         name=f"{FLAG}.as_float"),
        helper.make_node("ReduceMax", [f"{FLAG}.float"], [f"{FLAG}.any_float"], axes=[1], keepdims=1,
                         name=f"{FLAG}.over_seq"),
        helper.make_node("Greater", [f"{FLAG}.any_float", "last_position.half"], [any_bad], name=any_bad)]
    readers_of_res = {id(n) for n in consumers.get(res, [])}
    readers_of_flag = {id(n) for n in consumers[FLAG]}
    nodes = []  # the new nodes go in where ONNX's order needs them: before their first reader
    for n in g.node:
        if id(n) in readers_of_res:
            n.input[:] = [last if i == res else i for i in n.input]
            if slice_last is not None:
                nodes.append(slice_last)
                slice_last = None
        if id(n) in readers_of_flag:
            n.input[:] = [any_bad if i == FLAG else i for i in n.input]
            nodes += reduce_flag
            reduce_flag = []
        nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    out = next(o for o in g.output if o.name == "logits")
    out.type.tensor_type.shape.dim[1].ClearField("dim_param")
    out.type.tensor_type.shape.dim[1].dim_value = 1
    return model
