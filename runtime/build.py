"""``qmamba build DIR -o ENGINES``: the ONNX pair of ``qmamba export`` -> TensorRT engines.

ENGINES gets prefill.engine and decode.engine (each with a ``.json`` of what it was built with and
for: TensorRT, plugin library, GPU, profile, checked when it is loaded) and qmamba_engines.json (the
model config, state layout and the bytes a decode step must read, for ``qmamba bench``).

The prefill engine's profile covers ``--batch`` and ``--seq``; the decode engine's covers ``--batch``
with one token per row. TensorRT's Python API builds when it is importable, else the C++ runner
(libqmamba_runner.so) does; ``--backend`` picks one explicitly.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from . import trt_runner

ENGINES_METADATA = "qmamba_engines.json"
ONNX_METADATA = "qmamba_onnx.json"


def _range(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(v) for v in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected MIN,OPT,MAX (three integers), got {text!r}")
    return parts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("onnx_dir", metavar="DIR", help="output directory of `qmamba export`")
    parser.add_argument("-o", "--out", required=True, metavar="ENGINES", help="engine directory to write")
    parser.add_argument("--batch", type=_range, default=(1, 1, 8), metavar="MIN,OPT,MAX",
                        help="batch range of both engines (default 1,1,8)")
    parser.add_argument("--seq", type=_range, default=(1, 128, 2048), metavar="MIN,OPT,MAX",
                        help="prompt length range of the prefill engine (default 1,128,2048)")
    parser.add_argument("--plugins", metavar="LIB", help="libqmamba_trt_plugins.so (default: the built one)")
    parser.add_argument("--fp16", action="store_true", help="allow fp16 kernels for the float parts (TensorRT 8)")
    parser.add_argument("--no-tactic-libraries", action="store_true",
                        help="no cuBLAS/cuDNN tactics (a TensorRT staged without those libraries)")
    parser.add_argument("--backend", choices=("auto", "python", "cpp"), default="auto",
                        help="TensorRT's Python API or the C++ runner (auto: Python if importable)")
    parser.add_argument("--keep-onnx", action="store_true",
                        help="keep the graphs given to TensorRT (prefill.trt.onnx, decode.trt.onnx) beside the "
                             "engines, e.g. for trtexec with TensorRT 8")
    parser.add_argument("--force", action="store_true", help="overwrite existing engines")
    parser.add_argument("--decode-linear", choices=DECODE_LINEAR_CHOICES, default="auto",
                        help="the decode engine's W8A8 linears: qmamba's matrix-vector plugin QmambaW8A8Linear "
                             f"or TensorRT's int8 MatMul (auto: the plugin up to batch {LINEAR_PLUGIN_MAX_BATCH})")
    parser.add_argument("--decode-mixer", choices=DECODE_MIXER_CHOICES, default="plugin",
                        help="each decode mixer (in_proj's output to the gated norm) as one QmambaDecodeMixer "
                             "node, its states as int32 words (plugin), or as the exported ops (tensorrt)")


def _read_onnx_metadata(onnx_dir: Path) -> dict:
    meta_path = onnx_dir / ONNX_METADATA
    if not meta_path.is_file():
        raise FileNotFoundError(f"{onnx_dir}: no {ONNX_METADATA} (not a `qmamba export` directory)")
    meta = json.loads(meta_path.read_text())
    for kind in ("prefill", "decode"):
        f = onnx_dir / meta["graphs"][kind]["file"]
        if not f.is_file():
            raise FileNotFoundError(f"{onnx_dir}: {f.name} is missing")
    return meta


def decode_bytes(meta: dict, onnx_path: Path) -> dict:
    """What a decode step must move: every weight once, and per batch row the states read and written."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    weight_bytes = 0
    for t in model.graph.initializer:
        n = 1
        for d in t.dims:
            n *= d
        weight_bytes += n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    state_row = 0
    for s in meta["states"]:
        for k in ("conv_state", "ssm_state"):
            n = 1
            for d in s[k]["shape"][1:]:
                n *= int(d)
            state_row += n  # int8
    return {"weight_bytes": weight_bytes, "state_bytes_per_row": state_row}


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


# Which inputs of each custom op are int8 (docs/ops.md); every output is int8 except QuantSSD's y (0).
PLUGIN_INT8_INPUTS = {"QuantConv1dSiLU": {0, 1, 2, 8}, "QuantSSD": {0, 1, 2, 3, 13}}
PLUGIN_FLOAT_OUTPUTS = {"QuantSSD": {0}}


def _consumers(nodes) -> dict[str, list]:
    """Tensor name -> the nodes that read it."""
    out = {}
    for n in nodes:
        for x in n.input:
            out.setdefault(x, []).append(n)
    return out


