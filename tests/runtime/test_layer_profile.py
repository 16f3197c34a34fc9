"""runtime/layer_profile.py: the runner's per-layer profile text (runtime/cpp/engineProfile.cpp's format) parsed
into its sections and summed over the model's blocks, on a profile written the way the runner writes it."""
from __future__ import annotations

import pytest

from qmamba.runtime import layer_profile

# Session::profile's text: "<title>: " + Engine::profileLayers' ("%zu layers, %.4f ms per run (mean of %d)\n",
# then "%10.4f ms %6.2f%%  <name>\n" a layer, slowest first).
PROFILE = (
    "prefill, batch 1, seqlen 2048: 7 layers, 1.1000 ms per run (mean of 5)\n"
    "    0.4000 ms  36.36%  layers.0.mixer.ssd\n"
    "    0.3900 ms  35.45%  layers.12.mixer.ssd\n"
    "    0.1000 ms   9.09%  layers.12.mixer.in_proj.z/Split_850\n"
    "    0.1000 ms   9.09%  layers.0.mixer.in_proj.z/Split\n"
    "    0.0500 ms   4.55%  layers.3.mixer.xBC_q/Concat_quantizelinear.15.trt_dq_clone_2 copy\n"
    "    0.0500 ms   4.55%  layers.4.mixer.xBC_q/Concat_quantizelinear.17.trt_dq_clone_0 copy\n"
    "    0.0100 ms   0.91%  norm_f/QmambaGatedNorm\n"
    "decode step, batch 8 (no CUDA graph): 3 layers, 0.0300 ms per run (mean of 5)\n"
    "    0.0200 ms  66.67%  matmul.107/MatMul\n"
    "    0.0050 ms  16.67%  matmul.9/MatMul\n"
    "    0.0050 ms  16.67%  (Unnamed Layer* 287) [Shuffle]\n")


def test_sections_and_layers():
    prefill, decode = layer_profile.parse(PROFILE)
    assert prefill.title == "prefill, batch 1, seqlen 2048" and prefill.ms_per_run == pytest.approx(1.1)
    assert len(prefill.layers) == 7 and prefill.layers[0] == ("layers.0.mixer.ssd", 0.4)
    assert decode.title == "decode step, batch 8 (no CUDA graph)" and len(decode.layers) == 3


def test_blocks_and_clones_sum_into_one_group():
    prefill, decode = layer_profile.parse(PROFILE)
    got = {g.name: (round(g.ms_per_run, 6), g.count) for g in layer_profile.groups(prefill)}
    assert got == {"layers.*.mixer.ssd": (0.79, 2), "layers.*.mixer.in_proj.z/Split": (0.2, 2),
                   "layers.*.mixer.xBC_q/Concat_quantizelinear.#.trt_dq_clone copy": (0.1, 2),
                   "norm_f/QmambaGatedNorm": (0.01, 1)}
    assert [g.name for g in layer_profile.groups(decode)] == ["matmul.#/MatMul", "(Unnamed Layer) [Shuffle]"]


def test_summary_lists_the_slowest_groups_with_their_share():
    text = layer_profile.summary(PROFILE, top=2)
    lines = text.splitlines()
    assert lines[0] == "prefill, batch 1, seqlen 2048: 1.1000 ms per run in 7 layers, 4 groups (the 2 slowest)"
    assert lines[1].split() == ["0.7900", "ms", "71.82%", "2", "x", "layers.*.mixer.ssd"]
    assert lines[3].startswith("decode step, batch 8 (no CUDA graph): 0.0300 ms per run in 3 layers, 2 groups")
    assert len(lines) == 6


def test_text_without_sections_gives_an_empty_summary():
    assert layer_profile.parse("nothing profiled\n") == []
    assert layer_profile.summary("") == ""
