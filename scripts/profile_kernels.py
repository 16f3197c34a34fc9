"""One launch of each kernel at a benchmark shape, for Nsight Compute:

    ncu --clock-control none --section SpeedOfLight --section Occupancy --section WarpStateStats \\
        -k regex:quant_ python scripts/profile_kernels.py

QuantConv1dSiLU prefill (2.7b, batch 8, L 2048), QuantSSD prefill (8b, batch 8, L 2048) and
QuantSSD decode (8b, batch 64). With --decode instead: one layer of the decode step of
benchmarks/bench_decode_step.py (2.7b widths, batch 1): QmambaW8A8Linear in_proj, QmambaDecodeMixer,
QmambaW8A8Linear out_proj (-k regex:"w8a8_linear|decode_mixer").
"""
from __future__ import annotations

import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_kernels as bk  # noqa: E402  (its path setup also makes kernel_cases importable)
import kernel_cases as kc  # noqa: E402


def decode_layer(gen: torch.Generator) -> None:
    import bench_decode_step as step

    *launches, _ = step.layer_launches(step.model(1, 1, gen)[0], torch.randn(1, 1, step.D_MODEL, device="cuda"))
    for launch in launches:
        launch()


def main() -> int:
    gen = torch.Generator(device="cuda").manual_seed(0)
    if "--decode" in sys.argv[1:]:
        decode_layer(gen)
        torch.cuda.synchronize()
        return 0
    t, a = kc.conv_case(kc.LAYERS["2.7b"], 8, 2048, gen)
    bk.conv_launch(t, a, decode=False)()
    t, a = kc.ssd_case(kc.LAYERS["8b"], 8, 2048, gen, with_state=False)
    bk.ssd_launch(t, a, decode=False)()
    t, a = kc.ssd_case(kc.LAYERS["8b"], 64, 1, gen)
    bk.ssd_launch(t, a, decode=True)()
    torch.cuda.synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
