"""The prefill graph's xBC quantization and QuantConv1dSiLU into QmambaInProjConv, for ``qmamba build
--fuse-in-proj-split`` (docs/tensorrt.md, trt_plugins/inProjConvPlugin/README.md).

Each mixer of the exported prefill graph splits in_proj's fp32 output into z | x | B | C | dt, quantizes the x, B
and C pieces (after ``scale_after_split``, each piece is first multiplied by its slice of in_proj's output scale;
with ``--weight-channel-scales`` the scale is in the GEMM and the piece is quantized as it is), concatenates the
three int8 pieces and hands them to QuantConv1dSiLU. TensorRT 8.6 runs the Muls, the QuantizeLinear and the Concat
as passes of their own over in_proj's output. ``fuse_in_proj_convs`` makes the conv one QmambaInProjConv node that
reads in_proj's output itself (the Split's input) with the three scales as one ``[conv_dim]`` constant, and drops
what only the conv read. The node computes the same values (``runtime/in_proj_conv.py``): bit for bit but where
QuantConv1dSiLU's implementations may differ.
"""
from __future__ import annotations

from .graph_index import GraphIndex, attributes, replace_nodes
from .in_proj_conv import FIELDS, OP_NAME

# The conv's input scale attribute of each piece of xBC, in order.
PIECE_SCALES = ("x_scale", "B_scale", "C_scale")
CONV_FIELDS = tuple(name for name, _, _ in FIELDS[:13])


def fuse_in_proj_convs(model, notes: dict | None = None):
    """Every QuantConv1dSiLU without a conv_state whose xBC is ``Concat(QuantizeLinear(piece_i [* c_i], s_i))`` of
    the x, B and C pieces of one Split of a float tensor along its last axis (consecutive outputs, widths d_ssm, gn,
    gn; scales s_i equal to the conv's x_scale, B_scale, C_scale; int8 zero points 0; c_i fp32 constants of the
    piece's width) becomes a QmambaInProjConv node reading the Split's input, xbc_offset the width before x, and
    the concatenated c_i as input col_scale (ones for a piece without one) when any piece has one. The Concat,
    QuantizeLinear and Muls go when nothing else reads them. ``notes["in_proj_conv"]`` says for how many layers
    the node went and why not for the others."""
    import numpy as np
    from onnx import helper, numpy_helper

    from qmamba.export import onnx_ops

    g = model.graph
    ix = GraphIndex(g)
    dropped, replace, new_inits, left = set(), {}, {}, {}
    convs = [n for n in g.node if n.op_type == "QuantConv1dSiLU"]
    for conv in convs:
        match = _xbc_source(conv, ix)
        if isinstance(match, str):
            left[conv.name] = match
            continue
        source, offset, cols, taken = match
        fields = {k: attributes(conv)[k] for k in CONV_FIELDS}
        inputs = [source, *conv.input[1:8]]
        if any(c is not None for c in cols):
            widths = _widths(fields)
            parts = [c if c is not None else np.ones(w, np.float32) for c, w in zip(cols, widths)]
            init = f"{conv.name}.{OP_NAME}.col_scale"
            new_inits[init] = numpy_helper.from_array(np.concatenate(parts).astype(np.float32), init)
            inputs.append(init)
        fields.update(xbc_offset=offset, col_scale=int(len(inputs) == 9))
        node = helper.make_node(OP_NAME, inputs, list(conv.output), name=f"{conv.name}/{OP_NAME}",
                                domain=onnx_ops.DOMAIN, **fields)
        dropped.update(id(n) for n in taken)
        replace[id(conv)] = node
    if replace:
        replace_nodes(g, dropped, replace, new_inits)
    if notes is not None:
        notes["in_proj_conv"] = _note(len(convs), left)
    return model


def _widths(fields: dict) -> tuple[int, int, int]:
    d_ssm = int(fields["nheads"]) * int(fields["headdim"])
    gn = int(fields["ngroups"]) * int(fields["d_state"])
    return d_ssm, gn, gn


def _xbc_source(conv, ix: GraphIndex):
    """(in_proj's output, xbc_offset, [c_x, c_B, c_C] (None: no Mul), the nodes only the conv read) when the conv's
    xBC is made as fuse_in_proj_convs describes, else why not (a short text)."""
    import numpy as np

    if len(conv.input) > 8 and conv.input[8]:
        return "a conv_state input"
    missing = [k for k in CONV_FIELDS if k not in attributes(conv)]
    if missing:
        return f"the conv has no {missing[0]}"
    concat = ix.made_by(conv.input[0], "Concat")
    if concat is None or len(concat.input) != 3 or ix.sole(concat.output[0], "QuantConv1dSiLU") is not conv \
            or int(attributes(concat).get("axis", 0)) not in (-1, 2):
        return "xBC is not a Concat of three pieces along the channels read by the conv alone"
    attrs = attributes(conv)
    pieces, cols, taken = [], [], [concat]
    for q_name, scale_attr, width in zip(concat.input, PIECE_SCALES, _widths(attrs)):
        q = ix.made_by(q_name, "QuantizeLinear")
        if q is None or ix.sole(q.output[0], "Concat") is not concat:
            return "a piece of xBC is not a QuantizeLinear read by the Concat alone"
        scale = ix.constant(q.input[1])
        zero = ix.constant(q.input[2]) if len(q.input) > 2 and q.input[2] else None
        if scale is None or scale.dtype != np.float32 or scale.size != 1 \
                or np.float32(scale.reshape(())) != np.float32(attrs[scale_attr]) \
                or zero is None or zero.dtype != np.int8 or zero.size != 1 or int(zero.reshape(())) != 0:
            return (f"the QuantizeLinear before {scale_attr[0]} is not of the conv's {scale_attr} with an int8 zero "
                    "point 0")
        taken.append(q)
        piece, col = q.input[0], None
        mul = ix.made_by(piece, "Mul")
        if mul is not None:
            if ix.sole(mul.output[0], "QuantizeLinear") is not q:
                return "a piece's scale Mul has other readers"
            consts = [(i, ix.constant(i)) for i in mul.input]
            known = [(i, c) for i, c in consts if c is not None and c.dtype == np.float32 and c.shape == (width,)]
            if len(known) != 1:
                return "a piece's Mul is not by an fp32 constant of its width"
            piece = next(i for i in mul.input if i != known[0][0])
            col = known[0][1]
            taken.append(mul)
        pieces.append(piece)
        cols.append(col)
    split = ix.producers.get(pieces[0])
    if split is None or split.op_type != "Split" or any(ix.producers.get(p) is not split for p in pieces):
        return "x, B and C are not pieces of one Split"
    outs = list(split.output)
    k = outs.index(pieces[0])
    sizes = ix.split_sizes(split)
    if pieces != outs[k:k + 3] or sizes is None or tuple(sizes[k:k + 3]) != _widths(attrs) \
            or int(attributes(split).get("axis", 0)) not in (-1, 2):
        return "x, B and C are not consecutive pieces of the widths the conv takes along the last axis"
    return split.input[0], int(sum(sizes[:k])), cols, taken


def _note(total: int, left: dict) -> str:
    text = f"{OP_NAME} in {total - len(left)} of {total} layers"
    if left:
        reasons = sorted(set(left.values()))
        text += "; left as they are: " + "; ".join(f"{sum(v == r for v in left.values())} ({r})" for r in reasons)
    return text
