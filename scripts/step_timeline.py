"""Where a decode step's time goes between kernels: per-block timestamps of qmamba's decode kernels.

Needs libqmamba_kernels built with the CMake option QMAMBA_TIMELINE (trt_plugins/kernels/timeline.cuh): each
block of QmambaW8A8Linear and QmambaDecodeMixer records its SM and the %globaltimer when it started, when it left
pdl_wait() and when its last warp finished. Builds the step of benchmarks/bench_decode_step.py (2.7b widths,
8 layers + lm_head), replays its CUDA graph and prints, per kernel of a layer, the first and last block's start,
wait return and end in microseconds from in_proj's first wait return (medians over the middle layers and the
replays), the blocks, the SMs they ran on, the most blocks one SM held, and how many blocks started before the
kernel ahead of them had ended (placed early by programmatic dependent launch); then, from each block's start,
when its thread 0 left the wait and reached the kernel's marks (MARKS: when a value it waited for arrived).
`scripts/device_kernels.sh timeline` builds the library and runs this.

    QMAMBA_KERNELS_LIB=.../libqmamba_kernels.so python scripts/step_timeline.py [--batch 1] [--replays 5]
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import pathlib
import statistics
import sys

import numpy as np

# timeline.cuh's TimelineRecord
RECORD = np.dtype([("kind", "<u4"), ("block", "<u4"), ("sm", "<u4"), ("n", "<u4"),
                   ("start", "<u8"), ("wait", "<u8"), ("end", "<u8"), ("mark", "<u8", (6,))])
# What each kernel's thread 0 marks (TL_MARK_AFTER in the kernels), in order
MARKS = {"linear": ("input_scale arrived", "activation quantized"),
         "mixer": ("head ranges arrived", "dim ranges arrived", "scales + head constants arrived",
                   "in_proj's values arrived", "conv outputs + dt done")}
KIND_LINEAR, KIND_MIXER = 0, 1
CAPACITY = 1 << 17  # timeline.cuh's kTimelineCap
LAUNCH_GAP_NS = 3000  # wait returns of one launch lie within ~1 us; launches of one kind are >10 us apart


class RecordReader:
    """Reads the records of both translation units written since the last read (a read clears them); the
    functions' argument types and the copy buffer are set up once, not at every read."""

    def __init__(self, lib):
        self.fns = []
        for name in ("qmamba_timeline_linear", "qmamba_timeline_mixer"):
            fn = getattr(lib, name)
            fn.argtypes = [ctypes.c_void_p, ctypes.c_int]
            self.fns.append((name, fn))
        self.buf = np.zeros(CAPACITY, RECORD)

    def __call__(self) -> np.ndarray:
        parts = []
        for name, fn in self.fns:
            count = fn(self.buf.ctypes.data_as(ctypes.c_void_p), CAPACITY)
            if count < 0:
                raise RuntimeError(f"{name}: copying the records failed (CUDA error)")
            if count > CAPACITY:
                raise RuntimeError(f"{name}: {count} records written since the last read, {CAPACITY} kept; read "
                                   "after each replay")
            parts.append(self.buf[:count].copy())  # the buffer is reused by the next function and read
        return np.concatenate(parts)


def split_launches(rec: np.ndarray, kind: int, n: int | None = None) -> list[np.ndarray]:
    """The records of one kernel kind (linears: of output width n), one array per launch, in launch order:
    sorted by wait return and cut where it jumps by more than LAUNCH_GAP_NS."""
    sel = rec[(rec["kind"] == kind) & ((rec["n"] == n) if n is not None else True)]
    if len(sel) == 0:
        return []
    sel = sel[np.argsort(sel["wait"], kind="stable")]
    cuts = np.nonzero(np.diff(sel["wait"].astype(np.int64)) > LAUNCH_GAP_NS)[0] + 1
    return np.split(sel, cuts)


def summarize(launch: np.ndarray, t0: int, before_end: int | None) -> dict:
    """First/last start, wait return and end of one launch in us from t0; blocks, SMs, most blocks on one SM,
    and the blocks that started before `before_end` (the last end of the kernel ahead of it)."""
    def span(field: str) -> tuple[float, float]:
        v = launch[field].astype(np.int64) - t0
        return float(v.min()) / 1e3, float(v.max()) / 1e3
    early = int((launch["start"].astype(np.int64) < before_end).sum()) if before_end is not None else 0
    marks = []  # per mark: µs from the block's start (median over the blocks that reached it), or None
    for m in range(launch["mark"].shape[1]):
        at = launch["mark"][:, m].astype(np.int64)
        reached = at > 0
        marks.append(float(np.median(at[reached] - launch["start"][reached].astype(np.int64))) / 1e3
                     if reached.any() else None)
    return dict(start=span("start"), wait=span("wait"), end=span("end"), blocks=len(launch),
                sms=len(np.unique(launch["sm"])), most_on_one_sm=int(np.bincount(launch["sm"]).max()), early=early,
                marks=marks, wait_after_start=float(np.median(launch["wait"].astype(np.int64)
                                                               - launch["start"].astype(np.int64))) / 1e3)


