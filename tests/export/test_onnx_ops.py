"""The ONNX function bodies of QuantConv1dSiLU and QuantSSD, run by ONNX Runtime, against the
PyTorch reference twins of docs/ops.md (qmamba.export.ops)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from qmamba.export import onnx_ops, ops
from qmamba.runtime.agreement import float_agreement, int8_agreement

from op_cases import OP_SHAPES, conv_case, ssd_case

SHAPES = ["130m-narrow", "8b-narrow"]
# y of the chunked ONNX body vs the sequential fp32 reference: both are fp32, only the order of
# the sums differs (chunk matrices, cumulative sums of dt*A, a scan over chunks). Measured here:
# 2e-7 .. 4e-7 at L <= 64, 8e-6 at L = 2048 (130m shape, random int8 inputs); torch's own chunked
# form differs from the reference by the same order. 2e-5 leaves room for other CPUs' BLAS.
SSD_Y_REL_BOUND = 2e-5


def run_single(op, with_state, acts, params, attrs):
    model = onnx_ops.single_op_model(op, with_state, acts, params, attrs)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, acts)


def t(arrays):
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seqlen", [1, 7, 37])
@pytest.mark.parametrize("with_state", [False, True])
def test_conv_matches_reference(shape, seqlen, with_state):
    acts, params, attrs = conv_case(OP_SHAPES[shape], 2, seqlen, with_state, seed=seqlen)
    got = run_single("QuantConv1dSiLU", with_state, acts, params, attrs)
    a = t(acts)
    ref = ops.quant_conv1d_silu_ref(a["xBC"], **t(params), conv_state=a.get("conv_state"), **attrs)
    for name, g, r in zip(onnx_ops.OPS["QuantConv1dSiLU"].output_names(), got, ref):
        agreement = int8_agreement(name, g, r.numpy())
        assert agreement.ok, agreement.row()


@pytest.mark.parametrize("d_conv", [2, 3])
def test_conv_other_widths(d_conv):
    s = OP_SHAPES["130m-narrow"]
    shape = type(s)(**{**s.__dict__, "d_conv": d_conv})
    acts, params, attrs = conv_case(shape, 1, 5, True)
    got = run_single("QuantConv1dSiLU", True, acts, params, attrs)
    a = t(acts)
    ref = ops.quant_conv1d_silu_ref(a["xBC"], **t(params), conv_state=a["conv_state"], **attrs)
    assert got[3].shape == (1, d_conv - 1, s.conv_dim)
    for g, r in zip(got, ref):
        assert int8_agreement("out", g, r.numpy()).ok


def fit_state_scale(acts, params, attrs):
    """Sets ssm_state_scale so that the final state fills the int8 range without saturating
    (random inputs make states of any size; a saturated state would compare nothing)."""
    scale = 1.0
    while True:
        params["ssm_state_scale"][...] = scale
        peak = np.abs(_ssd_ref(acts, params, attrs)[1].numpy().astype(int)).max()
        if peak < 127:
            params["ssm_state_scale"][...] = np.float32(scale * max(peak, 1) / 120.0)
            return
        scale *= 8.0


def _ssd_ref(acts, params, attrs):
    a = t(acts)
    return ops.quant_ssd_ref(a["x"], a["dt"], a["B"], a["C"], **t(params),
                             ssm_state=a.get("ssm_state"), **attrs)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seqlen,chunk", [(1, 128), (7, 4), (37, 8), (64, 16)])
@pytest.mark.parametrize("with_state", [False, True])
def test_ssd_matches_reference(shape, seqlen, chunk, with_state):
    acts, params, attrs = ssd_case(OP_SHAPES[shape], 2, seqlen, with_state, seed=seqlen,
                                   chunk_size=chunk)
    fit_state_scale(acts, params, attrs)
    y, state = run_single("QuantSSD", with_state, acts, params, attrs)
    y_ref, state_ref = _ssd_ref(acts, params, attrs)
    assert y.dtype == np.float32
    agreement = float_agreement("y", y, y_ref.numpy(), SSD_Y_REL_BOUND)
    assert agreement.ok, agreement.row()
    agreement = int8_agreement("ssm_state_out", state, state_ref.numpy())
    assert agreement.ok, agreement.row()
    # the state is neither saturated nor mostly zero: the comparison means something
    q = np.abs(state_ref.numpy().astype(int))
    assert q.max() < 127 and (q != 0).mean() > 0.3


def test_ssd_float16_output_and_dt_clamp():
    acts, params, attrs = ssd_case(OP_SHAPES["8b-narrow"], 1, 9, True, chunk_size=4)
    attrs.update(out_dtype=onnx.TensorProto.FLOAT16, dt_min=0.01, dt_max=0.05)
    y, state = run_single("QuantSSD", True, acts, params, attrs)
    y_ref, state_ref = _ssd_ref(acts, params, attrs)
    assert y.dtype == np.float16 and y_ref.dtype == torch.float16
    # fp16 output: the fp32 values agree to 2e-5, then each is rounded to fp16 (2^-11 relative)
    assert float_agreement("y", y, y_ref.numpy(), 1e-3).ok
    assert int8_agreement("ssm_state_out", state, state_ref.numpy()).ok


def test_ssd_defaults_apply_when_attributes_absent():
    """dt_min, dt_max, out_dtype and chunk_size are optional: the function's defaults apply."""
    acts, params, attrs = ssd_case(OP_SHAPES["130m-narrow"], 1, 150, False)
    del attrs["chunk_size"]
    y, state = run_single("QuantSSD", False, acts, params, attrs)
    y_ref, state_ref = _ssd_ref(acts, params, attrs)
    assert float_agreement("y", y, y_ref.numpy(), SSD_Y_REL_BOUND).ok
    assert int8_agreement("ssm_state_out", state, state_ref.numpy()).ok


