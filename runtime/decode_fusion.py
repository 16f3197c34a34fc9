"""The decode graph's fusions into qmamba's decode plugins, for ``qmamba build`` (docs/tensorrt.md).

``fuse_decode_linears``: every W8A8 linear (with the RMSNorm before it and the residual Add after it)
-> one QmambaW8A8Linear node (``runtime/w8a8_linear.py``). ``fuse_decode_mixers``: every mixer from
in_proj's output to the gated norm's gate -> one QmambaDecodeMixer node (``runtime/decode_mixer.py``).
Both match the exported patterns exactly (``runtime/graph_index.py``) and leave anything else as it is.
"""
from __future__ import annotations

from .graph_index import GraphIndex, attributes, replace_nodes

# The decode engine's linears become QmambaW8A8Linear when its batch range ends at or below this: on the
# H200 (2.7b-shaped, 8 layers, TensorRT 8.6, tensor cores from three rows) a step with the plugin
# took 0.1731 / 0.2553 / 0.3906 / 0.5857 / 1.0972 ms at batch 1 / 2 / 4 / 8 / 16, with TensorRT's int8 GEMM
# 0.8265 (8) and 1.1461 (16) (docs/tensorrt.md). Above 16 the plugin makes another pass over the weights per
# 8 rows: in engines whose range ends at 32 it took 2.1262 ms at batch 32 against the GEMM's 1.5108, so the
# GEMM takes those.
LINEAR_PLUGIN_MAX_BATCH = 16
DECODE_LINEAR_CHOICES = ("auto", "plugin", "tensorrt")
DECODE_MIXER_CHOICES = ("plugin", "tensorrt")


def decode_linear_plugin(choice: str, max_batch: int) -> bool:
    """Whether the decode engine's linears run as QmambaW8A8Linear (``--decode-linear``)."""
    if choice not in DECODE_LINEAR_CHOICES:
        raise ValueError(f"build: decode_linear must be one of {DECODE_LINEAR_CHOICES}, got {choice!r}")
    return choice == "plugin" or (choice == "auto" and max_batch <= LINEAR_PLUGIN_MAX_BATCH)


def rms_norm_chain(x, ix: GraphIndex):
    """The RMSNorm of ``export/onnx_layers.rms_norm`` that makes ``x`` (Mul(Mul(x0, inv), w) with
    inv = Reciprocal(Sqrt(Add(ReduceMean(Mul(x0, x0)), eps))) over the last axis, eps one fp32 value), as (x0,
    weight, eps, its nodes, norm group); None when ``x`` is made otherwise or a piece has other readers. The gated
    norm's RMS (``onnx_layers.gated_rms_norm``: the same over Reshape(x0, [0, 0, -1, group]), reshaped
    back before the weight) is found too, with its group size; a plain RMSNorm has group 0."""
    import numpy as np
    from onnx import numpy_helper

    def only(name, op):
        """The ``op`` that makes ``name``, if ``name`` has no other reader."""
        n = ix.made_by(name, op)
        return n if n is not None and len(ix.consumers.get(name, [])) == 1 else None

    mul_w = only(x, "Mul")
    back = mul_w and only(mul_w.input[0], "Reshape")  # the gated norm's [.., groups, group] -> [.., d]
    mul_inv = mul_w and only((back or mul_w).input[0], "Mul")
    recip = mul_inv and only(mul_inv.input[1], "Reciprocal")
    sqrt = recip and only(recip.input[0], "Sqrt")
    add = sqrt and only(sqrt.input[0], "Add")
    mean = add and only(add.input[0], "ReduceMean")
    square = mean and only(mean.input[0], "Mul")
    if not square or mul_w.input[1] not in ix.inits or add.input[1] not in ix.inits:
        return None
    x0 = mul_inv.input[0]
    axes = next((list(a.ints) for a in mean.attribute if a.name == "axes"), None)
    keep = next((a.i for a in mean.attribute if a.name == "keepdims"), 1)
    eps = numpy_helper.to_array(ix.inits[add.input[1]])
    if list(square.input) != [x0, x0] or axes != [-1] or keep != 1 or len(mean.input) != 1 \
            or eps.dtype != np.float32 or eps.size != 1:
        return None
    eps = float(eps.reshape(()))
    nodes, group = [square, mean, add, sqrt, recip, mul_inv, mul_w], 0
    if back is not None:
        split = ix.producers.get(x0)
        shape_in = split is not None and split.op_type == "Reshape" and ix.inits.get(split.input[1])
        shape_out = ix.inits.get(back.input[1])
        if not shape_in or shape_out is None:
            return None
        want_in, want_out = numpy_helper.to_array(shape_in), numpy_helper.to_array(shape_out)
        if len(want_in) != 4 or list(want_in[:3]) != [0, 0, -1] or want_in[3] < 1 \
                or not np.array_equal(want_out, [0, 0, -1]) \
                or {id(c) for c in ix.consumers.get(x0, [])} != {id(square), id(mul_inv)}:
            return None
        x0, group = split.input[0], int(want_in[3])
        nodes += [split, back]
    return x0, mul_w.input[1], eps, nodes, group


