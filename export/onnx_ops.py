"""QuantConv1dSiLU and QuantSSD as ONNX: the contract as data, OpSchemas, and FunctionProto bodies.

``OPS`` holds the names, input/output order and attributes of docs/ops.md as plain data, so that a
contract test can compare them with the docs tables, the torch reference and the plugin creators.
``register_schemas()`` makes the two ops known to the onnx checker and shape inference (domain
``qmamba``, version 1). ``make_function(op, with_state)`` builds the model-local function whose body
computes the op with standard ONNX ops, so that ONNX Runtime (or TensorRT without the plugin) runs
a model holding these nodes with no custom-op library.

Optional state inputs: a FunctionProto body cannot test whether an optional input was given, so
the body comes in two forms of one schema. ``with_state=False`` (prefill: the node has no state
input, the state starts at zero) and ``with_state=True`` (decode: the node passes the state). A
model holds one form per op; the exporter writes the prefill and decode graphs as separate models.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import math

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

DOMAIN = "qmamba"
VERSION = 1
# The standard-ONNX opset of every graph and function body qmamba writes. 17 is the newest opset
# TensorRT 8.6's parser knows (the oldest TensorRT qmamba targets); ONNX Runtime and TensorRT-RTX
# read it too, and every op the bodies need exists there (Scan 16, CumSum 14, Trilu-free masks).
ONNX_OPSET = 17
# IR 9 is the first that stores attribute defaults in a FunctionProto (``attribute_proto``).
IR_VERSION = 9

# String attributes TensorRT's ONNX parser reads to pick the registered plugin for a node.
PLUGIN_ATTRIBUTES = {"plugin_namespace": "", "plugin_version": "1"}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output row of a docs/ops.md table."""
    name: str
    dtype: str          # as written in docs/ops.md: "int8", "int32", "float32", ...
    shape: str          # as written in docs/ops.md, e.g. "[Bt, L, conv_dim]"
    optional: bool = False


@dataclass(frozen=True)
class AttrSpec:
    """One attribute row of a docs/ops.md table; ``default is None`` means required."""
    type: str           # "float" or "int"
    default: float | int | None = None


@dataclass(frozen=True)
class OpSpec:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    attributes: dict[str, AttrSpec] = field(default_factory=dict)

    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


_GROUP_SHAPES = [
    TensorSpec("x_out_scales", "float32", "[g, nhg, ndg]"),
    TensorSpec("B_out_scales", "float32", "[g]"),
    TensorSpec("C_out_scales", "float32", "[g]"),
    TensorSpec("x_head_group_range", "int32", "[g, nhg]"),
    TensorSpec("x_dim_group_range", "int32", "[g, nhg, ndg]"),
]
_SIZES = {name: AttrSpec("int") for name in ("ngroups", "nheads", "headdim", "d_state")}

