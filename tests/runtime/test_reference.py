"""runtime/reference.py follows QuantMamba2LM.forward exactly (with the model's own SSD form)."""
from __future__ import annotations

import torch

from qmamba.export import ops
from qmamba.runtime.reference import reference_forward, reference_greedy

from tiny_models import tiny_quantized_model


def test_reference_forward_reproduces_the_model_bit_for_bit():
    model = tiny_quantized_model("g8")
    ids = torch.tensor([list(b"The quick brown fox jumps over the lazy dog")])
    logits, states = model(ids)
    r_logits, r_states = reference_forward(model, ids, ssd=ops.quant_ssd_chunked)
    assert torch.equal(logits, r_logits)
    for (c, s), (rc, rs) in zip(states, r_states):
        assert torch.equal(c, rc) and torch.equal(s, rs)
    step, step_states = model(ids[:, :1], states)
    r_step, _ = reference_forward(model, ids[:, :1], r_states, ssd=ops.quant_ssd_chunked)
    assert torch.equal(step, r_step)


def test_sequential_reference_is_close_to_the_chunked_model():
    model = tiny_quantized_model("g1")
    ids = torch.tensor([list(b"Speak, speak. First Citizen: You are all resolved")])
    logits, _ = model(ids)
    r_logits, _ = reference_forward(model, ids)
    assert torch.linalg.norm(logits - r_logits) / torch.linalg.norm(logits) < 1e-2
    tokens, logits = reference_greedy(model, ids, 4)
    assert tokens.shape == (1, 4) and logits.shape == (1, 4, model.config.vocab_size)
    assert torch.equal(logits.argmax(-1), tokens)