def rotation_chain(x, ix: GraphIndex):
    """The Hadamard rotation of ``export/onnx_layers.hadamard`` that makes ``x``: one MatMul by the
    factor, or Reshape -> MatMul(., F_1) -> Reshape -> MatMul(F_0^T, .) -> Reshape for two factors, as
    (its input, [F_0, F_1] as arrays, its nodes); None when ``x`` is made otherwise, a piece has other
    readers, or the rotation has more than two factors."""
    import numpy as np
    from onnx import numpy_helper

    def only(name, op):
        n = ix.made_by(name, op)
        return n if n is not None and len(ix.consumers.get(name, [])) == 1 else None

    def init(name):
        return numpy_helper.to_array(ix.inits[name]) if name in ix.inits else None

    def square(a):
        return a is not None and a.ndim == 2 and a.shape[0] == a.shape[1] and a.dtype == np.float32

    one = only(x, "MatMul")
    if one is not None and one.input[0] not in ix.inits and square(init(one.input[1])):
        return one.input[0], [init(one.input[1])], [one]
    back = only(x, "Reshape")
    first = back and only(back.input[0], "MatMul")  # F_0^T @ [.., f0, f1]
    split0 = first and only(first.input[1], "Reshape")
    last = split0 and only(split0.input[0], "MatMul")  # [.., f0, f1] @ F_1
    split1 = last and only(last.input[0], "Reshape")
    if not split1:
        return None
    f0t, f1 = init(first.input[0]), init(last.input[1])
    shapes = [init(n.input[1]) for n in (split1, split0, back)]
    if not (square(f0t) and square(f1)) or any(a is None for a in shapes):
        return None
    k = f0t.shape[0] * f1.shape[0]
    if not (list(shapes[0]) == list(shapes[1]) == [0, 0, f0t.shape[0], f1.shape[0]] and list(shapes[2]) == [0, 0, k]):
        return None
    return split1.input[0], [np.ascontiguousarray(f0t.T), f1], [split1, last, split0, first, back]