OPS: dict[str, OpSpec] = {
    "QuantConv1dSiLU": OpSpec(
        inputs=[TensorSpec("xBC", "int8", "[Bt, L, conv_dim]"),
                TensorSpec("weight", "int8", "[conv_dim, K]"),
                TensorSpec("bias", "int8", "[conv_dim]"),
                *_GROUP_SHAPES,
                TensorSpec("conv_state", "int8", "[Bt, K-1, conv_dim]", optional=True)],
        outputs=[TensorSpec("x", "int8", "[Bt, L, d_ssm]"),
                 TensorSpec("B", "int8", "[Bt, L, g*n]"),
                 TensorSpec("C", "int8", "[Bt, L, g*n]"),
                 TensorSpec("conv_state_out", "int8", "[Bt, K-1, conv_dim]")],
        attributes={**{f"{p}{seg}_scale": AttrSpec("float")
                       for seg in ("x", "B", "C") for p in ("", "w", "b")},
                    **_SIZES},
    ),
    "QuantSSD": OpSpec(
        inputs=[TensorSpec("x", "int8", "[Bt, L, d_ssm]"),
                TensorSpec("dt", "int8", "[Bt, L, h]"),
                TensorSpec("B", "int8", "[Bt, L, g*n]"),
                TensorSpec("C", "int8", "[Bt, L, g*n]"),
                TensorSpec("A_log", "float32", "[h]"),
                TensorSpec("D", "float32", "[h]"),
                TensorSpec("dt_bias", "float32", "[h]"),
                *_GROUP_SHAPES,
                TensorSpec("ssm_state_scale", "float32", "[g, nhg, ndg, n]"),
                TensorSpec("ssm_state", "int8", "[Bt, h, p, n]", optional=True)],
        outputs=[TensorSpec("y", "float32 or float16", "[Bt, L, d_ssm]"),
                 TensorSpec("ssm_state_out", "int8", "[Bt, h, p, n]")],
        attributes={"dt_scale": AttrSpec("float"),
                    "dt_min": AttrSpec("float", 0.0),
                    "dt_max": AttrSpec("float", math.inf),
                    **_SIZES,
                    "out_dtype": AttrSpec("int", TensorProto.FLOAT),
                    "chunk_size": AttrSpec("int", 128)},
    ),
}

_ONNX_TYPES = {"int8": ["tensor(int8)"], "int32": ["tensor(int32)"], "float32": ["tensor(float)"],
               "float32 or float16": ["tensor(float)", "tensor(float16)"]}
_ATTR_TYPES = {"float": AttributeProto.FLOAT, "int": AttributeProto.INT}


# ----------------------------------------------------------------------------------------------
# OpSchemas
# ----------------------------------------------------------------------------------------------

def op_schema(op: str) -> onnx.defs.OpSchema:
    """The OpSchema of ``op`` built from ``OPS`` (one schema per op; state inputs optional)."""
    S = onnx.defs.OpSchema
    spec = OPS[op]
    constraints: dict[tuple[str, ...], str] = {}

    def param(t: TensorSpec, idx: int) -> S.FormalParameter:
        types = tuple(_ONNX_TYPES[t.dtype])
        type_str = constraints.setdefault(types, f"T{len(constraints)}")
        option = S.FormalParameterOption.Optional if t.optional else S.FormalParameterOption.Single
        return S.FormalParameter(t.name, type_str, t.shape, param_option=option)

    inputs = [param(t, i) for i, t in enumerate(spec.inputs)]
    outputs = [param(t, i) for i, t in enumerate(spec.outputs)]
    attrs = []
    for name, a in spec.attributes.items():
        if a.default is None:
            attrs.append(S.Attribute(name, _ATTR_TYPES[a.type], "", required=True))
        else:
            attrs.append(S.Attribute(name, helper.make_attribute(name, a.default), ""))
    for name, default in PLUGIN_ATTRIBUTES.items():
        attrs.append(S.Attribute(name, helper.make_attribute(name, default), ""))
    type_constraints = [(tn, list(types), "") for types, tn in constraints.items()]
    return S(op, DOMAIN, VERSION, f"{op} of docs/ops.md", inputs=inputs, outputs=outputs,
             type_constraints=type_constraints, attributes=attrs)


def register_schemas() -> None:
    """Registers both OpSchemas with the onnx package (idempotent)."""
    for op in OPS:
        if not onnx.defs.has(op, DOMAIN):
            onnx.defs.register_schema(op_schema(op))


# ----------------------------------------------------------------------------------------------
# Function bodies
# ----------------------------------------------------------------------------------------------

