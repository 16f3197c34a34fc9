"""ONNX Runtime (CPU) time of the QuantSSD function body vs the torch chunked reference.

Target: a 130m-shaped layer (h=24, p=64, n=128, g=1), batch 1, L=2048, under 2 s on a
2-core machine. Prints the median of --repeat runs after one warm-up, for both, and their ratio.

    python benchmarks/bench_onnx_ssd.py [--shape 130m] [--seqlen 2048] [--batch 1]
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

import onnxruntime as ort
import torch

from qmamba.export import onnx_ops, ops
from qmamba.export.layer_sizes import LAYER_SHAPES
from qmamba.runtime.agreement import float_agreement

# The ONNX op cases are test helpers (tests/op_cases.py), not part of the installed package.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from op_cases import ssd_case  # noqa: E402

TARGET_S = 2.0


def median_time(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="130m", choices=sorted(LAYER_SHAPES))
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--chunk-size", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    acts, params, attrs = ssd_case(LAYER_SHAPES[args.shape], args.batch, args.seqlen, False,
                                   chunk_size=args.chunk_size)
    model = onnx_ops.single_op_model("QuantSSD", False, acts, params, attrs)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    t_acts = {k: torch.from_numpy(v) for k, v in acts.items()}
    t_params = {k: torch.from_numpy(v) for k, v in params.items()}

    def run_torch():
        return ops.quant_ssd_chunked(t_acts["x"], t_acts["dt"], t_acts["B"], t_acts["C"],
                                     **t_params, **attrs)

    t_ort = median_time(lambda: sess.run(None, acts), args.repeat)
    t_torch = median_time(run_torch, args.repeat)
    y = sess.run(None, acts)[0]
    rel = float_agreement("y", y, run_torch()[0].numpy(), 1.0).fraction
    print(f"QuantSSD {args.shape} (h={attrs['nheads']}, p={attrs['headdim']}, n={attrs['d_state']}, "
          f"g={attrs['ngroups']}) batch {args.batch} L {args.seqlen} chunk {args.chunk_size}, "
          f"{torch.get_num_threads()} threads")
    print(f"  onnxruntime function body: {t_ort:.3f} s (median of {args.repeat})"
          f"  target < {TARGET_S:.1f} s: {'met' if t_ort < TARGET_S else 'MISSED'}")
    print(f"  torch quant_ssd_chunked:   {t_torch:.3f} s")
    print(f"  ratio onnxruntime / torch: {t_ort / t_torch:.2f}")
    print(f"  y rel. L2 difference vs torch chunked: {rel:.2e}")
    return 0 if t_ort < TARGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