def layer_rows(rec: np.ndarray, layers: int, n_in: int, n_out: int, n_head: int) -> dict | None:
    """{(layer, kernel): summary} of one replay (kernel: in_proj, mixer, out_proj, next = the next layer's
    in_proj or lm_head), times from the layer's in_proj's first wait return; None where the launches do not
    group into the step's sequence."""
    ins, mixers, outs = (split_launches(rec, KIND_LINEAR, n_in), split_launches(rec, KIND_MIXER),
                         split_launches(rec, KIND_LINEAR, n_out))
    head = split_launches(rec, KIND_LINEAR, n_head)
    if not (len(ins) == len(mixers) == len(outs) == layers and len(head) == 1):
        return None
    rows = {}
    for li in range(layers):
        t0 = int(ins[li]["wait"].min())
        ahead = outs[li - 1] if li else None
        nxt = ins[li + 1] if li + 1 < layers else head[0]
        for name, launch in (("in_proj", ins[li]), ("mixer", mixers[li]), ("out_proj", outs[li]), ("next", nxt)):
            rows[(li, name)] = summarize(launch, t0, int(ahead["end"].max()) if ahead is not None else None)
            ahead = launch
    return rows


def median_table(replays: list[dict], layers: range) -> dict:
    """Per kernel: each field's median over the given layers and all replays."""
    table = {}
    for name in ("in_proj", "mixer", "out_proj", "next"):
        items = [r[(li, name)] for r in replays for li in layers]
        table[name] = {k: [statistics.median(x[k][i] for x in items) for i in (0, 1)] for k in ("start", "wait", "end")}
        table[name].update(blocks=items[0]["blocks"], sms=statistics.median(x["sms"] for x in items),
                           most_on_one_sm=max(x["most_on_one_sm"] for x in items),
                           early=statistics.median(x["early"] for x in items),
                           wait_after_start=statistics.median(x["wait_after_start"] for x in items),
                           marks=[statistics.median(x["marks"][m] for x in items)
                                  if all(x["marks"][m] is not None for x in items) else None
                                  for m in range(len(items[0]["marks"]))])
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--replays", type=int, default=5)
    ap.add_argument("--json", help="write the table here")
    args = ap.parse_args()
    import torch

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_decode_step as bds

    lib_path = os.environ.get("QMAMBA_KERNELS_LIB")
    if not lib_path:
        raise SystemExit("step_timeline: set QMAMBA_KERNELS_LIB to a library built with QMAMBA_TIMELINE")
    lib = ctypes.CDLL(lib_path)
    if not hasattr(lib, "qmamba_timeline_linear"):
        raise SystemExit(f"step_timeline: {lib_path} was not built with QMAMBA_TIMELINE (cmake -DQMAMBA_TIMELINE=ON)")
    gen = torch.Generator(device="cuda").manual_seed(0)
    layers = bds.model(args.layers, args.batch, gen)
    lm_head = bds.linear_weights(bds.VOCAB, bds.D_MODEL, gen, True)
    ins, mixes, outs, head = bds.step_launches(layers, lm_head, args.batch)
    calls = [f for launches in zip(ins, mixes, outs) for f in launches] + [head]
    n_in = layers[0]["in_proj"]["weight"].shape[0]
    for c in calls:
        c()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for c in calls:
            c()
    for _ in range(5):
        graph.replay()
    torch.cuda.synchronize()
    read_records = RecordReader(lib)
    read_records()  # drop the warm-up replays' records
    replays, steps = [], []
    for _ in range(args.replays):
        graph.replay()
        torch.cuda.synchronize()
        rec = read_records()
        rows = layer_rows(rec, args.layers, n_in, bds.D_MODEL, bds.VOCAB)
        if rows is None:
            print("step_timeline: a replay's launches did not group into the step's sequence; skipped")
            continue
        replays.append(rows)
        steps.append((int(rec["end"].max()) - int(rec["start"].min())) / 1e3)
    if not replays:
        raise SystemExit("step_timeline: no replay could be read")
    middle = range(1, args.layers - 1) if args.layers > 2 else range(args.layers)
    table = median_table(replays, middle)
    print(f"{torch.cuda.get_device_name()}: batch {args.batch}, {args.layers} layers; first block start to last end "
          f"of a replay {statistics.median(steps):.1f} us (median of {len(steps)}; timestamps cost a little)")
    print(f"per layer, us from in_proj's first wait return (medians over layers {middle.start}..{middle.stop - 1}):")
    print(f"{'kernel':9} {'start first/last':>17} {'wait first/last':>17} {'end first/last':>17}  blocks  SMs  "
          "most/SM  early")
    for name, t in table.items():
        print(f"{name:9} {t['start'][0]:8.2f} {t['start'][1]:8.2f} {t['wait'][0]:8.2f} {t['wait'][1]:8.2f} "
              f"{t['end'][0]:8.2f} {t['end'][1]:8.2f}  {t['blocks']:6d} {t['sms']:4.0f} {t['most_on_one_sm']:8d} "
              f"{t['early']:6.0f}")
    print("thread 0's marks, us from its block's start (median over blocks, then over layers and replays):")
    for name, t in table.items():
        labels = MARKS["mixer" if name == "mixer" else "linear"]
        marks = [f"{label} {v:.2f}" for label, v in zip(labels, t["marks"]) if v is not None]
        print(f"  {name:9} left the wait {t['wait_after_start']:.2f}; " + "; ".join(marks))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"batch": args.batch, "layers": args.layers,
                                                       "step_us": steps, "table": table}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