class _Body:
    """A tiny builder of node lists: every call adds one node and returns its output name(s)."""

    def __init__(self, prefix: str):
        self.nodes: list[onnx.NodeProto] = []
        self._prefix = prefix
        self._count = 0

    def _name(self) -> str:
        self._count += 1
        return f"{self._prefix}{self._count}"

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs):
        outs = [self._name() for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs[0] if outputs == 1 else outs

    def const(self, value, dtype=np.int64) -> str:
        return self.op("Constant", value=numpy_helper.from_array(np.asarray(value, dtype=dtype)))

    def attr(self, name: str, kind: str) -> str:
        """A scalar tensor holding the node attribute ``name`` (int64 for ints, fp32 for floats)."""
        out = self._name()
        node = helper.make_node("Constant", [], [out])
        key, at = ("value_int", AttributeProto.INT) if kind == "int" else ("value_float", AttributeProto.FLOAT)
        node.attribute.append(helper.make_attribute_ref(key, at, ref_attr_name=name))
        self.nodes.append(node)
        return out

    def dim(self, tensor: str, axis: int) -> str:
        """Scalar int64 size of ``tensor`` along ``axis``."""
        return self.op("Gather", self.op("Shape", tensor), self.const(axis), axis=0)

    def vec(self, *scalars: str) -> str:
        """1-D int64 tensor from scalar int64 tensors (for shapes)."""
        axes = self.const([0])
        return self.op("Concat", *[self.op("Unsqueeze", s, axes) for s in scalars], axis=0)

    def quantize(self, v: str, scale: str) -> str:
        """Q(v, s) of docs/ops.md: true division, round half to even, saturate, int8."""
        r = self.op("Round", self.op("Div", v, scale))
        r = self.op("Clip", r, self.const(-128.0, np.float32), self.const(127.0, np.float32))
        return self.op("Cast", r, to=TensorProto.INT8)


def _x_group_index(b: _Body, x_out_scales: str, head_range: str, dim_range: str,
                   h: str, p: str, g: str) -> str:
    """Flat index into x_out_scales (as [g*nhg*ndg]) of every (head, dim): int64 [h, p].

    The Group lookup of docs/ops.md with the counting formula: the group of an index is the
    number of cumulative group ends <= it. Counts are summed in fp32 (exact for these sizes) so
    that the reduction runs on any backend, integer reductions being poorly supported.
    """
    zero, one = b.const(0), b.const(1)
    heads = b.op("Range", zero, h, one)                                   # [h]
    hpg = b.op("Div", h, g)
    sg = b.op("Div", heads, hpg)
    h_loc = b.op("Mod", heads, hpg)
    hr = b.op("Gather", b.op("Cast", head_range, to=TensorProto.INT64), sg, axis=0)   # [h, nhg]
    le = b.op("LessOrEqual", hr, b.op("Unsqueeze", h_loc, b.const([1])))
    count = b.op("ReduceSum", b.op("Cast", le, to=TensorProto.FLOAT), b.const([1]), keepdims=0)
    hg = b.op("Cast", count, to=TensorProto.INT64)                       # [h]
    nhg, ndg = b.dim(x_out_scales, 1), b.dim(x_out_scales, 2)
    sh = b.op("Add", b.op("Mul", sg, nhg), hg)                            # row of (sg, hg)
    dr = b.op("Reshape", b.op("Cast", dim_range, to=TensorProto.INT64), b.vec(b.const(-1), ndg))
    dr_h = b.op("Unsqueeze", b.op("Gather", dr, sh, axis=0), b.const([1]))  # [h, 1, ndg]
    dims = b.op("Unsqueeze", b.op("Range", zero, p, one), b.const([0, 2]))   # [1, p, 1]
    le = b.op("LessOrEqual", dr_h, dims)
    count = b.op("ReduceSum", b.op("Cast", le, to=TensorProto.FLOAT), b.const([2]), keepdims=0)
    dg = b.op("Cast", count, to=TensorProto.INT64)                       # [h, p]
    return b.op("Add", b.op("Mul", b.op("Unsqueeze", sh, b.const([1])), ndg), dg)


def _group_channel_scales(b: _Body, scales: str, g: str, n: str) -> str:
    """B_out_scales/C_out_scales [g] -> one scale per channel, fp32 [g*n]."""
    expanded = b.op("Expand", b.op("Unsqueeze", scales, b.const([1])), b.vec(g, n))
    return b.op("Reshape", expanded, b.const([-1]))


def _function(op: str, with_state: bool, body: _Body, outputs: list[str]) -> onnx.FunctionProto:
    spec = OPS[op]
    inputs = spec.input_names()
    if not with_state:
        inputs = [t.name for t in spec.inputs if not t.optional]
    defaults = [helper.make_attribute(n, a.default) for n, a in spec.attributes.items()
                if a.default is not None]
    defaults += [helper.make_attribute(n, v) for n, v in PLUGIN_ATTRIBUTES.items()]
    required = [n for n, a in spec.attributes.items() if a.default is None]
    # Body-internal names are prefixed, so rename the final nodes' outputs to the formal outputs.
    renames = dict(zip(outputs, spec.output_names()))
    for node in body.nodes:
        for i, o in enumerate(node.output):
            if o in renames:
                node.output[i] = renames[o]
    fn = helper.make_function(DOMAIN, op, inputs, spec.output_names(), body.nodes,
                              [helper.make_opsetid("", ONNX_OPSET)], required,
                              attribute_protos=defaults,
                              doc_string=f"{op} of docs/ops.md in standard ONNX "
                                         f"({'with' if with_state else 'without'} state input)")
    return fn


def conv1d_silu_function(with_state: bool) -> onnx.FunctionProto:
    """QuantConv1dSiLU in standard ONNX: exact integer convolution, fp32 epilogue, int8 output."""
    b = _Body("_c")
    h, p, g, n = (b.attr(a, "int") for a in ("nheads", "headdim", "ngroups", "d_state"))
    d_ssm = b.op("Mul", h, p)
    gn = b.op("Mul", g, n)
    K = b.dim("weight", 1)
    Km1 = b.op("Sub", K, b.const(1))
    Bt, L, cd = b.dim("xBC", 0), b.dim("xBC", 1), b.dim("xBC", 2)
    # u in fp32 (int8 values are exact there): TensorRT refuses int8 constants such as a zero
    # state that feed anything but a DequantizeLinear or a plugin, so the zero state is fp32.
    f32 = TensorProto.FLOAT
    if with_state:
        state = b.op("Cast", "conv_state", to=f32)
    else:
        state = b.op("ConstantOfShape", b.vec(Bt, Km1, cd),
                     value=numpy_helper.from_array(np.zeros(1, np.float32)))
    u = b.op("Concat", state, b.op("Cast", "xBC", to=f32), axis=1)          # [Bt, K-1+L, cd]
    state_out = b.op("Cast", b.op("Slice", u, b.vec(L), b.const([np.iinfo(np.int64).max]),
                                  b.const([1])), to=TensorProto.INT8)
    # Window t holds u[t .. t+K-1]; products and sums of <= 4 int8*int8 terms are exact in fp32.
    zero, one = b.const(0), b.const(1)
    win_idx = b.op("Add", b.op("Unsqueeze", b.op("Range", zero, L, one), b.const([1])),
                   b.op("Unsqueeze", b.op("Range", zero, K, one), b.const([0])))       # [L, K]
    windows = b.op("Gather", u, win_idx, axis=1)                                    # [Bt,L,K,cd]
    # weight and bias come from initializers through constant_int8_input (see there).
    w_t = b.op("Transpose", b.op("Cast", "weight", to=f32), perm=[1, 0])                 # [K, cd]
    acc = b.op("ReduceSum", b.op("Mul", windows, w_t), b.const([2]), keepdims=0)       # [Bt,L,cd]
    bias = b.op("Cast", "bias", to=f32)

    s_x = b.op("Reshape", b.op("Gather", b.op("Reshape", "x_out_scales", b.const([-1])),
                               _x_group_index(b, "x_out_scales", "x_head_group_range",
                                              "x_dim_group_range", h, p, g)),
               b.const([-1]))                                             # [d_ssm]
    bounds = [(zero, d_ssm), (d_ssm, b.op("Add", d_ssm, gn)), (b.op("Add", d_ssm, gn), cd)]
    out_scales = [s_x, _group_channel_scales(b, "B_out_scales", g, n),
                  _group_channel_scales(b, "C_out_scales", g, n)]
    outs = []
    for seg, (lo, hi), s_out in zip(("x", "B", "C"), bounds, out_scales):
        lo1, hi1 = b.op("Unsqueeze", lo, b.const([0])), b.op("Unsqueeze", hi, b.const([0]))
        acc_s = b.op("Slice", acc, lo1, hi1, b.const([2]))
        bias_s = b.op("Slice", bias, lo1, hi1, b.const([0]))
        # fp32(s_in * s_w) rounded once; then Mul, Mul, Add as separate roundings (no FMA).
        acc_scale = b.op("Mul", b.attr(f"{seg}_scale", "float"), b.attr(f"w{seg}_scale", "float"))
        v = b.op("Add", b.op("Mul", acc_s, acc_scale),
                 b.op("Mul", bias_s, b.attr(f"b{seg}_scale", "float")))
        one_f = b.const(1.0, np.float32)
        sig = b.op("Div", one_f, b.op("Add", one_f, b.op("Exp", b.op("Neg", v))))
        outs.append(b.quantize(b.op("Mul", v, sig), s_out))
    return _function("QuantConv1dSiLU", with_state, b, [*outs, state_out])


def ssd_function(with_state: bool) -> onnx.FunctionProto:
    """QuantSSD in standard ONNX, chunked (SSD form).

    Inside a chunk of T steps the output is a masked [T, T] matrix product; the state entering
    each chunk is carried by a Scan over chunks. T = min(chunk_size, L), L is padded up to a
    multiple of T with dt = 0 steps (decay exp(0) = 1, no input: the state passes unchanged), and
    the padded outputs are sliced off.
    """
    b = _Body("_s")
    h, p, g, n = (b.attr(a, "int") for a in ("nheads", "headdim", "ngroups", "d_state"))
    hpg = b.op("Div", h, g)
    d_ssm = b.op("Mul", h, p)
    Bt, L = b.dim("x", 0), b.dim("x", 1)
    T = b.op("Min", b.attr("chunk_size", "int"), L)
    nc = b.op("Div", b.op("Sub", b.op("Add", L, T), b.const(1)), T)
    pad = b.op("Sub", b.op("Mul", nc, T), L)
    f32 = TensorProto.FLOAT

    def pad_time(t: str, width: str) -> str:
        zeros = b.op("ConstantOfShape", b.vec(Bt, pad, width),
                     value=numpy_helper.from_array(np.zeros(1, np.float32)))
        return b.op("Concat", t, zeros, axis=1)

    # Dequantized inputs (docs/ops.md, QuantSSD, Computation).
    flat_idx = _x_group_index(b, "x_out_scales", "x_head_group_range", "x_dim_group_range", h, p, g)
    s_x = b.op("Reshape", b.op("Gather", b.op("Reshape", "x_out_scales", b.const([-1])), flat_idx),
               b.const([-1]))
    xh = b.op("Mul", b.op("Cast", "x", to=f32), s_x)
    gn = b.op("Mul", g, n)
    Bh = b.op("Mul", b.op("Cast", "B", to=f32), _group_channel_scales(b, "B_out_scales", g, n))
    Ch = b.op("Mul", b.op("Cast", "C", to=f32), _group_channel_scales(b, "C_out_scales", g, n))
    v = b.op("Add", b.op("Mul", b.op("Cast", "dt", to=f32), b.attr("dt_scale", "float")), "dt_bias")
    sp = b.op("Where", b.op("Greater", v, b.const(20.0, np.float32)), v, b.op("Softplus", v))
    dt = b.op("Clip", sp, b.attr("dt_min", "float"), b.attr("dt_max", "float"))          # [Bt,L,h]

    # Chunked layout: [Bt, nc, g, hpg, T, *] (B, C: [Bt, nc, g, 1, T, n]).
    neg1 = b.const(-1)
    xc = b.op("Transpose", b.op("Reshape", pad_time(xh, d_ssm), b.vec(Bt, neg1, T, g, hpg, p)),
              perm=[0, 1, 3, 4, 2, 5])
    dtc = b.op("Transpose", b.op("Reshape", pad_time(dt, h), b.vec(Bt, neg1, T, g, hpg)),
               perm=[0, 1, 3, 4, 2])

    def group_chunks(t: str) -> str:
        t = b.op("Reshape", pad_time(t, gn), b.vec(Bt, neg1, T, g, n))
        return b.op("Unsqueeze", b.op("Transpose", t, perm=[0, 1, 3, 2, 4]), b.const([3]))

    Bc, Cc = group_chunks(Bh), group_chunks(Ch)
    A = b.op("Reshape", b.op("Neg", b.op("Exp", "A_log")), b.vec(g, hpg, b.const(1)))
    a_cum = b.op("CumSum", b.op("Mul", dtc, A), b.const(-1))                # [Bt,nc,g,hpg,T]

    # Within a chunk: y[t] = sum_{s<=t} (C_t . B_s) exp(a_cum[t] - a_cum[s]) dt_s x_s.
    zero, one = b.const(0), b.const(1)
    steps = b.op("Range", zero, T, one)
    causal = b.op("LessOrEqual", b.op("Unsqueeze", steps, b.const([0])),
                  b.op("Unsqueeze", steps, b.const([1])))                   # [T(t), T(s)]: s <= t
    diff = b.op("Sub", b.op("Unsqueeze", a_cum, b.const([-1])), b.op("Unsqueeze", a_cum, b.const([-2])))
    decay = b.op("Where", causal, b.op("Exp", diff), b.const(0.0, np.float32))
    cb = b.op("MatMul", Cc, b.op("Transpose", Bc, perm=[0, 1, 2, 3, 5, 4]))     # [..,1,T,T]
    m = b.op("Mul", b.op("Mul", cb, decay), b.op("Unsqueeze", dtc, b.const([-2])))
    y = b.op("MatMul", m, xc)                                               # [..,hpg,T,p]

    # Each chunk's own contribution to the state at its end.
    a_last = b.op("Slice", a_cum, b.const([-1]),
                  b.const([np.iinfo(np.int64).max]), b.const([-1]))          # [..,hpg,1]
    to_end = b.op("Exp", b.op("Sub", a_last, a_cum))
    wx = b.op("Mul", xc, b.op("Unsqueeze", b.op("Mul", dtc, to_end), b.const([-1])))
    chunk_states = b.op("MatMul", b.op("Transpose", wx, perm=[0, 1, 2, 3, 5, 4]), Bc)  # [..,p,n]
    chunk_decay = b.op("Exp", b.op("Squeeze", a_last, b.const([-1])))      # [Bt,nc,g,hpg]

    # The state entering each chunk, carried by a Scan over the chunk axis.
    sscale = b.op("Gather", b.op("Reshape", "ssm_state_scale", b.vec(neg1, n)), flat_idx, axis=0)
    state_shape = b.vec(Bt, g, hpg, p, n)
    if with_state:
        s0 = b.op("Reshape", b.op("Mul", b.op("Cast", "ssm_state", to=f32), sscale), state_shape)
    else:
        s0 = b.op("ConstantOfShape", state_shape,
                  value=numpy_helper.from_array(np.zeros(1, np.float32)))
    step = helper.make_graph(
        [helper.make_node("Identity", ["s_in"], ["s_enter"]),
         helper.make_node("Constant", [], ["unsq_axes"],
                          value=numpy_helper.from_array(np.array([-1, -2], np.int64))),
         helper.make_node("Unsqueeze", ["dec", "unsq_axes"], ["dec_b"]),
         helper.make_node("Mul", ["s_in", "dec_b"], ["s_dec"]),
         helper.make_node("Add", ["s_dec", "own"], ["s_out"])],
        "ssd_chunk_step",
        [helper.make_tensor_value_info("s_in", f32, None),
         helper.make_tensor_value_info("dec", f32, None),
         helper.make_tensor_value_info("own", f32, None)],
        [helper.make_tensor_value_info("s_out", f32, None),
         helper.make_tensor_value_info("s_enter", f32, None)])
    s_final, s_enter = b.op("Scan", s0, chunk_decay, chunk_states, outputs=2, body=step,
                            num_scan_inputs=2, scan_input_axes=[1, 1], scan_output_axes=[1])

    # Contribution of the entering state: exp(a_cum[t]) * (C_t . S_enter).
    y_state = b.op("MatMul", Cc, b.op("Transpose", s_enter, perm=[0, 1, 2, 3, 5, 4]))  # [..,T,p]
    y = b.op("Add", y, b.op("Mul", y_state, b.op("Unsqueeze", b.op("Exp", a_cum), b.const([-1]))))
    D = b.op("Reshape", "D", b.vec(g, hpg, one, one))
    y = b.op("Add", y, b.op("Mul", D, xc))
    y = b.op("Reshape", b.op("Transpose", y, perm=[0, 1, 4, 2, 3, 5]), b.vec(Bt, neg1, d_ssm))
    y = b.op("Slice", y, b.const([0]), b.vec(L), b.const([1]))
    y = b.op("Cast", y)
    b.nodes[-1].attribute.append(helper.make_attribute_ref("to", AttributeProto.INT,
                                                           ref_attr_name="out_dtype"))
    state_out = b.quantize(b.op("Reshape", s_final, b.vec(Bt, h, p, n)), sscale)
    return _function("QuantSSD", with_state, b, [y, state_out])


def make_function(op: str, with_state: bool) -> onnx.FunctionProto:
    """The model-local FunctionProto of ``op`` in its prefill (no state) or decode form."""
    if op == "QuantConv1dSiLU":
        return conv1d_silu_function(with_state)
    if op == "QuantSSD":
        return ssd_function(with_state)
    raise ValueError(f"unknown qmamba op {op!r}; known: {sorted(OPS)}")


def make_node(op: str, inputs: list[str], outputs: list[str], name: str,
              **attributes) -> onnx.NodeProto:
    """A ``qmamba`` node with the plugin attributes; ``inputs`` leave out the absent state."""
    spec = OPS[op]
    missing = [k for k, a in spec.attributes.items() if a.default is None and k not in attributes]
    unknown = [k for k in attributes if k not in spec.attributes]
    if missing or unknown:
        raise ValueError(f"{name} ({op}): missing attributes {missing}, unknown attributes {unknown}")
    attrs = {}
    for k, v in attributes.items():
        attrs[k] = float(v) if spec.attributes[k].type == "float" else int(v)
    return helper.make_node(op, inputs, outputs, name=name, domain=DOMAIN,
                            **attrs, **PLUGIN_ATTRIBUTES)


# ----------------------------------------------------------------------------------------------
# int8 initializers as custom-node inputs
# ----------------------------------------------------------------------------------------------

INT8_ZERO = "qmamba.int8_zero"     # zero point of every int8 QuantizeLinear (symmetric int8)
UNIT_SCALE = "qmamba.unit_scale"   # scale 1: DequantizeLinear/QuantizeLinear as exact casts


def shared_initializers() -> list[onnx.TensorProto]:
    return [numpy_helper.from_array(np.array(0, np.int8), INT8_ZERO),
            numpy_helper.from_array(np.array(1.0, np.float32), UNIT_SCALE)]


def add_shared_initializers(graph: onnx.GraphProto, tensors: list[onnx.TensorProto] | None = None) -> None:
    """Adds those of ``tensors`` (default: shared_initializers()) that ``graph`` does not have yet
    (rewrites of a graph use them)."""
    have = {t.name for t in graph.initializer}
    graph.initializer.extend(t for t in (shared_initializers() if tensors is None else tensors) if t.name not in have)


def constant_int8_input(name: str) -> tuple[list[onnx.NodeProto], str]:
    """Nodes that pass the int8 initializer ``name`` to a custom node: DequantizeLinear then
    QuantizeLinear, both with scale 1 (an exact identity on int8 values).

    Why not the initializer itself: TensorRT accepts an int8 constant only in front of a
    DequantizeLinear or a plugin; without the plugin the body would have to dequantize it, and
    TensorRT's parser names a DequantizeLinear layer inside a function body by the body's own node
    name, so a model with two layers fails on a duplicate layer name. An int8 tensor made by a
    QuantizeLinear is not a constant: the body casts it, and a plugin takes it as int8 directly.
    """
    dq, q = f"{name}.dq", f"{name}.int8"
    return [helper.make_node("DequantizeLinear", [name, UNIT_SCALE], [dq], name=f"{dq}/DequantizeLinear"),
            helper.make_node("QuantizeLinear", [dq, UNIT_SCALE, INT8_ZERO], [q],
                             name=f"{q}/QuantizeLinear")], q


# ----------------------------------------------------------------------------------------------
# Whole models of one node (tests, benchmarks, parser checks)
# ----------------------------------------------------------------------------------------------

_NP_TO_ONNX = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.int32): TensorProto.INT32,
               np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float16): TensorProto.FLOAT16}