def qdq_plugin_edges(model):
    """Every int8 input of a plugin node comes straight from a QuantizeLinear, and every int8 output
    goes straight into a DequantizeLinear, through exact DequantizeLinear/QuantizeLinear pairs of scale 1
    and zero point 0. TensorRT 8.6's explicit-quantization builder refuses int8 between two plugins and
    int8 network inputs or outputs at a plugin ("All of the candidates were removed, which points to
    the node being incorrectly marked as an int8 node") and builds them with such a pair between
    (scripts/trt86_probe.py; NVIDIA/TensorRT#3055). Each plugin output gets one pair, which then also
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
    consumers = _consumers(nodes)
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
_QDQ_CONSUMERS = {"MatMul", "Gemm", "Conv", "QuantizeLinear", *PLUGIN_INT8_INPUTS}
INT8_MIN, INT8_MAX = "qmamba.int8_min", "qmamba.int8_max"


def float_fake_quant(model):
    """A QuantizeLinear whose int8 values only come back as floats (DequantizeLinear into float ops,
    e.g. the gate z of the gated norm) is computed in float: ``Mul(Clip(Round(Div(x, s)), -128, 127), s)``,
    what ``DequantizeLinear(QuantizeLinear(x, s), s)`` means (Round is round-half-to-even, as
    QuantizeLinear's rounding). TensorRT 8.6 fuses such a pair into the float op that follows and there
    mishandles the value -128: on the H100, Sigmoid of a dequantized -128 came out near sigmoid(+128 s)
    (scripts/trt_bisect.py found it; one saturated z element moved the decode logits by 14 %)."""
    import numpy as np
    from onnx import helper, numpy_helper

    from qmamba.export import onnx_ops

    g = model.graph
    consumers = _consumers(g.node)
    outputs = {o.name for o in g.output}

    def float_only(dq):
        return dq.op_type == "DequantizeLinear" and dq.output[0] not in outputs and all(
            c.op_type not in _QDQ_CONSUMERS for c in consumers.get(dq.output[0], []))

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
    back into y (field ``to`` = the node's out_dtype) for y's consumers. Exact: the same bytes."""
    from onnx import helper

    g = model.graph
    nodes = []
    for n in g.node:
        nodes.append(n)
        for i in sorted(PLUGIN_FLOAT_OUTPUTS.get(n.op_type, ())):  # QuantSSD's y
            out_dtype = next((a.i for a in n.attribute if a.name == "out_dtype"), 1)
            y = n.output[i]
            n.output[i] = f"{y}.trt_bits"
            nodes.append(helper.make_node("QmambaBitsAsFloat", [n.output[i]], [y], name=f"{y}/bits_as_float",
                                          domain=n.domain, to=out_dtype))
    del g.node[:]
    g.node.extend(nodes)
    return model


# The decode engine's linears become QmambaW8A8Linear when its batch range ends at or below this: on the
# H200 (2.7b-shaped, 8 layers, TensorRT 8.6, one session, tensor cores from three rows) a step with the plugin
# took 0.1731 / 0.2553 / 0.3906 / 0.5857 / 1.0972 ms at batch 1 / 2 / 4 / 8 / 16, with TensorRT's int8 GEMM
# 0.8265 (8) and 1.1461 (16) (docs/tensorrt.md). Above 16 the plugin makes another pass over the weights per
# 8 rows: in engines whose range ends at 32 it took 2.1262 ms at batch 32 against the GEMM's 1.5108, so the
# GEMM takes those.
LINEAR_PLUGIN_MAX_BATCH = 16
DECODE_LINEAR_CHOICES = ("auto", "plugin", "tensorrt")


def _replace_nodes(g, dropped: set, replace: dict, new_inits: dict) -> None:
    """The graph with the nodes whose id() is in ``dropped`` removed, except those in ``replace``, which
    give way to their fused node; ``new_inits`` added; initializers and value_info nothing uses dropped."""
    kept = [replace.get(id(n), n) for n in g.node if id(n) not in dropped or id(n) in replace]
    del g.node[:]
    g.node.extend(kept)
    g.initializer.extend(new_inits.values())
    used = {i for n in g.node for i in n.input}
    keep_inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep_inits)
    made = used | {o for n in g.node for o in n.output}
    keep_info = [vi for vi in g.value_info if vi.name in made]
    del g.value_info[:]
    g.value_info.extend(keep_info)


