"""Memory grows linearly with the prompt: prefill of 8192 tokens and 16 decode steps take at most
about 8 times what 1024 tokens take, on the PyTorch W8A8 reference and on ONNX Runtime (an L x L
matrix anywhere, in the reference or in an ONNX function body, would take 64 times).
benchmarks/bench_memory.py measures the shipped model at up to 65,536 tokens (docs/onnx.md, Memory)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from qmamba.export.checkpoint import save_quantized

from tiny_models import exported_tiny_model

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_memory.py"
SHORT, LONG, DECODE_STEPS = 1024, 8192, 16
# Growth allowed beyond linear: allocator rounding and ONNX Runtime's arena chunks.
LINEAR_SLACK, FIXED_SLACK = 1.5, 64 << 20


def _bench():
    spec = importlib.util.spec_from_file_location("bench_memory", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("memory")
    model, onnx_dir = exported_tiny_model("g1", root / "onnx")
    save_quantized(model, root / "checkpoint")
    return root / "checkpoint", onnx_dir


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_memory_grows_linearly_with_the_prompt(model_dirs, backend):
    bench = _bench()
    short, long = (bench.measure_in_child(backend, n, DECODE_STEPS, *model_dirs) for n in (SHORT, LONG))
    grown = {r["length"]: r["peak"] - r["loaded"] for r in (short, long)}
    bound = LONG / SHORT * LINEAR_SLACK * grown[SHORT] + FIXED_SLACK
    assert grown[LONG] <= bound, (f"{backend}: {grown[LONG] >> 20} MiB for {LONG} tokens, more than "
                                  f"{bound / (1 << 20):.0f} MiB (linear from {grown[SHORT] >> 20} MiB for {SHORT})")