def make_model(graph: onnx.GraphProto, functions: list[onnx.FunctionProto]) -> onnx.ModelProto:
    """A model with qmamba's opsets and IR version around ``graph`` and model-local ``functions``."""
    opsets = [helper.make_opsetid("", ONNX_OPSET), helper.make_opsetid(DOMAIN, VERSION)]
    model = helper.make_model(graph, opset_imports=opsets, functions=functions,
                              producer_name="qmamba")
    model.ir_version = IR_VERSION
    return model


def single_op_model(op: str, with_state: bool, activations: dict[str, np.ndarray],
                    params: dict[str, np.ndarray], attributes: dict,
                    functions: bool = True) -> onnx.ModelProto:
    """One ``op`` node: ``activations`` become graph inputs with dynamic batch and sequence axes
    (states: dynamic batch), ``params`` become initializers. Outputs are named as in ``OPS``."""
    spec = OPS[op]
    names = [t.name for t in spec.inputs if with_state or not t.optional]
    unknown = set(activations) | set(params)
    unknown -= set(names)
    if unknown:
        raise ValueError(f"{op}: unknown inputs {sorted(unknown)} (with_state={with_state})")
    inputs = []
    for name, arr in activations.items():
        dims = ["batch", "seq", *arr.shape[2:]]
        if name in ("conv_state", "ssm_state"):
            dims = ["batch", *arr.shape[1:]]
        inputs.append(helper.make_tensor_value_info(name, _NP_TO_ONNX[arr.dtype], dims))
    inits = [numpy_helper.from_array(np.ascontiguousarray(arr), name) for name, arr in params.items()]
    out_types = {"y": attributes.get("out_dtype", TensorProto.FLOAT)}
    # Output dims are left symbolic (one name per axis): shape inference fills them in.
    outputs = [helper.make_tensor_value_info(
        t.name, out_types.get(t.name, TensorProto.INT8),
        [f"{t.name}_{i}" for i in range(t.shape.count(",") + 1)]) for t in spec.outputs]
    nodes, node_inputs = [], []
    for name in names:
        if name in params and params[name].dtype == np.int8:
            pass_nodes, name = constant_int8_input(name)
            nodes += pass_nodes
        node_inputs.append(name)
    nodes.append(make_node(op, node_inputs, spec.output_names(), f"{op}_0", **attributes))
    shared = shared_initializers() if len(nodes) > 1 else []
    graph = helper.make_graph(nodes, f"{op}_single", inputs, outputs, initializer=inits + shared)
    return make_model(graph, [make_function(op, with_state)] if functions else [])
