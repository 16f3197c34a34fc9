"""The CPU-testable parts of benchmarks/bench_kernels.py: the bytes each kernel must move (its bound)
against hand counts, and how the fp16 peers are imported and called (mamba_ssm's argument layouts)."""
from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest
import torch

import kernel_cases as kc
from qmamba.export import ops
from qmamba.export.layer_sizes import LayerShape

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))
import kernel_bytes as kb  # noqa: E402
import kernel_peers  # noqa: E402

# A toy layer: 2 heads of 3 dims, state 4, one SSD group, conv width 4 (d_ssm 6, conv_dim 14),
# 2 rows of 5 tokens.
TOY = dict(nheads=2, headdim=3, d_state=4, ngroups=1)


def test_quant_ssd_bytes_by_hand():
    # prefill: int8 x 2*5*6=60, dt 2*5*2=20, B 40, C 40; fp16 y 2*5*6*2=120; int8 state out 2*2*3*4=48
    assert kb.quant_ssd_bytes(2, 5, **TOY, decode=False) == 60 + 20 + 40 + 40 + 120 + 48
    # decode: x 12, dt 4, B 8, C 8; y 24; the state in and out 2*48
    assert kb.quant_ssd_bytes(2, 1, **TOY, decode=True) == 12 + 4 + 8 + 8 + 24 + 96


def test_quant_conv_bytes_by_hand():
    # int8 xBC in 2*5*14=140, x|B|C out 140, state (3 rows) in and out 2*2*3*14=168, weight 56 + bias 14
    assert kb.quant_conv_bytes(2, 5, 14, 4) == 140 + 140 + 168 + 70


def test_in_proj_conv_bytes_by_hand():
    # fp32 xBC in 2*5*14*4=560, int8 x|B|C out 140, state (3 rows) out 2*3*14=84, weight 56 + bias 14, fp32 col 56
    assert kb.in_proj_conv_bytes(2, 5, 14, 4) == 560 + 140 + 84 + 70 + 56


def test_fp16_peer_bytes_by_hand():
    # prefill: fp16 x 120, dt 40, B 80, C 80, y 120; fp32 final state 2*2*3*4*4=192
    assert kb.fp16_ssd_bytes(2, 5, **TOY, decode=False) == 120 + 40 + 80 + 80 + 120 + 192
    # decode: x 24, dt 8 (one per head), B 16, C 16, y 24; fp16 state in and out 2*48*2
    assert kb.fp16_ssd_bytes(2, 1, **TOY, decode=True) == 24 + 8 + 16 + 16 + 24 + 192
    # conv prefill: fp16 in 280, out 280, weight and bias 2*70 (no state); decode adds the state
    assert kb.fp16_conv_bytes(2, 5, 14, 4, decode=False) == 280 + 280 + 140
    assert kb.fp16_conv_bytes(2, 1, 14, 4, decode=True) == 56 + 56 + 2 * 2 * 3 * 14 * 2 + 140


def test_8b_bounds():
    """The 8b layer's QuantSSD bounds: 447 MB at batch 8, L 2048 (0.150 ms at 2.98 TB/s of copy),
    136 MB for a decode step at batch 64 (46 us)."""
    s = kc.LAYERS["8b"]
    # int8 x|dt|B|C 8*2048*(8192+128+2048), fp16 y 8*2048*8192*2, int8 state 8*128*64*128
    assert (kb.quant_ssd_bytes(8, 2048, s.nheads, s.headdim, s.d_state, s.ngroups, decode=False)
            == 169_869_312 + 268_435_456 + 8_388_608)
    # tokens 64*10368, y 64*8192*2, the int8 state twice 2*64*128*64*128
    assert (kb.quant_ssd_bytes(64, 1, s.nheads, s.headdim, s.d_state, s.ngroups, decode=True)
            == 663_552 + 1_048_576 + 134_217_728)


