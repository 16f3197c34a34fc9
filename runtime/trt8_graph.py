"""The Q/DQ rewrites TensorRT's explicit quantization asks of the exported graphs (docs/tensorrt.md).

Each rewrite is exact: the rewritten graph computes the same values as the exported one.
``explicit_zero_points`` and ``float_fake_quant`` run for every TensorRT (found on 8.6; kept for 10+,
where they cost nothing); ``qdq_plugin_edges`` and ``bits_as_float_outputs`` only for TensorRT 8,
whose rules for int8 tensors at a plugin they meet. ``runtime/build.py`` (``trt_graph``) applies them.
"""
from __future__ import annotations

from .graph_index import consumer_map


def explicit_zero_points(model):
    """Gives every DequantizeLinear of an int8 tensor an explicit zero point (zeros shaped like its
    scale). ONNX allows leaving it out; TensorRT 8.6's parser does not (it reads input 2 and fails
    with "vector::_M_range_check"). Same values, so the model means the same."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    int8_names = {t.name for t in g.initializer if t.data_type == onnx.TensorProto.INT8}
    int8_names |= {vi.name for vi in list(g.input) + list(g.value_info)
                   if vi.type.tensor_type.elem_type == onnx.TensorProto.INT8}
    for n in g.node:  # int8 outputs of QuantizeLinear with an int8 zero point
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in int8_names:
            int8_names.add(n.output[0])
    added = {}
    for n in g.node:
        if n.op_type != "DequantizeLinear" or len(n.input) > 2 or n.input[0] not in int8_names:
            continue
        scale = n.input[1]
        shape = tuple(inits[scale].dims) if scale in inits else ()
        name = f"{scale}.int8_zero_point"
        if name not in added:
            added[name] = numpy_helper.from_array(np.zeros(shape, np.int8), name)
        n.input.append(name)
    g.initializer.extend(added.values())
    return model


# Which inputs of each custom op are int8 (docs/ops.md; QmambaInProjConv: trt_plugins/inProjConvPlugin/README.md);
# every output is int8 except QuantSSD's y (0).
PLUGIN_INT8_INPUTS = {"QuantConv1dSiLU": {0, 1, 2, 8}, "QuantSSD": {0, 1, 2, 3, 13}, "QmambaInProjConv": {1, 2}}
PLUGIN_FLOAT_OUTPUTS = {"QuantSSD": {0}}


def qdq_plugin_edges(model):
    """Every int8 input of a plugin node comes straight from a QuantizeLinear, and every int8 output
    goes straight into a DequantizeLinear, through exact DequantizeLinear/QuantizeLinear pairs of scale 1
    and zero point 0. TensorRT 8.6's explicit-quantization builder refuses int8 between two plugins and
    int8 network inputs or outputs at a plugin ("All of the candidates were removed, which points to
    the node being incorrectly marked as an int8 node") and builds them with such a pair between
    (NVIDIA/TensorRT#3055). Each plugin output gets one pair, which then also
    serves a plugin that reads it. An int8 input made by a Concat of QuantizeLinear outputs (xBC, whose
    x, B and C have their own scales) is concatenated as the integer values in float instead: a
    DequantizeLinear of scale 1 on each piece, the Concat, then a QuantizeLinear of scale 1."""
    from onnx import helper

    from qmamba.export import onnx_ops

    g = model.graph
    onnx_ops.add_shared_initializers(g)
    unit, zero = onnx_ops.UNIT_SCALE, onnx_ops.INT8_ZERO

    def dq(x, y):
        return helper.make_node("DequantizeLinear", [x, unit, zero], [y], name=f"{y}/DequantizeLinear")

    def q(x, y):
        return helper.make_node("QuantizeLinear", [x, unit, zero], [y], name=f"{y}/QuantizeLinear")

    # Outputs first: a plugin's int8 output leaves through DQ -> Q under its own name, so a plugin
    # reading it reads a QuantizeLinear.
    nodes = []
    for n in g.node:
        nodes.append(n)
        if n.op_type not in PLUGIN_INT8_INPUTS:
            continue
        for i, name in enumerate(n.output):
            if i in PLUGIN_FLOAT_OUTPUTS.get(n.op_type, ()) or not name:
                continue
            n.output[i] = f"{name}.trt_raw"
            nodes += [dq(n.output[i], f"{name}.trt_dq_out"), q(f"{name}.trt_dq_out", name)]
    producers = {o: n for n in nodes for o in n.output}
    consumers = consumer_map(nodes)
    out = []
    for n in nodes:
        if n.op_type in PLUGIN_INT8_INPUTS:
            for i, name in enumerate(n.input):
                p = producers.get(name)
                if i not in PLUGIN_INT8_INPUTS[n.op_type] or not name or (p is not None and p.op_type == "QuantizeLinear"):
                    continue
                pieces = list(p.input) if p is not None and p.op_type == "Concat" else []
                if pieces and all(producers.get(x) is not None and producers[x].op_type == "QuantizeLinear"
                                  for x in pieces) and len(consumers[name]) == 1:
                    # Concat in float of the pieces' integer values, then Q(1) into the plugin.
                    floats = [f"{x}.trt_dq.{p.name}" for x in pieces]
                    out[out.index(p):out.index(p)] = [dq(x, f) for x, f in zip(pieces, floats)]
                    del p.input[:]
                    p.input.extend(floats)
                    p.output[0] = f"{name}.trt_float"
                    out.append(q(p.output[0], name))
                    continue
                out += [dq(name, f"{name}.trt_dq.{n.name}"), q(f"{name}.trt_dq.{n.name}", f"{name}.trt_q.{n.name}")]
                n.input[i] = f"{name}.trt_q.{n.name}"
        out.append(n)
    del g.node[:]
    g.node.extend(out)
    return model


# Ops for which TensorRT needs the Q/DQ pair in front of them (int8 GEMMs) or that are qmamba's plugins.
QDQ_CONSUMERS = {"MatMul", "Gemm", "Conv", "QuantizeLinear", *PLUGIN_INT8_INPUTS}
INT8_MIN, INT8_MAX = "qmamba.int8_min", "qmamba.int8_max"


def float_fake_quant(model):
    """A QuantizeLinear whose int8 values only come back as floats (DequantizeLinear into float ops,
    e.g. the gate z of the gated norm) is computed in float: ``Mul(Clip(Round(Div(x, s)), -128, 127), s)``,
    what ``DequantizeLinear(QuantizeLinear(x, s), s)`` means (Round is round-half-to-even, as
    QuantizeLinear's rounding). TensorRT 8.6 fuses such a pair into the float op that follows and there
    mishandles the value -128: on the H100, Sigmoid of a dequantized -128 came out near sigmoid(+128 s)
    (one saturated z element moved the decode logits by 14 %)."""
    import numpy as np
    from onnx import helper, numpy_helper

    from qmamba.export import onnx_ops

    g = model.graph
    consumers = consumer_map(g.node)
    outputs = {o.name for o in g.output}

    def float_only(dq):
        return dq.op_type == "DequantizeLinear" and dq.output[0] not in outputs and all(
            c.op_type not in QDQ_CONSUMERS for c in consumers.get(dq.output[0], []))

    onnx_ops.add_shared_initializers(g, [numpy_helper.from_array(np.array(v, np.float32), name)
                                         for name, v in ((INT8_MIN, -128.0), (INT8_MAX, 127.0))])
    out, dropped = [], set()
    for n in g.node:
        if id(n) in dropped:
            continue
        users = consumers.get(n.output[0], []) if n.op_type == "QuantizeLinear" else []
        if not users or n.output[0] in outputs or not all(float_only(u) for u in users) \
                or any(list(u.input[1:2]) != list(n.input[1:2]) for u in users):
            out.append(n)
            continue
        x, scale, q = n.input[0], n.input[1], n.output[0]
        out += [helper.make_node("Div", [x, scale], [f"{q}.scaled"], name=f"{q}/Div"),
                helper.make_node("Round", [f"{q}.scaled"], [f"{q}.rounded"], name=f"{q}/Round"),
                helper.make_node("Clip", [f"{q}.rounded", INT8_MIN, INT8_MAX], [f"{q}.int8_valued"],
                                 name=f"{q}/Clip")]
        for i, u in enumerate(users):
            dropped.add(id(u))
            out.append(helper.make_node("Mul", [f"{q}.int8_valued", scale], [u.output[0]], name=f"{q}/Mul.{i}"))
    del g.node[:]
    g.node.extend(out)
    return model


def bits_as_float_outputs(model):
    """QuantSSD's y as TensorRT 8 gets it: the V2 plugin hands y to TensorRT as int32 words holding its
    bytes (TensorRT 8.6 accepts no float output from a plugin fed by QuantizeLinear;
    trt_plugins/common/pluginV2Adapter.h), so a QmambaBitsAsFloat node after each QuantSSD turns them
    back into y (field ``to`` = the node's out_dtype) for y's consumers. Exact: the same bytes. Where y is
    fp32 and its only reader is a QmambaGatedNorm (prefill_fusion), that node reads the words itself
    (field ``y_bits`` = 1) and no copy is made."""
    from onnx import helper

    g = model.graph
    readers = consumer_map(g.node)
    graph_outputs = {o.name for o in g.output}
    nodes = []
    for n in g.node:
        nodes.append(n)
        for i in sorted(PLUGIN_FLOAT_OUTPUTS.get(n.op_type, ())):  # QuantSSD's y
            out_dtype = next((a.i for a in n.attribute if a.name == "out_dtype"), 1)
            y = n.output[i]
            n.output[i] = f"{y}.trt_bits"
            users = readers.get(y, [])
            if out_dtype == 1 and len(users) == 1 and _reads_bits(users[0], y) and y not in graph_outputs:
                users[0].input[0] = n.output[i]
                users[0].attribute.append(helper.make_attribute("y_bits", 1))
                continue
            nodes.append(helper.make_node("QmambaBitsAsFloat", [n.output[i]], [y], name=f"{y}/bits_as_float",
                                          domain=n.domain, to=out_dtype))
    del g.node[:]
    g.node.extend(nodes)
    return model


def _reads_bits(node, y: str) -> bool:
    """Whether ``node`` is a QmambaGatedNorm that reads y as its input 0 only (and has no y_bits yet)."""
    return (node.op_type == "QmambaGatedNorm" and list(node.input).count(y) == 1 and node.input[0] == y
            and all(a.name != "y_bits" for a in node.attribute))