class _GraphIndex:
    """Who makes and who reads each tensor of a graph: what the decode rewrites match their patterns with."""

    def __init__(self, g):
        self.inits = {t.name: t for t in g.initializer}
        self.producers = {o: n for n in g.node for o in n.output}
        self.consumers = _consumers(g.node)
        self.outputs = {o.name for o in g.output}

    def made_by(self, name, op):
        """The node that makes ``name``, if it is an ``op``."""
        n = self.producers.get(name)
        return n if n is not None and n.op_type == op else None

    def sole(self, name, op):
        """The one node that reads ``name``, if it is an ``op`` and ``name`` is not a graph output."""
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op and name not in self.outputs else None


def _rms_norm_chain(x, ix: _GraphIndex):
    """The RMSNorm of ``export/onnx_layers.rms_norm`` that makes ``x`` (Mul(Mul(x0, inv), w) with
    inv = Reciprocal(Sqrt(Add(ReduceMean(Mul(x0, x0)), eps))) over the last axis), as (x0, weight, eps,
    its nodes, norm group); None when ``x`` is made otherwise or a piece has other readers. The gated
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
    if list(square.input) != [x0, x0] or axes != [-1] or keep != 1 or len(mean.input) != 1:
        return None
    eps = float(numpy_helper.to_array(ix.inits[add.input[1]]))
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


def fuse_decode_linears(model):
    """Every W8A8 linear of the graph (``export/onnx_layers.quant_linear``: QuantizeLinear ->
    DequantizeLinear(1) -> MatMul with Transpose(DequantizeLinear(1, int8 weight)) -> Mul by
    Mul(input_scale, weight_scale)) becomes one QmambaW8A8Linear node (runtime/w8a8_linear.py), taking
    along the RMSNorm that feeds it (norm = 1) and a residual Add after it (residual = 1). The weight
    becomes an int32 initializer ``<weight>.words`` of the same bytes. Exact but for the RMSNorm's
    order of summation (as TensorRT's own ReduceMean). For decode graphs: a matrix-vector kernel.
    out_proj takes the gated norm's RMS and weight along (norm = 1 with ``norm_group``) when no Hadamard
    rotation sits between; the gate itself is QmambaDecodeMixer's (fuse_decode_mixers)."""
    import numpy as np
    import onnx
    import torch
    from onnx import helper, numpy_helper

    from qmamba.export import onnx_ops

    from .w8a8_linear import OP_NAME, pack_int8_words

    g = model.graph
    ix = _GraphIndex(g)
    inits, producers, consumers, sole = ix.inits, ix.producers, ix.consumers, ix.sole

    def unit_dq(name):
        n = ix.made_by(name, "DequantizeLinear")
        return n if n is not None and n.input[1] == onnx_ops.UNIT_SCALE else None

    dropped, replace, new_inits = set(), {}, {}
    for mm in [n for n in g.node if n.op_type == "MatMul"]:
        dq_x, tr = unit_dq(mm.input[0]), producers.get(mm.input[1])
        q = dq_x and producers.get(dq_x.input[0])
        dq_w = tr is not None and tr.op_type == "Transpose" and unit_dq(tr.input[0])
        perm = tr is not None and next((list(a.ints) for a in tr.attribute if a.name == "perm"), None)
        scale_mul = sole(mm.output[0], "Mul")
        if not (q is not None and q.op_type == "QuantizeLinear" and dq_w and perm == [1, 0] and scale_mul
                and dq_w.input[0] in inits and inits[dq_w.input[0]].data_type == onnx.TensorProto.INT8
                and sole(q.output[0], "DequantizeLinear") and sole(dq_x.output[0], "MatMul")
                and sole(dq_w.output[0], "Transpose") and sole(tr.output[0], "MatMul")):
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
        extra, attrs = [], {"norm": 0, "residual": 0}
        chain = _rms_norm_chain(x, ix) if sole(x, "QuantizeLinear") else None
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
    _replace_nodes(g, dropped, replace, new_inits)
    return model


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


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
    ix = _GraphIndex(g)
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
        ca = _attrs(conv)
        ssd = sole(conv.output[0], "QuantSSD")
        cat = made_by(conv.input[0], "Concat")
        qs = [made_by(x, "QuantizeLinear") for x in cat.input] if cat is not None and len(cat.input) == 3 else []
        split = made_by(qs[0].input[0], "Split") if qs and all(qs) else None
        if len(conv.input) < 9 or not conv.input[8] or ssd is None or split is None or len(split.output) != 5:
            return model, f"{conv.name}: not the exported decode mixer (no conv state, or no Split/Concat/QuantSSD)"
        sa = _attrs(ssd)
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
    _replace_nodes(g, dropped, replace, new_inits)
    return model, f"{OP_NAME} ({len(convs)} layers)"


def decode_linear_plugin(choice: str, max_batch: int) -> bool:
    """Whether the decode engine's linears run as QmambaW8A8Linear (``--decode-linear``)."""
    if choice not in DECODE_LINEAR_CHOICES:
        raise ValueError(f"build: decode_linear must be one of {DECODE_LINEAR_CHOICES}, got {choice!r}")
    return choice == "plugin" or (choice == "auto" and max_batch <= LINEAR_PLUGIN_MAX_BATCH)


DECODE_MIXER_CHOICES = ("plugin", "tensorrt")


def trt_graph(model, tensorrt_major: int, linear_plugin: bool = False, mixer_plugin: bool = False,
              notes: dict | None = None):
    """The exported graph as the TensorRT of that major version builds it; every rewrite is exact
    (fuse_decode_linears up to the RMSNorm's order of summation).
    Decode graphs: ``mixer_plugin``: fuse_decode_mixers first (what ran goes to ``notes["decode_mixers"]``);
    ``linear_plugin``: fuse_decode_linears. All versions: float_fake_quant (seen wrong on 8.6; kept for
    10+, where it could not be checked), explicit_zero_points. TensorRT 8 also: qdq_plugin_edges and
    bits_as_float_outputs (its explicit-quantization rules, mapped by scripts/trt86_probe.py;
    docs/tensorrt.md)."""
    if mixer_plugin:
        model, what = fuse_decode_mixers(model)
        if notes is not None:
            notes["decode_mixers"] = what
    if linear_plugin:
        model = fuse_decode_linears(model)
    model = explicit_zero_points(float_fake_quant(model))
    if tensorrt_major < 10:
        model = bits_as_float_outputs(qdq_plugin_edges(model))
    return model


def _trt_onnx(onnx_path: Path, out_dir: Path, major: int, linear_plugin: bool, mixer_plugin: bool,
              notes: dict) -> Path:
    """onnx_path rewritten by trt_graph for that TensorRT, written into out_dir."""
    import onnx

    model = trt_graph(onnx.load(str(onnx_path)), major, linear_plugin, mixer_plugin, notes)
    path = out_dir / f"{onnx_path.stem}.trt.onnx"
    big = model.ByteSize() > 1_800_000_000
    onnx.save(model, str(path), save_as_external_data=big, location=f"{path.name}.data" if big else None)
    return path


def _build_python(trt, onnx_path: Path, engine_path: Path, profile: trt_runner.Profile, plugins: Path,
                  fp16: bool, no_tactic_libraries: bool) -> None:
    """The same build as the C++ runner's (engineBuilder.cpp), through TensorRT's Python API."""
    import ctypes

    lib = ctypes.CDLL(str(plugins), mode=ctypes.RTLD_GLOBAL)
    lib.qmamba_plugin_library_version.restype = ctypes.c_char_p
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0 if int(trt.__version__.split(".")[0]) >= 10 else \
        1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if int(trt.__version__.split(".")[0]) < 10:
        config.set_flag(trt.BuilderFlag.INT8)
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
    if no_tactic_libraries:
        config.set_tactic_sources(0)
    opt = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shapes = [list(t.shape) for _ in range(3)]
        for axis, d in enumerate(t.shape):
            if d == -1:
                if axis > 1:
                    raise ValueError(f"input {t.name} has a dynamic axis {axis}; only batch and sequence may be")
                for k in range(3):
                    shapes[k][axis] = (profile.batch if axis == 0 else profile.seq)[k]
        opt.set_shape(t.name, *shapes)
    config.add_optimization_profile(opt)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path}")
    engine_path.write_bytes(bytes(plan))
    cudart = trt_runner._cudart()
    dev = trt_runner._cuda(cudart.cudaGetDevice())
    prop = trt_runner._cuda(cudart.cudaGetDeviceProperties(dev))
    name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
    p = profile
    meta = {"onnx": str(onnx_path), "tensorrt": f"TensorRT {trt.__version__.split('.post')[0]}",
            "plugin_library": lib.qmamba_plugin_library_version().decode(), "gpu": name.strip("\x00"),
            "compute_capability": f"{prop.major}.{prop.minor}", "fp16": "1" if fp16 else "0",
            "profile": f"batch {p.batch[0]}..{p.batch[1]}..{p.batch[2]}, seq {p.seq[0]}..{p.seq[1]}..{p.seq[2]}"}
    Path(str(engine_path) + ".json").write_text(json.dumps(meta, indent=2))