def fuse_decode_linears(model, notes: dict | None = None, rotation_pass: bool = False):
    """Every W8A8 linear of the graph (``export/onnx_layers.quant_linear``: QuantizeLinear ->
    DequantizeLinear(1) -> MatMul with Transpose(DequantizeLinear(1, int8 weight)) -> Mul by
    Mul(input_scale, weight_scale)) becomes one QmambaW8A8Linear node (runtime/w8a8_linear.py), taking
    along the RMSNorm that feeds it (norm = 1) and a residual Add after it (residual = 1). The weight
    becomes an int32 initializer ``<weight>.words`` of the same bytes. Exact but for the RMSNorm's
    order of summation (as TensorRT's own ReduceMean). For decode graphs: a matrix-vector kernel.
    out_proj takes the gated norm's RMS and weight along (norm = 1 with ``norm_group``), and the Hadamard
    rotation between them when the model has one (fields ``rotation_first`` and ``rotation_last``, the dense
    factor F_0 as an input: the rotation pass is QmambaGatedNorm's kernel without a gate, so the factors must be
    what ``prefill_fusion.plugin_rotation`` accepts, a Sylvester last one; otherwise the rotation stays the
    graph's); the gate itself is QmambaDecodeMixer's (fuse_decode_mixers). The rotation goes into the linear
    with ``rotation_pass`` (``qmamba build``'s default: a decode step 1.56x faster at batch 1 on an H100,
    docs/tensorrt.md); without it the norm and MatMuls stay and out_proj reads their output. Where the graph
    has a rotation, ``notes["decode_rotation"]`` says which path it took."""
    import numpy as np
    import onnx
    import torch
    from onnx import helper, numpy_helper

    from qmamba.export import onnx_ops

    from .prefill_fusion import plugin_rotation  # here: prefill_fusion imports this module
    from .w8a8_linear import FIELDS as LINEAR_FIELDS, OP_NAME, pack_int8_words

    g = model.graph
    ix = GraphIndex(g)
    inits, producers, consumers, sole = ix.inits, ix.producers, ix.consumers, ix.sole

    def unit_dq(name):
        n = ix.made_by(name, "DequantizeLinear")
        return n if n is not None and n.input[1] == onnx_ops.UNIT_SCALE else None

    dropped, replace, new_inits, rotation_path = set(), {}, {}, None
    for mm in [n for n in g.node if n.op_type == "MatMul"]:
        dq_x, weight = unit_dq(mm.input[0]), ix.transposed_weight(mm)
        q = dq_x and producers.get(dq_x.input[0])
        tr, dq_w = weight or (None, None)
        scale_mul = sole(mm.output[0], "Mul")
        if not (q is not None and q.op_type == "QuantizeLinear" and dq_w is not None
                and dq_w.input[1] == onnx_ops.UNIT_SCALE and scale_mul
                and dq_w.input[0] in inits and inits[dq_w.input[0]].data_type == onnx.TensorProto.INT8
                and sole(q.output[0], "DequantizeLinear") and sole(dq_x.output[0], "MatMul")):
            continue
        out_scale = scale_mul.input[1] if scale_mul.input[0] == mm.output[0] else scale_mul.input[0]
        x, s_in, w = q.input[0], q.input[1], dq_w.input[0]
        nodes = [q, dq_x, dq_w, tr, mm, scale_mul]
        scale_of = producers.get(out_scale)
        if scale_of is not None and scale_of.op_type == "Mul" and all(i in inits for i in scale_of.input) \
                and len(consumers[out_scale]) == 1:
            # fp32(input_scale * weight_scale) as a constant (the same IEEE product the Mul gives), so
            # that no elementwise layer runs for it at each step.
            a, b = (numpy_helper.to_array(inits[i]) for i in scale_of.input)
            out_scale = f"{w}.out_scale"
            new_inits[out_scale] = numpy_helper.from_array((a * b).astype(np.float32), out_scale)
            nodes.append(scale_of)
        # every field, defaults included: TensorRT's ONNX parser warns for each field a node leaves out
        extra, attrs = [], {name: default for name, _, default in LINEAR_FIELDS}
        rotated = rotation_chain(x, ix) if sole(x, "QuantizeLinear") else None
        first = None
        if rotated:
            gate, mats, rot_nodes = rotated
            chain = rms_norm_chain(gate, ix)
            form = plugin_rotation(mats, int(np.prod([m.shape[0] for m in mats])))
            if not rotation_pass:
                rotation_path = "TensorRT MatMuls (--no-decode-rotation-pass)"
                chain = None
            elif not chain:
                rotation_path = "TensorRT MatMuls (no gated norm before the rotation)"
            elif isinstance(form, str):
                rotation_path = f"TensorRT MatMuls ({form})"
                chain = None
            else:
                (f0, f1), first = form
                nodes += rot_nodes
                attrs.update(rotation_first=f0, rotation_last=f1)
                rotation_path = f"QmambaW8A8Linear (rotation_first = {f0}, rotation_last = {f1})"
        else:
            chain = rms_norm_chain(x, ix) if sole(x, "QuantizeLinear") else None
        if chain:
            x, norm_weight, eps, norm_nodes, group = chain
            nodes += norm_nodes
            extra.append(norm_weight)
            attrs.update(norm=1, eps=eps)
            if group:
                attrs["norm_group"] = group
        out, last = scale_mul.output[0], scale_mul
        add = sole(out, "Add")
        if add is not None:
            extra.append(add.input[1] if add.input[0] == out else add.input[0])
            attrs["residual"] = 1
            out, last = add.output[0], add
            nodes.append(add)
        if first is not None:  # shared by the layers: one initializer
            name = f"{OP_NAME}.rotation.{first.shape[0]}.0"
            new_inits.setdefault(name, numpy_helper.from_array(first, name))
            extra.append(name)
        words = f"{w}.words"
        new_inits[words] = numpy_helper.from_array(
            pack_int8_words(torch.from_numpy(numpy_helper.to_array(inits[w]).copy())).numpy(), words)
        if s_in in inits and not inits[s_in].dims:  # as [1]: no 0-d tensor into a TensorRT 8 plugin
            s_vec = f"{s_in}.vec"
            new_inits[s_vec] = numpy_helper.from_array(numpy_helper.to_array(inits[s_in]).reshape(1), s_vec)
            s_in = s_vec
        fused = helper.make_node(OP_NAME, [x, words, out_scale, s_in, *extra], [out], name=f"{out}/{OP_NAME}",
                                 domain=onnx_ops.DOMAIN, **attrs)
        dropped.update(id(n) for n in nodes)
        replace[id(last)] = fused
    replace_nodes(g, dropped, replace, new_inits)
    if notes is not None and rotation_path:
        notes["decode_rotation"] = rotation_path
    return model


