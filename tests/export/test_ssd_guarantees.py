"""What QuantSSD guarantees (docs/ops.md, QuantSSD Tolerance and Decode equals prefill), checked on
the ONNX function body (ONNX Runtime, CPU) against the sequential fp32 reference.

The state is compared before its rounding, in LSB (``S / ssm_state_scale``): the ONNX body's value
is read from the function's Div that feeds the final Round, exposed as an extra output.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from qmamba.export import onnx_ops, ops
from qmamba.runtime.agreement import float_agreement, int8_agreement

from op_cases import OP_SHAPES, ssd_case
from test_onnx_ops import SSD_Y_REL_BOUND, fit_state_scale, run_single, t

# docs/ops.md: a chunked fp32 implementation's state is within this many LSB of the reference's.
STATE_TIE_DELTA = 0.05


def onnx_ssd_with_state_lsb(acts, params, attrs):
    """The ONNX body's (y, ssm_state_out, S_L / ssm_state_scale before rounding)."""
    with_state = "ssm_state" in acts
    model = onnx_ops.single_op_model("QuantSSD", with_state, acts, params, attrs)
    body = model.functions[0]
    producer = {out: node for node in body.node for out in node.output}
    node = producer[body.output[1]]                 # Q(S, s) = Cast(Clip(Round(Div(S, s))))
    while node.op_type != "Div":
        node = producer[node.input[0]]
    body.output.append(node.output[0])
    model.graph.node[-1].output.append("state_lsb")
    model.graph.output.append(helper.make_tensor_value_info("state_lsb", TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, acts)


def ref_inputs(acts, params, attrs):
    a, p = t(acts), t(params)
    return ops._ssd_inputs(a["x"], a["dt"], a["B"], a["C"], p["A_log"], p["D"], p["dt_bias"],
                           p["x_out_scales"], p["B_out_scales"], p["C_out_scales"],
                           p["x_head_group_range"], p["x_dim_group_range"], p["ssm_state_scale"],
                           a.get("ssm_state"), attrs["dt_scale"], attrs.get("dt_min", 0.0),
                           attrs.get("dt_max", float("inf")), attrs["ngroups"], attrs["nheads"],
                           attrs["headdim"], attrs["d_state"])


def ref_state_lsb(acts, params, attrs) -> np.ndarray:
    """The sequential recurrence of docs/ops.md: S_L / ssm_state_scale, before rounding."""
    xh, Bh, _, dtv, A, _, S, sscale = ref_inputs(acts, params, attrs)
    for k in range(xh.shape[1]):
        S = torch.exp(dtv[:, k] * A)[:, :, None, None] * S + (
            (dtv[:, k, :, None] * xh[:, k])[..., None] * Bh[:, k, :, None, :])
    return (S / sscale).numpy()


@pytest.mark.parametrize("shape", ["130m-narrow", "8b-narrow"])
@pytest.mark.parametrize("seqlen,chunk", [(37, 8), (256, 64), (256, 128)])
def test_chunked_state_within_delta_of_reference(shape, seqlen, chunk):
    """ssm_state_out: the chunked body's S / scale is within STATE_TIE_DELTA of the reference's, so
    the int8 states differ only where the reference lies that close to a tie, and by 1 LSB."""
    acts, params, attrs = ssd_case(OP_SHAPES[shape], 1, seqlen, False, seed=seqlen, chunk_size=chunk)
    fit_state_scale(acts, params, attrs)
    _, state, lsb = onnx_ssd_with_state_lsb(acts, params, attrs)
    ref = ref_state_lsb(acts, params, attrs)
    assert np.abs(lsb - ref).max() <= STATE_TIE_DELTA
    differ = state != np.clip(np.round(ref), -128, 127)
    tie_distance = np.abs(np.abs(ref - np.floor(ref)) - 0.5)
    assert (tie_distance[differ] <= STATE_TIE_DELTA).all()


def prefill_then_step(shape, L, chunk, seed, state_scale_factor=1.0):
    """(acts, params, attrs) of L + 1 tokens and the int8 state after the first L (reference)."""
    acts, params, attrs = ssd_case(OP_SHAPES[shape], 2, L + 1, False, seed=seed, chunk_size=chunk)
    fit_state_scale(acts, params, attrs)
    params["ssm_state_scale"] *= np.float32(state_scale_factor)  # < 1: some states saturate
    first = {k: v[:, :L] for k, v in acts.items()}
    last = {k: v[:, L:] for k, v in acts.items()}
    state_mid = ops.quantize(torch.from_numpy(ref_state_lsb(first, params, attrs)), 1.0).numpy()
    return acts, first, {**last, "ssm_state": state_mid}, params, attrs


def test_decode_step_equals_reference_step():
    """The decode step is the op at L = 1: from the same int8 state, the body's step agrees with the
    reference's step within the op's tolerance (y) and except at ties (ssm_state_out)."""
    _, _, step, params, attrs = prefill_then_step("8b-narrow", 37, 8, seed=5)
    y, state = run_single("QuantSSD", True, step, params, attrs)
    a = t(step)
    y_ref, state_ref = ops.quant_ssd_ref(a["x"], a["dt"], a["B"], a["C"], **t(params),
                                         ssm_state=a["ssm_state"], **attrs)
    assert float_agreement("y", y, y_ref.numpy(), SSD_Y_REL_BOUND).ok
    assert int8_agreement("ssm_state_out", state, state_ref.numpy()).ok


@pytest.mark.parametrize("shape,L,chunk,factor", [("8b-narrow", 11, 4, 1.0), ("130m-narrow", 37, 8, 1.0),
                                                  ("8b-narrow", 37, 8, 0.25)])
def test_decode_after_prefill_differs_by_the_state_rounding(shape, L, chunk, factor):
    """Prefill L, then a step from the int8 state, against L + 1 at once (all on the ONNX body).
    With e = S_L - s Q(S_L): |y_step - y_full| <= exp(dt A) sum_j |Ch_j| |e_j|; where S_L is not
    saturated, |e| <= s / 2 and the int8 states after the step differ by at most 1 LSB."""
    acts, first, step, params, attrs = prefill_then_step(shape, L, chunk, seed=L, state_scale_factor=factor)
    y_full, state_full = run_single("QuantSSD", False, acts, params, attrs)
    _, state_mid, state_mid_lsb = onnx_ssd_with_state_lsb(first, params, attrs)
    step["ssm_state"] = state_mid
    y_step, state_step = run_single("QuantSSD", True, step, params, attrs)

    xh, _, Ch, dtv, A, _, _, sscale = ref_inputs({k: v for k, v in step.items() if k != "ssm_state"},
                                                 params, attrs)
    decay = torch.exp(dtv[:, 0] * A).numpy()[..., None]                       # [bt, h, 1]
    e = np.abs(state_mid_lsb - step["ssm_state"]) * sscale.numpy()             # [bt, h, p, n]
    C = np.abs(Ch[:, 0].numpy())[:, :, None, :]                                # [bt, h, 1, n]
    bound = decay * (e * C).sum(-1)
    dy = np.abs(y_step[:, 0] - y_full[:, L]).reshape(bound.shape)
    # the bound is exact arithmetic; fp32 sums add ulps of y
    assert (dy <= bound * (1 + 1e-4) + 1e-6 * np.abs(y_full[:, L]).max()).all()

    saturated = np.abs(state_mid_lsb) > 127.5
    assert saturated.any() or factor == 1.0  # the reduced scale does saturate some states
    unsaturated_rows = ~saturated.any(-1)
    half_lsb_bound = decay * (0.5 * sscale.numpy() * C).sum(-1) * (1 + 1e-4)
    assert (dy <= half_lsb_bound)[unsaturated_rows].all()
    diff = np.abs(state_step.astype(int) - state_full.astype(int))
    assert diff[~saturated].max() <= 1
    if not saturated.any():
        # the state's rounding moves y by a per cent or so: far beyond the prefill tolerance
        assert float_agreement("y", y_step[:, 0], y_full[:, L], 5e-2).ok