def tensorrt_major(trt=None) -> int:
    """Major version of the TensorRT that builds: its Python package's, else the C++ runner's."""
    if trt is not None:
        return int(trt.__version__.split(".")[0])
    text = trt_runner.runner_library().qmr_tensorrt_version().decode()  # "TensorRT 8.6.0"
    return int(text.split()[-1].split(".")[0])


def build_engines(onnx_dir, out_dir, *, batch=(1, 1, 8), seq=(1, 128, 2048), plugins=None, fp16=False,
                  no_tactic_libraries=False, backend="auto", force=False, keep_onnx=False,
                  decode_linear="auto", decode_mixer="plugin") -> dict:
    """Builds ENGINES/prefill.engine and decode.engine; returns the written qmamba_engines.json."""
    onnx_dir, out = Path(onnx_dir), Path(out_dir)
    meta = _read_onnx_metadata(onnx_dir)
    if out.exists() and any((out / f).exists() for f in trt_runner.ENGINE_FILES) and not force:
        raise FileExistsError(f"build: {out} already holds engines; pass --force to overwrite")
    plugins = Path(plugins) if plugins else trt_runner.plugin_library()
    if not plugins.is_file():
        raise FileNotFoundError(f"plugin library {plugins} does not exist")
    trt = trt_runner.tensorrt_python() if backend in ("auto", "python") else None
    if backend == "python" and trt is None:
        raise RuntimeError("--backend python: TensorRT's Python package is not importable")
    out.mkdir(parents=True, exist_ok=True)
    profiles = {"prefill": trt_runner.Profile(tuple(batch), tuple(seq)),
                "decode": trt_runner.Profile(tuple(batch), (1, 1, 1))}
    major = tensorrt_major(trt)
    linear_plugin = decode_linear_plugin(decode_linear, batch[2])
    if decode_mixer not in DECODE_MIXER_CHOICES:
        raise ValueError(f"build: decode_mixer must be one of {DECODE_MIXER_CHOICES}, got {decode_mixer!r}")
    notes = {"decode_mixers": "TensorRT layers (--decode-mixer tensorrt)"}
    for kind, profile in profiles.items():
        decode = kind == "decode"
        onnx_path = _trt_onnx(onnx_dir / meta["graphs"][kind]["file"], out, major, linear_plugin and decode,
                              decode_mixer == "plugin" and decode, notes)
        engine_path = out / f"{kind}.engine"
        try:
            if trt is not None:
                _build_python(trt, onnx_path, engine_path, profile, plugins, fp16, no_tactic_libraries)
            else:
                trt_runner.build_engine(onnx_path, engine_path, profile, plugins, fp16, no_tactic_libraries)
        finally:
            if not keep_onnx:
                for f in (onnx_path, Path(f"{onnx_path}.data")):
                    f.unlink(missing_ok=True)
    engines = {"format": "qmamba-engines", "version": 1, "config": meta["config"], "states": meta["states"],
               "backend": "python" if trt is not None else "cpp",
               "decode_linears": "QmambaW8A8Linear" if linear_plugin else "TensorRT int8 MatMul",
               "decode_mixers": notes["decode_mixers"],
               "profiles": {k: {"batch": list(p.batch), "seq": list(p.seq)} for k, p in profiles.items()},
               **decode_bytes(meta, onnx_dir / meta["graphs"]["decode"]["file"])}
    (out / ENGINES_METADATA).write_text(json.dumps(engines, indent=2))
    shutil.copyfile(onnx_dir / ONNX_METADATA, out / ONNX_METADATA)
    return engines


def read_engines_metadata(engine_dir) -> dict:
    p = Path(engine_dir) / ENGINES_METADATA
    if not p.is_file():
        raise FileNotFoundError(f"{engine_dir}: no {ENGINES_METADATA} (not a `qmamba build` directory)")
    return json.loads(p.read_text())


def run(args) -> int:
    meta = build_engines(args.onnx_dir, args.out, batch=args.batch, seq=args.seq, plugins=args.plugins,
                         fp16=args.fp16, no_tactic_libraries=args.no_tactic_libraries, backend=args.backend,
                         force=args.force, keep_onnx=args.keep_onnx, decode_linear=args.decode_linear,
                         decode_mixer=args.decode_mixer)
    for f in trt_runner.ENGINE_FILES:
        p = Path(args.out) / f
        print(f"{p} ({p.stat().st_size / 1e6:.1f} MB)")
    print(f"built with {'TensorRT Python API' if meta['backend'] == 'python' else 'the C++ runner'}; "
          f"decode reads {meta['weight_bytes'] / 1e6:.1f} MB of weights per step; its linears: {meta['decode_linears']}; "
          f"its mixers: {meta['decode_mixers']}")
    return 0