@pytest.fixture
def fake_mamba_ssm(tmp_path, monkeypatch):
    """A mamba_ssm laid out as the CUDA-less wheel is: its __init__ imports a CUDA extension that is
    not there, its Triton modules import fine. Returns a function writing one module's source."""
    root = tmp_path / "mamba_ssm"
    (root / "ops" / "triton").mkdir(parents=True)
    (root / "__init__.py").write_text("import selective_scan_cuda_absent\n")
    (root / "ops" / "__init__.py").write_text("")
    (root / "ops" / "triton" / "__init__.py").write_text("")
    (root / "ops" / "triton" / "ssd_combined.py").write_text("def mamba_chunk_scan_combined(): return 'scan'\n")
    (root / "ops" / "triton" / "selective_state_update.py").write_text(
        "def selective_state_update(): return 'update'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield lambda name, src: (root / "ops" / "triton" / name).write_text(src)
    for name in [m for m in sys.modules if m == "mamba_ssm" or m.startswith("mamba_ssm.")]:
        del sys.modules[name]


def test_peers_load_without_the_package_init(fake_mamba_ssm):
    peers, why = kernel_peers.load_peers()
    assert why == "" and peers.chunk_scan() == "scan" and peers.state_update() == "update"
    if importlib.util.find_spec("causal_conv1d") is None:
        assert peers.conv_fn is None and peers.conv_update is None


def test_peers_report_why_they_cannot_load(fake_mamba_ssm):
    fake_mamba_ssm("ssd_combined.py", "import einops_absent\n")
    peers, why = kernel_peers.load_peers()
    assert peers is None and "einops_absent" in why
    assert "mamba_ssm" not in sys.modules  # the bare package is not left behind


class Recorder:
    """Stands in for mamba_ssm's kernels: keeps the arguments of the last call."""

    def __call__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def test_ssd_peer_calls_match_mamba_ssm_layouts():
    """The shapes mamba_ssm asserts, and the stride-0 head-dim broadcast (tie_hdim) of Mamba2.step."""
    s, bt, L = LayerShape(ngroups=2, nheads=4, headdim=8, d_state=16), 3, 7
    t, a = kc.ssd_case(s, bt, L, torch.Generator().manual_seed(0), device="cpu")
    scan, update = Recorder(), Recorder()
    peers = kernel_peers.Peers(scan, update)

    kernel_peers.ssd_peer(peers, t, a, decode=False)()
    x, dt, A, B, C, chunk = scan.args
    assert x.shape == (bt, L, s.nheads, s.headdim) and dt.shape == (bt, L, s.nheads) and A.shape == (s.nheads,)
    assert B.shape == C.shape == (bt, L, s.ngroups, s.d_state) and chunk == kernel_peers.PEER_CHUNK_SIZE
    assert x.dtype == dt.dtype == B.dtype == torch.float16
    assert scan.kwargs["dt_softplus"] and scan.kwargs["return_final_states"]
    assert scan.kwargs["D"].shape == scan.kwargs["dt_bias"].shape == (s.nheads,)
    # int8 x back from the fp16 peer input with the group scales: it was dequantized with them
    xs = ops.x_channel_scales(t["x_out_scales"], t["x_head_group_range"], t["x_dim_group_range"], s.nheads, s.headdim)
    assert torch.equal((x.float().reshape(bt, L, -1) / xs).round(), t["x"].float())

    kernel_peers.ssd_peer(peers, t, a, decode=True)()
    state, x, dt, A, B, C = update.args
    assert state.shape == (bt, s.nheads, s.headdim, s.d_state) and state.dtype == torch.float16
    assert x.shape == dt.shape == (bt, s.nheads, s.headdim) and A.shape == (s.nheads, s.headdim, s.d_state)
    assert B.shape == C.shape == (bt, s.ngroups, s.d_state)
    D, dt_bias = update.kwargs["D"], update.kwargs["dt_bias"]
    assert D.shape == dt_bias.shape == (s.nheads, s.headdim) and update.kwargs["z"] is None
    # selective_state_update's tie_hdim test
    assert A.stride()[-2:] == (0, 0) and dt.stride(-1) == 0 and dt_bias.stride(-1) == 0


def test_previous_times_this_script_on_the_earlier_library(tmp_path):
    """--previous LIB: the same shapes, qmamba's kernels only, in a process that loads LIB; rows matched by key."""
    import bench_kernels

    old = tmp_path / "libqmamba_kernels.so"
    args = bench_kernels.parser().parse_args(["--only", "ssd", "--quick", "--previous", str(old)])
    cmd, env = bench_kernels.previous_command(args)
    assert pathlib.Path(cmd[1]).name == "bench_kernels.py"
    assert cmd[2:] == ["--no-peers", "--no-baseline", "--quick", "--only", "ssd"]
    assert env["QMAMBA_KERNELS_LIB"] == str(old)
    row = {"kernel": "ssd prefill", "layer": "8b", "batch": 8, "L": 2048}
    assert bench_kernels.row_key(row) != bench_kernels.row_key(row | {"chunk_size": 64})
