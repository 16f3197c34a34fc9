"""The prefill graph's gated norms and RMSNorms into QmambaGatedNorm, for ``qmamba build`` (docs/tensorrt.md).

Each mixer of the exported prefill graph computes, between QuantSSD's y and out_proj's QuantizeLinear, the
gated RMSNorm (``export/onnx_layers.gated_rms_norm``: z's QuantizeLinear/DequantizeLinear, the gate
``y * (z' * sigmoid(z'))``, the RMS per norm group, the weight) and, in a model with a Hadamard rotation, the
rotation's Reshape/MatMul steps (``onnx_layers.hadamard``). TensorRT ran them as some fifteen layers a layer,
each a pass over the [batch x seq, d_ssm] fp32 activation, and in_proj's output scale on the z piece (the Mul
``runtime/scale_after_split.py`` puts after the Split) as one more. ``fuse_prefill_gated_norms`` makes each one
QmambaGatedNorm node (``trt_plugins/gatedNormPlugin/``: one kernel that reads y and z once and writes the
rotated row once), and each RMSNorm before in_proj and lm_head (``onnx_layers.rms_norm``, seven nodes) one
such node without a gate, after checking every value the node takes over; a layer that differs in any of them
is left as it is. The node sums in another order than the graph (the mean, the rotation): fp32 rounding apart.
"""
from __future__ import annotations

from .decode_fusion import rms_norm_chain, rotation_chain
from .graph_index import GraphIndex, attributes, replace_nodes

OP_NAME = "QmambaGatedNorm"
# (name, type, default; None: required) in the order of the plugin's field table (gatedNormCore.cpp,
# trt_plugins/gatedNormPlugin/README.md).
FIELDS = (("channels", "int", None), ("group_size", "int", None), ("eps", "float", 1e-5), ("z_scale", "float", 0.0),
          ("rotation_first", "int", 1), ("rotation_last", "int", 1), ("gate", "int", 1), ("z_col_scale", "int", 0),
          ("y_bits", "int", 0), ("z_row_width", "int", 0))
# The kernel's limits (qmamba_gated_norm refuses beyond them): channels a row, order of either rotation factor.
MAX_CHANNELS = 65536
MAX_FACTOR = 128


