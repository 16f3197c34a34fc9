"""QuantMamba2LM on the GPU: the "kernels" op backend (libqmamba_kernels) against the reference.

The whole model runs on CUDA twice, once with the PyTorch reference ops and once with the CUDA
kernels for QuantConv1dSiLU / QuantSSD. The kernels' prefill SSD sums on tensor cores (relative
y error <= 2e-3 per op, docs/kernels.md), and an int8 activation then differs by 1 LSB where a
value sits near a rounding tie, so the logits are compared by relative error and greedy tokens.
"""
from __future__ import annotations

import copy

import pytest
import torch

from qmamba.export import kernels

from qm_helpers import byte_tokens, tiny_mamba2

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available() or kernels.library_path() is None,
    reason="needs a CUDA GPU and libqmamba_kernels")]


@pytest.fixture(scope="module")
def kernel_sized_calibrated(shakespeare):
    """A tiny random model with sizes the kernels take (headdim 32: the shared tiny model's 16 is refused)."""
    from qmamba.export.calibrate import calibrate

    float_model = tiny_mamba2(hidden_size=128, num_heads=8, head_dim=32, n_groups=2, state_size=16)
    return calibrate(float_model, shakespeare, num_samples=8, seq_len=128, progress=False)


def test_kernels_backend_matches_reference(kernel_sized_calibrated, shakespeare):
    ref_model = copy.deepcopy(kernel_sized_calibrated.model).cuda()
    ker_model = copy.deepcopy(kernel_sized_calibrated.model).cuda()
    ker_model.ops_backend = "kernels"
    ids = torch.stack([byte_tokens(shakespeare[s:s + 96]) for s in (0, 4000)]).cuda()
    ref, ref_states = ref_model(ids)
    got, got_states = ker_model(ids)
    assert ref_model.last_ops_backend == "reference" and ker_model.last_ops_backend == "kernels"
    assert float((got - ref).norm() / ref.norm()) < 0.02
    assert float((got.argmax(-1) == ref.argmax(-1)).float().mean()) > 0.95
    # decode steps on both backends from their own states
    nxt = byte_tokens(shakespeare[96:97]).cuda().expand(2, 1).contiguous()
    ref1, _ = ref_model(nxt, ref_states)
    got1, _ = ker_model(nxt, got_states)
    assert float((got1 - ref1).norm() / ref1.norm()) < 0.02
