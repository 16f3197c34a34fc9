"""Peak memory of a long prompt on the CPU: prefill of L tokens, then decode steps, for the W8A8
PyTorch reference (``QuantMamba2LM``, reference ops) and the exported pair on ONNX Runtime
(``OrtModel``).

    python benchmarks/bench_memory.py [--lengths 4096,16384,65536] [--decode-steps 16]

The shipped mamba2-tiny-g1 is calibrated (group scales, min-max) and exported into a temporary
folder, or ``--work DIR`` is reused. Every (backend, L) runs in a fresh process: "loaded" is its
resident set once the libraries and the model are loaded; then the peak is reset (Linux:
/proc/self/clear_refs) and "peak" is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after the
prefill and the decode steps (tracemalloc does not see torch's or ONNX Runtime's allocations).
"per token" is (peak - loaded) / L: constant when memory grows linearly with L. The prompt is the
calibration text repeated to L bytes.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BACKENDS = ("torch", "onnxruntime")
MODEL = "mamba2-tiny-g1"
MiB = 1 << 20


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> int:
    """Sets the peak resident set size to the current one (Linux 4.0+); returns it in bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return peak_rss_bytes()


def prepare(work: Path) -> tuple[Path, Path]:
    """(checkpoint, export) of the calibrated shipped model in ``work``, made once."""
    ckpt, onnx_dir = work / "checkpoint", work / "onnx"
    if not (onnx_dir / "qmamba_onnx.json").is_file():
        from qmamba.data import text_file
        from qmamba.export.calibrate import calibrate_model
        from qmamba.export.checkpoint import save_quantized
        from qmamba.export.model_source import load_float
        from qmamba.export.onnx_export import export_onnx

        model = calibrate_model(load_float(MODEL, "bench_memory"), text_file().read_bytes(), progress=False)
        save_quantized(model, ckpt)
        export_onnx(model, onnx_dir, force=True)
    return ckpt, onnx_dir


def prompt(length: int):
    """int64 [1, length]: the calibration text repeated to ``length`` bytes."""
    import numpy as np

    from qmamba.data import text_file

    text = np.frombuffer(text_file().read_bytes(), np.uint8)
    return np.resize(text, length).astype(np.int64)[None]


def measure(backend: str, length: int, decode_steps: int, ckpt: Path, onnx_dir: Path) -> dict:
    """Prefill of ``length`` tokens and ``decode_steps`` greedy steps in this process."""
    import numpy as np
    import torch

    ids = prompt(length)
    if backend == "torch":
        from qmamba.export.model_source import load_w8a8

        model = load_w8a8(ckpt, "bench_memory").eval()
        loaded = reset_peak_rss()
        t0 = time.perf_counter()
        with torch.no_grad():
            logits, states = model(torch.from_numpy(ids))
            for _ in range(decode_steps):
                logits, states = model(logits[:, -1:].argmax(-1), states)
        last = logits[0, -1].numpy()
    else:
        from qmamba.runtime.ort import OrtModel

        model = OrtModel(onnx_dir)
        loaded = reset_peak_rss()
        t0 = time.perf_counter()
        logits, states = model.prefill(ids)
        for _ in range(decode_steps):
            logits, states = model.decode(logits[:, -1].argmax(-1), states)
        last = logits[0, -1]
    seconds = time.perf_counter() - t0
    peak = peak_rss_bytes()
    if not np.isfinite(last).all():
        raise RuntimeError(f"{backend}, L = {length}: non-finite logits")
    return {"backend": backend, "length": length, "decode_steps": decode_steps, "loaded": loaded,
            "peak": peak, "seconds": round(seconds, 2)}


def measure_in_child(backend: str, length: int, decode_steps: int, ckpt: Path, onnx_dir: Path) -> dict:
    """``measure`` in a fresh Python process (its own peak RSS)."""
    done = subprocess.run([sys.executable, __file__, "--child", backend, str(length), str(decode_steps),
                           str(ckpt), str(onnx_dir)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{backend}, L = {length} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = [f"{'backend':<12} {'L':>7} {'loaded MiB':>11} {'peak MiB':>9} {'per token':>10} {'seconds':>8}"]
    for r in rows:
        per_token = (r["peak"] - r["loaded"]) / r["length"]
        lines.append(f"{r['backend']:<12} {r['length']:>7} {r['loaded'] / MiB:>11.0f} {r['peak'] / MiB:>9.0f} "
                     f"{per_token / 1024:>7.1f} KiB {r['seconds']:>8.1f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="4096,16384,65536", help="prompt lengths (default %(default)s)")
    parser.add_argument("--decode-steps", type=int, default=16)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--work", default=None, help="folder for the checkpoint and export (default: temporary)")
    parser.add_argument("--child", nargs=5, metavar=("BACKEND", "L", "STEPS", "CKPT", "ONNX"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        backend, length, steps, ckpt, onnx_dir = args.child
        print(json.dumps(measure(backend, int(length), int(steps), Path(ckpt), Path(onnx_dir))))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, onnx_dir = prepare(Path(args.work or tmp))
        rows = []
        for backend in args.backends.split(","):
            for length in (int(v) for v in args.lengths.split(",")):
                rows.append(measure_in_child(backend, length, args.decode_steps, ckpt, onnx_dir))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(f"\n{MODEL}, prefill of L tokens + {args.decode_steps} decode steps, peak RSS of a fresh process:")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