def fuse_prefill_gated_norms(model, notes: dict | None = None, z_whole_row: bool = False):
    """Every gated norm of the graph that feeds a QuantizeLinear (out_proj's), from QuantSSD's y and the z piece
    (before z's QuantizeLinear) to that QuantizeLinear's input, with the Hadamard rotation between when the model
    has one, becomes one QmambaGatedNorm node: inputs y, z, the norm's weight and, for a dense rotation factor,
    F_0 (an initializer shared by the layers); fields from the graph's constants. Where z's quantized or
    dequantized values have other readers, the Q/DQ pair stays and the node reads z' with z_scale = 0. Where z
    is ``Mul(Split piece, fp32 [K] constant)`` read by nothing else (in_proj's output scale after
    scale_after_split, which runs first), the node reads the piece and the constant (z_col_scale = 1).
    ``z_whole_row``: where the z piece the node reads is the first piece of a Split along the last axis, the node
    reads the Split's input instead, z its first K columns (z_row_width = the row's width): no copy of the piece.
    Every RMSNorm that feeds a QuantizeLinear (in_proj's, lm_head's) becomes one QmambaGatedNorm node with
    gate = 0, group_size = its width and no rotation: inputs x (the residual, which keeps its other readers)
    and the weight.
    A norm whose constants, z quantization or rotation factors differ from what the exporter writes is left as
    it is; ``notes["prefill_gated_norm"]`` says for how many layers and RMSNorms the node went and why not for
    the others."""
    from onnx import helper, numpy_helper

    from qmamba.export import onnx_ops

    g = model.graph
    ix = GraphIndex(g)
    dropped, replace, new_inits, rotations, left, fused = set(), {}, {}, set(), {}, set()
    rms_norms, whole_rows = [], set()
    for x in dict.fromkeys(n.input[0] for n in g.node if n.op_type == "QuantizeLinear"):
        layer = _gated_norm_layer(x, ix)
        if layer is not None:
            name = layer["ssd"].name
            why, fields, f0 = _fields(layer, ix)
            z, fields["z_scale"], taken = _gate_input(layer, ix)
            scaled = _column_scale(z, fields.get("channels"), layer["nodes"] + taken, ix)
            if scaled is not None:  # the unscaled piece and its scale in place of z
                taken = [*taken, scaled]
            inputs = [layer["y"], *([z] if scaled is None else scaled.input), layer["weight"]]
            fields.update(gate=1, z_col_scale=int(scaled is not None))
            row = ix.whole_row(inputs[1]) if z_whole_row else None
            if row is not None:
                inputs[1], fields["z_row_width"] = row
                whole_rows.add(name)
        else:
            layer = _rms_norm(x, ix)
            if layer is None:
                continue
            name = layer["weight"].removesuffix(".weight")
            rms_norms.append(name)
            why, fields, f0 = _fields(layer, ix)
            inputs, taken = [layer["x"], layer["weight"]], []
            fields.update(z_scale=0.0, gate=0, z_col_scale=0)
        if why is None and ({o for n in layer["nodes"] + taken for o in n.output} - {x}) & ix.outputs:
            why = "an intermediate is a graph output"
        if why:
            left[name] = why
            continue
        if f0 is not None:
            init = f"{OP_NAME}.rotation.{fields['channels']}.0"
            new_inits.setdefault(init, numpy_helper.from_array(f0, init))
            inputs.append(init)
        prefix = layer["weight"].removesuffix(".weight")
        node = helper.make_node(OP_NAME, inputs, [x], name=f"{prefix}/{OP_NAME}", domain=onnx_ops.DOMAIN, **fields)
        dropped.update(id(n) for n in layer["nodes"] + taken)
        replace[id(ix.producers[x])] = node
        if fields["gate"]:
            rotations.add(_rotation_text(fields))
        fused.add(name)
    if replace:
        replace_nodes(g, dropped, replace, new_inits)
    if notes is not None:
        ssds = [n.name for n in g.node if n.op_type == "QuantSSD"]
        notes["prefill_gated_norm"] = _note(ssds, rms_norms, fused, rotations, left,
                                            len(whole_rows & fused) if z_whole_row else None)
    return model


def _rms_norm(x, ix: GraphIndex) -> dict | None:
    """The RMSNorm of ``export/onnx_layers.rms_norm`` (one group over the last axis) that makes ``x``, in
    _gated_norm_layer's terms (its input x instead of y and z); None when ``x`` is made otherwise."""
    chain = rms_norm_chain(x, ix)
    if chain is None or chain[4]:  # a group: the RMS of a gated norm whose gate is not the exported one
        return None
    x0, weight, eps, nodes, _ = chain
    return {"x": x0, "weight": weight, "eps": eps, "group": 0, "factors": [], "nodes": nodes}


def _gated_norm_layer(x, ix: GraphIndex) -> dict | None:
    """The gated norm (and rotation) that makes ``x``, matched by its structure: its nodes, QuantSSD and y, the
    gate's z', the norm's weight, eps and group, the rotation's factors (arrays); None when ``x`` is made
    otherwise or a piece has other readers."""
    rotated = rotation_chain(x, ix)
    normed, factors, rot_nodes = rotated if rotated else (x, [], [])
    chain = rms_norm_chain(normed, ix)
    if chain is None:
        return None
    gated, weight, eps, norm_nodes, group = chain
    gate = ix.made_by(gated, "Mul")
    if gate is None or {id(c) for c in ix.consumers.get(gated, [])} - {id(n) for n in norm_nodes}:
        return None
    for y, product in (gate.input, reversed(gate.input)):  # y * (z' * sigmoid(z')), the operands either way
        ssd, inner = ix.made_by(y, "QuantSSD"), ix.made_by(product, "Mul")
        if ssd is not None and inner is not None and ix.sole(product, "Mul") is gate:
            break
    else:
        return None
    sig = next((s for s in (ix.made_by(i, "Sigmoid") for i in inner.input) if s is not None), None)
    if sig is None or ix.sole(sig.output[0], "Mul") is not inner \
            or sorted(inner.input) != sorted([sig.input[0], sig.output[0]]) \
            or ssd.output[0] != y or int(attributes(ssd).get("out_dtype", 1)) != 1:
        return None
    return {"ssd": ssd, "y": y, "z_gate": sig.input[0], "weight": weight, "eps": eps, "group": group,
            "factors": factors, "nodes": [gate, inner, sig, *norm_nodes, *rot_nodes]}