def fuse_decode_mixers(model) -> tuple[object, str]:
    """Every decode mixer of the graph, from the Split of in_proj's output to the gate of the gated norm
    (``export/onnx_export._mixer``: Split -> QuantizeLinear of z, x, B, C, dt -> Concat(xBC) ->
    QuantConv1dSiLU -> QuantSSD -> y * (z' * sigmoid(z')), z' = DequantizeLinear(z_q)), becomes one
    QmambaDecodeMixer node (runtime/decode_mixer.py). Its int8 constants (conv weight, bias) become int32
    initializers of the same bytes, and the layer's states become int32 network inputs and outputs
    ``[.., last / 4]`` of the same bytes (no int8 tensor is left at the plugin, so TensorRT 8.6's Q/DQ
    rules need no pairs around it). Exact: the kernel computes the ops' own arithmetic.

    Returns (model, what ran): a graph it cannot fuse (no decode state, sizes not a multiple of 4, a
    piece read elsewhere, scales that differ between the pieces) is left as it is, and the text says why."""
    import numpy as np
    import onnx
    import torch
    from onnx import helper, numpy_helper

    from qmamba.export import onnx_ops

    from .decode_mixer import CONV_SCALES, OP_NAME, flat_int8_words

    g = model.graph
    ix = GraphIndex(g)
    inits, consumers, made_by, sole = ix.inits, ix.consumers, ix.made_by, ix.sole
    graph_io = {vi.name: vi for vi in [*g.input, *g.output]}

    def scalar(name):
        return np.float32(numpy_helper.to_array(inits[name])) if name in inits and not inits[name].dims else None

    def int8_init(name):
        """The int8 initializer behind onnx_ops.constant_int8_input's DQ(1) -> Q(1) pass nodes."""
        q = made_by(name, "QuantizeLinear")
        dq = q is not None and made_by(q.input[0], "DequantizeLinear")
        if not dq or dq.input[0] not in inits or inits[dq.input[0]].data_type != onnx.TensorProto.INT8 \
                or len(consumers.get(name, [])) != 1 or len(consumers.get(q.input[0], [])) != 1:
            return None
        return dq.input[0], [q, dq]

    convs = [n for n in g.node if n.op_type == "QuantConv1dSiLU"]
    if not convs:
        return model, "no QuantConv1dSiLU in the graph"
    dropped, replace, new_inits, words_io = set(), {}, {}, {}
    for conv in convs:
        why = None
        ca = attributes(conv)
        ssd = sole(conv.output[0], "QuantSSD")
        cat = made_by(conv.input[0], "Concat")
        qs = [made_by(x, "QuantizeLinear") for x in cat.input] if cat is not None and len(cat.input) == 3 else []
        split = made_by(qs[0].input[0], "Split") if qs and all(qs) else None
        if len(conv.input) < 9 or not conv.input[8] or ssd is None or split is None or len(split.output) != 5:
            return model, f"{conv.name}: not the exported decode mixer (no conv state, or no Split/Concat/QuantSSD)"
        sa = attributes(ssd)
        h, p, n, ngr = (int(ca[k]) for k in ("nheads", "headdim", "d_state", "ngroups"))
        conv_dim = h * p + 2 * ngr * n
        weight, bias = int8_init(conv.input[1]), int8_init(conv.input[2])
        q_z, q_dt = sole(split.output[0], "QuantizeLinear"), sole(split.output[4], "QuantizeLinear")
        dq_z = q_z is not None and sole(q_z.output[0], "DequantizeLinear")
        z_users = consumers.get(dq_z.output[0], []) if dq_z else []
        sig = next((u for u in z_users if u.op_type == "Sigmoid"), None)
        gate = next((u for u in z_users if u.op_type == "Mul"), None)
        out = sole(ssd.output[0], "Mul")
        if conv_dim % 4 or n % 4:
            why = f"conv_dim {conv_dim} or d_state {n} is not a multiple of 4 (states travel as int32 words)"
        elif not (weight and bias and q_z and q_dt and dq_z and sig and gate and out) or len(z_users) != 2 \
                or sorted(gate.input) != sorted([dq_z.output[0], sig.output[0]]) or sole(sig.output[0], "Mul") is not gate \
                or sole(gate.output[0], "Mul") is not out or ssd.input[1] != q_dt.output[0] \
                or list(ssd.input[2:4]) != list(conv.output[1:3]) or len(ssd.input) < 14 or not ssd.input[13] \
                or list(ssd.input[7:12]) != list(conv.input[3:8]) or int(sa.get("out_dtype", 1)) != 1:
            why = "its pieces are not the exported pattern (or are read elsewhere)"
        elif any(scalar(q.input[1]) != np.float32(ca[k]) for q, k in zip(qs, ("x_scale", "B_scale", "C_scale"))) \
                or scalar(q_dt.input[1]) != np.float32(sa["dt_scale"]) or scalar(q_z.input[1]) is None \
                or dq_z.input[1] != q_z.input[1]:
            why = "the segments' QuantizeLinear scales differ from the ops' attributes"
        elif any(len(consumers.get(o, [])) != 1 for o in [*split.output, *(q.output[0] for q in qs), cat.output[0],
                                                           *conv.output[:3]]):
            why = "an intermediate is read elsewhere"
        if why:
            return model, f"{conv.name}: {why}"
        K = int(inits[weight[0]].dims[1])
        packed = []
        for (name, _) in (weight, bias):
            words = f"{name}.words"
            new_inits[words] = numpy_helper.from_array(
                flat_int8_words(torch.from_numpy(numpy_helper.to_array(inits[name]).copy())).numpy(), words)
            packed.append(words)
        state_in, state_out = [conv.input[8], ssd.input[13]], [conv.output[3], ssd.output[1]]
        for name in state_in + state_out:
            if name not in graph_io:
                return model, f"{conv.name}: state {name} is not a network input or output"
            words_io[name] = graph_io[name]
        fields = {k: float(ca[k]) for k in CONV_SCALES}
        fields.update(ngroups=ngr, nheads=h, headdim=p, d_state=n, d_conv=K, z_scale=float(scalar(q_z.input[1])),
                      dt_scale=float(sa["dt_scale"]), dt_min=float(sa.get("dt_min", 0.0)),
                      dt_max=float(sa.get("dt_max", float("inf"))))
        inputs = [split.input[0], *packed, *conv.input[3:8], *ssd.input[4:7], ssd.input[12], *state_in]
        node = helper.make_node(OP_NAME, inputs, [out.output[0], *state_out], name=f"{conv.name}/{OP_NAME}",
                                domain=onnx_ops.DOMAIN, **fields)
        pieces = [split, *qs, cat, q_z, dq_z, sig, gate, q_dt, conv, ssd, out, *weight[1], *bias[1]]
        dropped.update(id(x) for x in pieces)
        replace[id(out)] = node
    for vi in words_io.values():  # int8 [.., m] -> int32 [.., m / 4], the same bytes
        t = vi.type.tensor_type
        t.elem_type = onnx.TensorProto.INT32
        last = t.shape.dim[len(t.shape.dim) - 1]
        last.dim_value = last.dim_value // 4
    replace_nodes(g, dropped, replace, new_inits)
    return model, f"{OP_NAME} ({len(convs)} layers)"
