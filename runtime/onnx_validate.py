"""``validate_onnx_model(path)``: the parameters and the qmamba custom nodes of an ONNX file obey
docs/ops.md.

Run before any runtime touches a graph, so that a hand-edited or foreign file fails with a message
naming the node, the input and the problem, instead of a crash deep inside a runtime. Checked for
every node of domain ``qmamba``: a known op, the number and order of inputs (the state input
present or absent as a whole), attribute names, types and values, the dtype and shape of every
input whose type is known, the values of constant inputs (group scales finite and > 0, group
ranges cumulative ends, conv_dim consistent with the sizes), and, when the model holds function
bodies, that the body of each op exists in the form (with or without state) its nodes use.

Checked for every initializer of the graph: float values finite (a NaN in ``A_log`` would pass
every runtime and change the logits; the one exception is the NaN the graph gives the logits of an
out-of-range token id, ``onnx_layers.NAN_LOGITS``), and scales > 0 (a zero scale divides by zero in
QuantizeLinear, a negative one flips signs). A scale is an initializer that is the scale input
of a QuantizeLinear or DequantizeLinear node or a ``*_scale`` / ``*_scales`` input of a custom
node, or whose name ends in ``scale`` or ``scales`` (a W8A8 linear's ``weight_scale`` feeds a Mul).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import AttributeProto, numpy_helper

from qmamba.errors import MissingFileError
from qmamba.export import onnx_ops
from qmamba.export.onnx_layers import NAN_LOGITS
from qmamba.export.validate import QMambaInputError, check_group_ranges

_DTYPES = {"int8": onnx.TensorProto.INT8, "int32": onnx.TensorProto.INT32,
           "float32": onnx.TensorProto.FLOAT}
_ATTR_TYPES = {"float": AttributeProto.FLOAT, "int": AttributeProto.INT}
_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                onnx.TensorProto.BFLOAT16)
_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


class GraphConstants:
    """What the validator knows of a graph: constant values and declared types of tensors."""

    def __init__(self, model: onnx.ModelProto, base_dir: str = ""):
        g = model.graph
        self.base_dir = base_dir   # where external data lives; read only for the tensors asked
        self.constants = {t.name: t for t in g.initializer}
        self.producers = {o: n for n in g.node for o in n.output}
        self.types = {}
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            t = vi.type.tensor_type
            if t.elem_type:
                dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
                self.types[vi.name] = (t.elem_type, dims if t.HasField("shape") else None)

    def constant(self, name: str) -> np.ndarray | None:
        """Value of an initializer, or of one passed through DequantizeLinear -> QuantizeLinear
        with scale 1 (``onnx_ops.constant_int8_input``); None for computed tensors."""
        if name in self.constants:
            return numpy_helper.to_array(self.constants[name], base_dir=self.base_dir)
        q = self.producers.get(name)
        if q is None or q.op_type != "QuantizeLinear" or q.input[1] != onnx_ops.UNIT_SCALE:
            return None
        dq = self.producers.get(q.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[1] != onnx_ops.UNIT_SCALE:
            return None
        return self.constant(dq.input[0])

    def type_of(self, name: str):
        value = self.constant(name)
        if value is not None:
            return {np.dtype(np.int8): onnx.TensorProto.INT8, np.dtype(np.int32): onnx.TensorProto.INT32,
                    np.dtype(np.float32): onnx.TensorProto.FLOAT}.get(value.dtype, -1), list(value.shape)
        return self.types.get(name)


def node_attributes(node: onnx.NodeProto, where: str) -> dict:
    """The op attributes of a qmamba node (defaults filled in, plugin attributes left out), checked."""
    spec = onnx_ops.OPS[node.op_type]
    values = {}
    for a in node.attribute:
        if a.name in onnx_ops.PLUGIN_ATTRIBUTES:
            if a.type != AttributeProto.STRING:
                raise QMambaInputError(f"{where}: attribute {a.name} must be a string")
            continue
        if a.name not in spec.attributes:
            raise QMambaInputError(f"{where}: unknown attribute {a.name!r}")
        want = _ATTR_TYPES[spec.attributes[a.name].type]
        if a.type != want:
            raise QMambaInputError(f"{where}: attribute {a.name} must be "
                                   f"{spec.attributes[a.name].type}, got {AttributeProto.AttributeType.Name(a.type)}")
        values[a.name] = onnx.helper.get_attribute_value(a)
    for name, a in spec.attributes.items():
        if name not in values:
            if a.default is None:
                raise QMambaInputError(f"{where}: required attribute {name} is missing")
            values[name] = a.default
    for name, v in values.items():
        if isinstance(v, float) and name.endswith("_scale") and not (math.isfinite(v) and v > 0):
            raise QMambaInputError(f"{where}: attribute {name} must be finite and > 0, got {v!r}")
    g, h, p, n = values["ngroups"], values["nheads"], values["headdim"], values["d_state"]
    if min(g, h, p, n) < 1 or h % g:
        raise QMambaInputError(f"{where}: sizes ngroups={g}, nheads={h}, headdim={p}, d_state={n} "
                               f"are invalid (all >= 1, ngroups must divide nheads)")
    if node.op_type == "QuantSSD":
        if not (values["dt_min"] >= 0 and values["dt_max"] > values["dt_min"]):
            raise QMambaInputError(f"{where}: need 0 <= dt_min < dt_max, got {values['dt_min']}, "
                                   f"{values['dt_max']}")
        if values["out_dtype"] not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            raise QMambaInputError(f"{where}: out_dtype must be 1 (float32) or 10 (float16), "
                                   f"got {values['out_dtype']}")
        if values["chunk_size"] < 1:
            raise QMambaInputError(f"{where}: chunk_size must be >= 1, got {values['chunk_size']}")
    return values


def _expected_shapes(op: str, a: dict, nhg, ndg, K) -> dict:
    g, h, p, n = a["ngroups"], a["nheads"], a["headdim"], a["d_state"]
    d_ssm = h * p
    conv_dim = d_ssm + 2 * g * n
    groups = {"x_out_scales": [g, nhg, ndg], "B_out_scales": [g], "C_out_scales": [g],
              "x_head_group_range": [g, nhg], "x_dim_group_range": [g, nhg, ndg]}
    if op == "QuantConv1dSiLU":
        return {"xBC": [None, None, conv_dim], "weight": [conv_dim, K], "bias": [conv_dim],
                **groups, "conv_state": [None, None if K is None else K - 1, conv_dim]}
    return {"x": [None, None, d_ssm], "dt": [None, None, h], "B": [None, None, g * n],
            "C": [None, None, g * n], "A_log": [h], "D": [h], "dt_bias": [h], **groups,
            "ssm_state_scale": [g, nhg, ndg, n], "ssm_state": [None, h, p, n]}


def _check_node(graph: GraphConstants, node: onnx.NodeProto, where: str) -> bool:
    """Checks one custom node; returns whether it passes the state input."""
    spec = onnx_ops.OPS[node.op_type]
    names = spec.input_names()
    given = list(node.input)
    if len(given) not in (len(names) - 1, len(names)):
        raise QMambaInputError(f"{where}: takes {len(names) - 1} inputs ({', '.join(names[:-1])}) "
                               f"plus the optional {names[-1]}, got {len(given)}")
    for i, name in enumerate(given[:len(names) - 1]):
        if not name:
            raise QMambaInputError(f"{where}: required input {i} ({names[i]}) is empty")
    with_state = len(given) == len(names) and bool(given[-1])
    if len(node.output) != len(spec.outputs) or not all(node.output):
        raise QMambaInputError(f"{where}: needs the {len(spec.outputs)} outputs "
                               f"{spec.output_names()}, got {list(node.output)}")
    attrs = node_attributes(node, where)

    values = {names[i]: graph.constant(t) for i, t in enumerate(given) if t}
    xs = values.get("x_out_scales")
    nhg, ndg = (xs.shape[1], xs.shape[2]) if xs is not None and xs.ndim == 3 else (None, None)
    w = values.get("weight")
    K = w.shape[1] if w is not None and w.ndim == 2 else None
    shapes = _expected_shapes(node.op_type, attrs, nhg, ndg, K)
    for i, tensor in enumerate(given):
        if not tensor:
            continue
        t = spec.inputs[i]
        known = graph.type_of(tensor)
        if known is None:
            continue
        dtype, dims = known
        if dtype != _DTYPES[t.dtype]:
            raise QMambaInputError(f"{where}: input {i} {t.name} ({tensor}) must be {t.dtype}, got "
                                   f"{onnx.TensorProto.DataType.Name(dtype) if dtype > 0 else 'another type'}")
        want = shapes[t.name]
        if dims is not None and (len(dims) != len(want) or any(
                a is not None and b is not None and a != b for a, b in zip(dims, want))):
            shown = ["*" if d is None else d for d in want]
            raise QMambaInputError(f"{where}: input {i} {t.name} ({tensor}) must have shape "
                                   f"{shown}, got {dims}")
    if node.op_type == "QuantConv1dSiLU" and K is not None and not 2 <= K <= 4:
        raise QMambaInputError(f"{where}: weight width K (d_conv) must be 2..4, got {K}")
    group_names = ("x_out_scales", "B_out_scales", "C_out_scales", "x_head_group_range",
                   "x_dim_group_range")
    if all(values.get(k) is not None for k in group_names):
        check_group_ranges(where, *(torch.from_numpy(np.array(values[k])) for k in group_names),
                           attrs["ngroups"], attrs["nheads"], attrs["headdim"])
    for name in ("ssm_state_scale",):
        v = values.get(name)
        if v is not None and not (np.isfinite(v).all() and (v > 0).all()):
            raise QMambaInputError(f"{where}: {name} must be finite and > 0 everywhere")
    return with_state


def _scale_initializers(model: onnx.ModelProto) -> dict[str, str]:
    """{initializer name: why it is a scale (the first node using it as one, or its name)}."""
    names = {t.name for t in model.graph.initializer}
    scales = {}
    for node in model.graph.node:
        if node.op_type in _QDQ_OPS and not node.domain and len(node.input) > 1:
            slots = [1]
        elif node.domain == onnx_ops.DOMAIN and node.op_type in onnx_ops.OPS:
            slots = [i for i, n in enumerate(onnx_ops.OPS[node.op_type].input_names())
                     if n.endswith(("_scale", "_scales"))]
        else:
            continue
        for i in slots:
            if i < len(node.input) and node.input[i] in names:
                scales.setdefault(node.input[i], f"a scale of node {node.name or node.output[0]} "
                                                 f"({node.op_type})")
    for name in names:
        if name.lower().endswith(("scale", "scales")):
            scales.setdefault(name, "named as a scale")
    return scales


def _first_index(mask: np.ndarray) -> list[int]:
    return [int(i) for i in np.argwhere(mask)[0]]


def check_initializers(model: onnx.ModelProto, path: Path) -> None:
    """Every float initializer finite, every scale initializer > 0; the message names the
    initializer, the first bad element and, for a scale, the node that uses it."""
    scales = _scale_initializers(model)
    for t in model.graph.initializer:
        if t.data_type not in _FLOAT_TYPES:
            continue
        value = numpy_helper.to_array(t, base_dir=str(path.parent)).astype(np.float64)
        bad = ~np.isfinite(value)
        if t.name == NAN_LOGITS and value.size == 1 and np.isnan(value).all():
            continue  # the logits given to out-of-range token ids (flag_bad_token_ids)
        if bad.any():
            at = _first_index(bad) if value.ndim else []
            raise QMambaInputError(
                f"{path.name}: initializer {t.name} holds {int(bad.sum())} non-finite value(s) "
                f"(first {float(value[tuple(at)])!r} at index {at}); the exported parameters are "
                f"corrupt: export the model again from a valid checkpoint")
        if t.name in scales and not (value > 0).all():
            at = _first_index(value <= 0) if value.ndim else []
            raise QMambaInputError(
                f"{path.name}: scale {t.name} ({scales[t.name]}) must be > 0, "
                f"got {float(value[tuple(at)])!r} at index {at}; export the model again from a "
                f"valid checkpoint")


def validate_onnx_model(path) -> dict[str, int]:
    """Checks the initializers and every qmamba node of the ONNX file ``path``; returns
    {op: node count}.

    Raises QMambaInputError (a ValueError) naming the file, the node and the problem, and
    MissingFileError (a FileNotFoundError) when there is no file at ``path``.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # a damaged or foreign file: say which, not a protobuf traceback
        raise QMambaInputError(f"{path}: not a readable ONNX model ({e})") from e
    check_initializers(model, path)
    # External data is not loaded as a whole: only the constants the checks need are read.
    graph = GraphConstants(model, str(path.parent))
    functions = {(f.domain, f.name): f for f in model.functions}
    counts: dict[str, int] = {}
    forms: dict[str, set[bool]] = {}
    for node in model.graph.node:
        if node.domain != onnx_ops.DOMAIN:
            continue
        where = f"{path.name}: node {node.name or node.output[0]} ({node.op_type})"
        if node.op_type not in onnx_ops.OPS:
            raise QMambaInputError(f"{where}: unknown op of domain {onnx_ops.DOMAIN!r}; "
                                   f"known: {sorted(onnx_ops.OPS)}")
        forms.setdefault(node.op_type, set()).add(_check_node(graph, node, where))
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    for op, used in forms.items():
        fn = functions.get((onnx_ops.DOMAIN, op))
        if fn is None:
            continue  # a function-free model (plugins only)
        if len(used) > 1:
            raise QMambaInputError(f"{path.name}: {op} nodes mix the forms with and without "
                                   f"state input, but a model holds one {op} function body")
        body_with_state = len(fn.input) == len(onnx_ops.OPS[op].inputs)
        if body_with_state != used.pop():
            raise QMambaInputError(f"{path.name}: the {op} function body is the form "
                                   f"{'with' if body_with_state else 'without'} state input, "
                                   f"its nodes are not")
    return counts