def _fields(layer: dict, ix: GraphIndex):
    """(why the layer is left as it is or None, the node's fields but z_scale, F_0 or None) from the weight,
    eps, group and rotation factors the graph holds."""
    import math

    from onnx import TensorProto

    weight = ix.inits.get(layer["weight"])
    if weight is None or weight.data_type != TensorProto.FLOAT or len(weight.dims) != 1:
        return "the norm's weight is not an fp32 vector", {}, None
    k = int(weight.dims[0])
    group = layer["group"] or k
    if not 1 <= k <= MAX_CHANNELS or k % group:
        why = f"{k} channels in groups of {group} (the kernel takes up to {MAX_CHANNELS}, in groups dividing them)"
        return why, {}, None
    if not (math.isfinite(layer["eps"]) and layer["eps"] >= 0):
        return f"the norm's eps {layer['eps']} is not finite and >= 0", {}, None
    rotation = plugin_rotation(layer["factors"], k)
    if isinstance(rotation, str):
        return rotation, {}, None
    (f0, f1), f0_matrix = rotation
    return None, dict(channels=k, group_size=group, eps=layer["eps"], rotation_first=f0, rotation_last=f1), f0_matrix


def _gate_input(layer: dict, ix: GraphIndex):
    """(the node's z input, z_scale, the Q/DQ nodes it takes over). Where the gate's z' is
    DequantizeLinear(QuantizeLinear(z, s, 0), s) with one finite fp32 scale s > 0 and an int8 zero point 0,
    read by the gate alone: z, s and that pair. Otherwise z' itself, used as is (z_scale 0)."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    def scalar(name, data_type):
        t = ix.inits.get(name)
        return numpy_helper.to_array(t) if t is not None and t.data_type == data_type and not t.dims else None

    z_gate = layer["z_gate"]
    dq = ix.made_by(z_gate, "DequantizeLinear")
    q = dq is not None and ix.made_by(dq.input[0], "QuantizeLinear")
    if not q or len(q.input) != 3 or any(a.name != "axis" for n in (q, dq) for a in n.attribute):
        return z_gate, 0.0, []
    scale, zero, dq_scale = (scalar(q.input[1], TensorProto.FLOAT), scalar(q.input[2], TensorProto.INT8),
                             scalar(dq.input[1], TensorProto.FLOAT))
    dq_zero = scalar(dq.input[2], TensorProto.INT8) if len(dq.input) > 2 and dq.input[2] else np.int8(0)
    exact = scale is not None and dq_scale is not None and np.isfinite(scale) and scale > 0 and zero == 0 \
        and dq_zero == 0 and dq_scale.view(np.uint32) == scale.view(np.uint32)
    gate_only = {id(c) for c in ix.consumers.get(z_gate, [])} <= {id(n) for n in layer["nodes"]} \
        and z_gate not in ix.outputs and ix.sole(q.output[0], "DequantizeLinear") is dq
    if not (exact and gate_only):
        return z_gate, 0.0, []
    return q.input[0], float(scale), [q, dq]


def _column_scale(z, k, readers: list, ix: GraphIndex):
    """The Mul that makes ``z`` as ``Mul(piece of a Split, fp32 [k] constant)`` (operands in that order, as
    scale_after_split writes it), read by ``readers`` alone and no graph output; None otherwise. The node then
    makes the same IEEE product of each element with its column's scale."""
    from onnx import TensorProto

    mul = ix.made_by(z, "Mul")
    if mul is None or k is None or z in ix.outputs \
            or {id(c) for c in ix.consumers.get(z, [])} - {id(n) for n in readers}:
        return None
    piece, scale = mul.input
    t = ix.inits.get(scale)
    if ix.made_by(piece, "Split") is None or t is None or t.data_type != TensorProto.FLOAT or list(t.dims) != [k]:
        return None
    return mul


