"""The accuracy report of docs/accuracy.md: every shipped model, float and W8A8, on real text.

For each model: bits per byte of the float model (fp32, fp16) on the whole text and on its first
``--prefix-bytes`` bytes; W8A8 with one per-tensor scale, with group scales (min-max) and with group
scales (percentile), each with and without the Hadamard rotation, on the prefix (the W8A8 PyTorch
reference is slow: the prefix keeps all twelve calibrations and evaluations to minutes on one GPU);
and the SQNR in dB of x after QuantConv1dSiLU per layer, group vs per-tensor scales. The group
min-max checkpoint (no Hadamard) of each model is saved, so that its ONNX export can be scored
on ONNX Runtime against the same prefix elsewhere (``qmamba export`` + ``qmamba eval --backend
onnxruntime``). Writes ``OUT/results.json``; rows that fail record their error and the run goes on.

Usage (on a GPU; the table of docs/accuracy.md came from this command)::

    python benchmarks/accuracy_report.py --text path/to/wikitext-2/test.txt \\
        --calib-text path/to/wikitext-2/valid.txt --out OUT --device cuda --batch 16
"""
from __future__ import annotations

import argparse
import json
import math
import time
import traceback
from pathlib import Path

import torch

from qmamba import models
from qmamba.export.calibrate import calibrate, x_quantization_error
from qmamba.export.checkpoint import save_quantized
from qmamba.runtime import evaluate as ev

# (row name, calibrate() keyword arguments)
QUANT_ROWS = [
    ("W8A8 per-tensor", dict(per_tensor=True, observer="minmax")),
    ("W8A8 group min-max", dict(observer="minmax")),
    ("W8A8 group percentile", dict(observer="percentile", percentile=0.9995)),
]


def sqnr_db(rel_err: float) -> float:
    """Signal-to-quantization-noise ratio from a relative RMS error ||e|| / ||x||."""
    return -20.0 * math.log10(max(rel_err, 1e-12))


def report_model(name, text, calib, args, out: Path, save) -> dict:
    """Fills and returns {rows, x_sqnr_db} for one model, calling save() after every row."""
    rows, sqnr = [], {}
    result = {"rows": rows, "x_sqnr_db": sqnr}
    save(name, result)
    prefix = text[:args.prefix_bytes]

    def add(row, scorer_fn, data, span):
        t0 = time.monotonic()
        try:
            r = ev.evaluate(scorer_fn(), data, args.window, args.batch, progress=False)
            rows.append({"row": row, "span": span, **r})
            print(f"{name:16s} {row:40s} {span:8s} {r['bits_per_byte']:.4f} bpb  {r['seconds']:.1f}s", flush=True)
            save(name, result)
        except Exception as e:  # one broken row must not cost the rest of the report
            traceback.print_exc()
            rows.append({"row": row, "span": span, "error": f"{type(e).__name__}: {e}",
                         "seconds": round(time.monotonic() - t0, 1)})
            save(name, result)

    for dtype in ("fp32", "fp16"):
        fm = lambda dtype=dtype: ev.FloatTorchScorer(models.load_float(name, ev.DTYPES[dtype]), args.device)
        add(f"float {dtype}", fm, prefix, "prefix")
        if args.full:
            add(f"float {dtype}", fm, text, "full")

    float_model = models.load_float(name).to(args.device)
    calib_ids = calib.to(args.device)
    sqnr_tokens = text[:args.sqnr_rows * args.window].reshape(args.sqnr_rows, args.window).to(args.device)
    for row, kw in QUANT_ROWS:
        for hadamard in (False, True):
            label = f"{row}{' + Hadamard' if hadamard else ''}"
            t0 = time.monotonic()
            try:
                cal = calibrate(float_model, calib_ids, hadamard=hadamard, num_samples=args.num_samples,
                                seq_len=args.seq_len, batch_size=args.calib_batch, progress=False, **kw)
            except Exception as e:
                traceback.print_exc()
                rows.append({"row": label, "span": "prefix", "error": f"calibrate: {type(e).__name__}: {e}"})
                continue
            print(f"{name:16s} {label:40s} calibrated in {time.monotonic() - t0:.1f}s", flush=True)
            if not hadamard:  # the rotation acts after the conv: x's SQNR is the same either way
                try:
                    sqnr[row] = [sqnr_db(e) for e in x_quantization_error(cal, sqnr_tokens)]
                except Exception as e:
                    traceback.print_exc()
                    sqnr[row] = f"error: {type(e).__name__}: {e}"
            if args.checkpoints and row == "W8A8 group min-max" and not hadamard:
                save_quantized(cal.model, out / f"{name}-minmax")
            add(label, lambda: ev.QuantTorchScorer(cal.model, args.device), prefix, "prefix")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--text", required=True, help="evaluation text (wikitext-2 test.txt)")
    p.add_argument("--calib-text", required=True, help="calibration text (a training file, never the test text)")
    p.add_argument("--out", required=True)
    p.add_argument("--models", nargs="+", default=models.available())
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--prefix-bytes", type=int, default=131073, help="bytes for the W8A8 rows (128 KiB + 1)")
    p.add_argument("--full", action=argparse.BooleanOptionalAction, default=True,
                   help="also score the float models on the whole text")
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--num-samples", type=int, default=16, help="calibration windows")
    p.add_argument("--seq-len", type=int, default=256, help="calibration window length")
    p.add_argument("--calib-batch", type=int, default=4)
    p.add_argument("--sqnr-rows", type=int, default=8, help="windows of the text for the SQNR")
    p.add_argument("--checkpoints", action=argparse.BooleanOptionalAction, default=True,
                   help="save the group min-max checkpoints (for the ONNX Runtime row)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = ev.read_text_bytes(args.text)
    calib = ev.read_text_bytes(args.calib_text)
    results = {"text": Path(args.text).name, "text_bytes": len(text), "calib_text": Path(args.calib_text).name,
               "prefix_bytes": min(args.prefix_bytes, len(text)), "window": args.window,
               "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
               "torch": torch.__version__, "calibration": {"num_samples": args.num_samples, "seq_len": args.seq_len},
               "models": {}}

    def save(name, result):  # after every row, so a run cut short still leaves what it measured
        results["models"][name] = result
        (out / "results.json").write_text(json.dumps(results, indent=1))

    for name in args.models:
        report_model(name, text, calib, args, out, save)
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