def test_conv_decode_equals_prefill():
    """Prefill L tokens, then one decode step from the returned state == prefill of L+1, bit for bit
    (docs/ops.md; QuantSSD's weaker guarantee is checked in test_ssd_guarantees.py)."""
    s = OP_SHAPES["8b-narrow"]
    L = 11
    acts, params, attrs = conv_case(s, 2, L + 1, False, seed=3)
    full = run_single("QuantConv1dSiLU", False, acts, params, attrs)
    head = run_single("QuantConv1dSiLU", False, {"xBC": acts["xBC"][:, :L]}, params, attrs)
    step = run_single("QuantConv1dSiLU", True, {"xBC": acts["xBC"][:, L:], "conv_state": head[3]},
                      params, attrs)
    for f, d in zip(full[:3], step[:3]):
        np.testing.assert_array_equal(f[:, L:], d)
    np.testing.assert_array_equal(full[3], step[3])


@pytest.mark.parametrize("op", list(onnx_ops.OPS))
@pytest.mark.parametrize("with_state", [False, True])
def test_single_op_models_pass_checker_and_shape_inference(op, with_state):
    onnx_ops.register_schemas()
    case = conv_case if op == "QuantConv1dSiLU" else ssd_case
    acts, params, attrs = case(OP_SHAPES["8b-narrow"], 1, 3, with_state)
    model = onnx_ops.single_op_model(op, with_state, acts, params, attrs)
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    assert {o.name for o in inferred.graph.output} == set(onnx_ops.OPS[op].output_names())


def test_schemas_follow_ops_table():
    onnx_ops.register_schemas()
    for op, spec in onnx_ops.OPS.items():
        schema = onnx.defs.get_schema(op, onnx_ops.VERSION, onnx_ops.DOMAIN)
        assert [i.name for i in schema.inputs] == spec.input_names()
        assert [o.name for o in schema.outputs] == spec.output_names()
        assert set(schema.attributes) == set(spec.attributes) | set(onnx_ops.PLUGIN_ATTRIBUTES)
        for name, a in spec.attributes.items():
            assert schema.attributes[name].required == (a.default is None), name
        optional = [i.name for i in schema.inputs
                    if i.option == onnx.defs.OpSchema.FormalParameterOption.Optional]
        assert optional == [t.name for t in spec.inputs if t.optional]


def test_function_forms():
    for op, spec in onnx_ops.OPS.items():
        decode = onnx_ops.make_function(op, with_state=True)
        prefill = onnx_ops.make_function(op, with_state=False)
        assert list(decode.input) == spec.input_names()
        assert list(prefill.input) == [t.name for t in spec.inputs if not t.optional]
        assert list(decode.output) == spec.output_names() == list(prefill.output)
        assert (decode.domain, decode.name) == (onnx_ops.DOMAIN, op)


def test_node_attribute_errors():
    with pytest.raises(ValueError, match="QuantSSD.*missing attributes \\['dt_scale'"):
        onnx_ops.make_node("QuantSSD", [], ["y"], "layer 3 ssd", ngroups=1, nheads=1, headdim=1,
                           d_state=1)
    with pytest.raises(ValueError, match="unknown attributes \\['chunk'\\]"):
        onnx_ops.make_node("QuantSSD", [], ["y"], "layer 3 ssd", dt_scale=1.0, ngroups=1,
                           nheads=1, headdim=1, d_state=1, chunk=4)
    with pytest.raises(ValueError, match="unknown qmamba op 'QuantFoo'"):
        onnx_ops.make_function("QuantFoo", True)
