"""The PyTorch reference that ONNX Runtime is checked against: QuantMamba2LM's forward with the
sequential SSD twin ``quant_ssd_ref`` (the executable spec of docs/ops.md) in place of the chunked
``quant_ssd_chunked`` that the model's "reference" backend runs for speed.

Why not the chunked form: both it and the ONNX body sum the scan in another order than the spec,
each in its own; on a trained 8-layer model a single int8 tie that flips in an early layer grows
into a different greedy token after a 256-token prefill, between the two PyTorch forms as much as
between PyTorch and ONNX. Against the sequential spec the ONNX graph agrees token for token.

``reference_forward(model, ids, states, ssd=...)`` follows ``QuantMamba2LM.forward`` step by step
through the mixer's public step methods; ``tests/runtime/test_reference.py`` checks that with
``ssd=quant_ssd_chunked`` it reproduces ``model(ids, states)`` bit for bit, so the two cannot
drift apart unnoticed.
"""
from __future__ import annotations

import torch

from qmamba.export import ops
from qmamba.export.onnx_ops import OPS

SSD_PARAM_NAMES = OPS["QuantSSD"].input_names()[4:13]   # A_log .. ssm_state_scale


@torch.no_grad()
def reference_forward(model, input_ids: torch.Tensor, states=None, ssd=ops.quant_ssd_ref,
                      forced=None):
    """(logits fp32 [B, L, V], states) of ``model`` with ``ssd`` as the QuantSSD twin.

    ``forced``: optional ``{layer: {"x", "B", "C", "y": tensor}}``, outputs of the two custom ops
    taken from another implementation instead of computed; then everything else (embedding,
    norms, linears, gating, Hadamard) is compared on identical inputs, free of the tie flips
    that the custom ops may legitimately make.
    """
    res = model.embedding(input_ids)
    new_states = []
    for i, layer in enumerate(model.layers):
        mixer = layer.mixer
        conv_state, ssm_state = (None, None) if states is None else states[i]
        z_q, xBC_q, dt_q = mixer.in_proj_step(mixer.in_proj.quantize_input(layer.norm(res)))
        x_q, B_q, C_q, conv_state = mixer.conv_step(xBC_q, conv_state)
        if forced is not None:
            x_q, B_q, C_q = (forced[i][k] for k in ("x", "B", "C"))
        params = mixer.ssd_op_tensors()
        y, ssm_state = ssd(x_q, dt_q, B_q, C_q, *(params[k] for k in SSD_PARAM_NAMES), ssm_state,
                           **mixer.ssd_op_attributes())
        if forced is not None:
            y = forced[i]["y"]
        res = res + mixer.out_proj_step(mixer.rotate_step(mixer.gate_norm_step(y, z_q)))
        new_states.append((conv_state, ssm_state))
    logits = model.lm_head(model.lm_head.quantize_input(model.norm_f(res)))
    return logits, new_states


def reference_greedy(model, ids: torch.Tensor, n: int, ssd=ops.quant_ssd_ref):
    """Greedy continuation of ``n`` tokens (prefill, then one decode step per token).
    Returns (tokens ``[B, n]``, the logits each token was chosen from ``[B, n, V]``)."""
    logits, states = reference_forward(model, ids, None, ssd)
    chosen = [logits[:, -1]]
    token = logits[:, -1].argmax(-1)
    out = [token]
    for _ in range(n - 1):
        logits, states = reference_forward(model, token[:, None], states, ssd)
        chosen.append(logits[:, -1])
        token = logits[:, -1].argmax(-1)
        out.append(token)
    return torch.stack(out, 1), torch.stack(chosen, 1)
