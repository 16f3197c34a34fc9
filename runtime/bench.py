"""``qmamba bench ENGINES``: prefill latency and decode tokens/s of TensorRT engines, with decode set
against its bandwidth bound (bytes of weights and states a step must move ÷ the GPU's measured
device-to-device copy bandwidth). Timings are taken on the device with CUDA events (runtime/cpp)."""
from __future__ import annotations

import argparse
import json

from qmamba.export.metadata import read_engines_metadata
from . import layer_profile, trt_runner


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("engine_dir", metavar="ENGINES", help="output directory of `qmamba build`")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    parser.add_argument("--seq", type=int, nargs="+", default=[512, 2048], help="prompt lengths (default 512 2048)")
    parser.add_argument("--iters", type=int, default=20, help="timed repetitions (default 20)")
    parser.add_argument("--plugins", metavar="LIB", help="libqmamba_trt_plugins.so (default: the built one)")
    parser.add_argument("--no-graph", action="store_true", help="decode without CUDA graphs")
    parser.add_argument("--profile", action="store_true",
                        help="also print TensorRT's per-layer times (first batch and prompt length), summed over the "
                             "model's blocks (runtime/layer_profile.py)")
    parser.add_argument("--profile-layers", action="store_true",
                        help="--profile with every TensorRT layer on its own too")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def copy_bandwidth(nbytes: int = 1 << 30, iters: int = 10) -> float:
    """Device-to-device cudaMemcpy bandwidth in bytes/s (read + write counted once each, as a kernel
    that reads weights counts them: bytes copied × 2 / time)."""
    cudart = trt_runner._cudart()
    src, dst = trt_runner.DeviceBuffer(nbytes), trt_runner.DeviceBuffer(nbytes)
    start, stop = trt_runner._cuda(cudart.cudaEventCreate()), trt_runner._cuda(cudart.cudaEventCreate())
    kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
    trt_runner._cuda(cudart.cudaMemcpy(dst.ptr, src.ptr, nbytes, kind))
    trt_runner._cuda(cudart.cudaEventRecord(start, 0))
    for _ in range(iters):
        trt_runner._cuda(cudart.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, kind, 0))
    trt_runner._cuda(cudart.cudaEventRecord(stop, 0))
    trt_runner._cuda(cudart.cudaEventSynchronize(stop))
    ms = trt_runner._cuda(cudart.cudaEventElapsedTime(start, stop))
    return 2 * nbytes * iters / (ms / 1e3)


def decode_bound_tokens_per_s(meta: dict, batch: int, bandwidth: float) -> float:
    """Tokens/s if a decode step only moved its bytes at `bandwidth`: weights once, each row's states
    read and written."""
    step_bytes = meta["weight_bytes"] + 2 * batch * meta["state_bytes_per_row"]
    return batch * bandwidth / step_bytes


def bench(engine_dir, batches, seqs, iters=20, plugins=None, use_graph=True, profile=False) -> dict:
    """Timings per batch and length; with ``profile``, also TensorRT's per-layer times (first batch and
    length) from the same session."""
    meta = read_engines_metadata(engine_dir)
    bw = copy_bandwidth()
    session = trt_runner.TrtSession(engine_dir, plugins, max_batch=max(batches))
    rows = []
    for b in batches:
        for L in seqs:
            pre_ms, dec_ms = session.bench(b, L, iters, use_graph)
            tps = b * 1e3 / dec_ms
            bound = decode_bound_tokens_per_s(meta, b, bw)
            rows.append({"batch": b, "seq": L, "prefill_ms": pre_ms, "decode_ms_per_step": dec_ms,
                         "decode_tokens_per_s": tps, "decode_bound_tokens_per_s": bound,
                         "decode_fraction_of_bound": tps / bound})
    res = {"copy_bandwidth_GBps": bw / 1e9, "weight_bytes": meta["weight_bytes"],
           "state_bytes_per_row": meta["state_bytes_per_row"], "graph": use_graph, "rows": rows}
    if profile:
        res["profile"] = session.profile(batches[0], seqs[0], iters)
        res["profile_groups"] = {s.title: [g._asdict() for g in layer_profile.groups(s)]
                                 for s in layer_profile.parse(res["profile"])}
    return res


def run(args) -> int:
    for name, vals in (("--batch", args.batch), ("--seq", args.seq)):
        if any(v < 1 for v in vals):
            raise ValueError(f"bench: {name} values must be >= 1, got {vals}")
    profile = args.profile or args.profile_layers
    res = bench(args.engine_dir, args.batch, args.seq, args.iters, args.plugins, not args.no_graph, profile)
    print(f"copy bandwidth {res['copy_bandwidth_GBps']:.0f} GB/s; decode moves {res['weight_bytes'] / 1e6:.1f} MB "
          f"of weights + {res['state_bytes_per_row'] / 1e6:.2f} MB of states per row (x2: read and write)")
    print(f"{'batch':>5} {'seq':>6} {'prefill ms':>11} {'decode ms':>10} {'tokens/s':>10} {'bound':>10} {'of bound':>8}")
    for r in res["rows"]:
        print(f"{r['batch']:>5} {r['seq']:>6} {r['prefill_ms']:>11.3f} {r['decode_ms_per_step']:>10.4f} "
              f"{r['decode_tokens_per_s']:>10.0f} {r['decode_bound_tokens_per_s']:>10.0f} "
              f"{r['decode_fraction_of_bound']:>8.1%}")
    if profile:
        print(layer_profile.summary(res["profile"]))
        if args.profile_layers:
            print(res["profile"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0