def sylvester(f: int):
    """The normalized Sylvester matrix of order f (a power of two) in natural order, fp32: entries
    fp32(+-1 / sqrt(f))."""
    import numpy as np

    s = np.ones((1, 1))
    while s.shape[0] < f:
        s = np.block([[s, s], [s, -s]])
    return (s / np.sqrt(f)).astype(np.float32)


def plugin_rotation(factors: list, k: int):
    """((f0, f1), F_0 or None) for the rotation's factors (the graph's arrays), or why they are not
    ``export/hadamard.rotation_factors_fp32(k)`` bit for bit with a Sylvester last factor."""
    import numpy as np

    from qmamba.export import hadamard

    if not factors:
        return (1, 1), None

    def same(a, b):
        return a.dtype == b.dtype == np.float32 and a.shape == b.shape and np.array_equal(a.view(np.uint32),
                                                                                        b.view(np.uint32))

    want = [f.numpy() for f in hadamard.rotation_factors_fp32(k)] if hadamard.is_supported_size(k) else []
    if len(want) != len(factors) or not all(same(a, b) for a, b in zip(factors, want)):
        return f"its rotation's factors are not export/hadamard.py's rotation_factors_fp32({k})"
    last = factors[-1].shape[0]
    is_sylvester = last & (last - 1) == 0 and last <= MAX_FACTOR and same(factors[-1], sylvester(last))
    if len(factors) == 2 and is_sylvester and factors[0].shape[0] <= MAX_FACTOR:
        return (factors[0].shape[0], last), np.ascontiguousarray(factors[0])
    if len(factors) == 1 and is_sylvester:
        return (1, k), None
    if len(factors) == 1 and k <= MAX_FACTOR:
        return (k, 1), np.ascontiguousarray(factors[0])
    return (f"its rotation's factors of orders {[f.shape[0] for f in factors]} are not a dense one of order <= "
            f"{MAX_FACTOR} and a Sylvester one")


def _rotation_text(fields: dict) -> str:
    f0, f1 = fields["rotation_first"], fields["rotation_last"]
    if f0 > 1 and f1 > 1:
        return f"Hadamard {f0} x {f1}"
    return f"Hadamard {f0 * f1}" if f0 * f1 > 1 else "no rotation"


def _note(ssds: list, rms_norms: list, fused: set, rotations: set, left: dict, whole_rows: int | None) -> str:
    """What ``qmamba build`` prints: in how many of the layers (QuantSSD nodes) the node went, their rotation,
    in how many z came from in_proj's whole rows (when asked), in how many of the RMSNorms it found, and why the
    others were left as graph ops."""
    text = f"{OP_NAME} in {len(fused & set(ssds))} of {len(ssds)} layers"
    if rotations:
        text += f" ({', '.join(sorted(rotations))})"
    if whole_rows is not None:
        text += f", z from in_proj's whole rows in {whole_rows}"
    if rms_norms:
        text += f" and {len(fused & set(rms_norms))} of {len(rms_norms)} RMSNorms"
    reasons = [f"{name}: {left.get(name, 'its gated norm is not the exported pattern')}"
               for name in ssds + rms_norms if name not in fused]
    return text + ("; left as graph ops: " + "; ".join(reasons) if reasons else "")
