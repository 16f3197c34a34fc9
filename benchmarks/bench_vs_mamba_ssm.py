"""qmamba's TensorRT engines against mamba_ssm fp16 at a released model's full size, in one run on one GPU.

Both sides run random weights with the exact configuration of a released model (``qmamba standin``):
  - qmamba: a Quamba2 W8A8 stand-in (the released checkpoints' format and scale structure), exported
    and built as ``qmamba export`` and ``qmamba build --prefill-logits last`` do (the last position's
    logits, as mamba_ssm's prefill below), as a user would build them for these batches (``engine_sets``:
    one pair for the prefills and decode batches up to 16, another for larger decode batches); TTFT
    and TPOT from ``TrtSession.bench`` (CUDA events; decode steps replayed from a CUDA graph);
  - mamba_ssm fp16: a float stand-in in mamba_ssm's layout, as ``MambaLMHeadModel`` in fp16, run as its
    ``generate`` runs: the prompt as one forward with ``InferenceParams`` (last logits only), each decode
    step as a replay of the CUDA graph that ``mamba_ssm.utils.generation.update_graph_cache`` captures.
The two draws share the configuration and seed, not the numbers: speed does not depend on the values.

Printed: TTFT (prefill of L tokens to the last logits) at batch 1 and 8, TPOT (one decode step) at batch
1, 8 and 32, the ratio mamba_ssm / qmamba (> 1: qmamba is faster) and decode as a fraction of its
bandwidth bound (bytes of weights and states a step moves / the copy bandwidth measured in this run).
With ``--agree``, the engines are also compared with ONNX Runtime (CPU) on random prompts: last
logits at batch 1 and 4, and how many greedy tokens agree.

    python benchmarks/bench_vs_mamba_ssm.py --model mamba2-130m [--layers N] [--work DIR] [--json FILE]
        [--compare=--no-decode-rotation-pass]   # a second engine set, differing in its build alone
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from qmamba.export.onnx_export import export_onnx
from qmamba.export.quamba2 import load_quamba2
from qmamba.models.real_configs import mamba2_sizes, names
from qmamba.models.standin import standin_config, write_standin
from qmamba.runtime import bench as trt_bench
from qmamba.runtime import trt_runner
from qmamba.runtime.build import DEFAULT_OPTIMIZATION_LEVEL, build_engines
from qmamba.runtime.decode_fusion import LINEAR_PLUGIN_MAX_BATCH

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trt import cuda_ms
from kernel_peers import import_skipping_init

# ---------------------------------------------------------------------------------------------
# mamba_ssm fp16
# ---------------------------------------------------------------------------------------------

def mamba_ssm_modules():
    """(MambaLMHeadModel, MambaConfig, InferenceParams, update_graph_cache, which path runs).

    A mamba_ssm wheel built without its CUDA extensions cannot import its model module as is: the
    package ``__init__`` and the Mamba1 module import ``selective_scan_cuda``, which Mamba2 never calls.
    Then the package is entered without its ``__init__`` and that one extension is a named empty module."""
    try:
        import selective_scan_cuda  # noqa: F401
        extension = "mamba_ssm's CUDA extension present"
    except ImportError:
        sys.modules["selective_scan_cuda"] = types.ModuleType("selective_scan_cuda")
        extension = "no CUDA extension (Mamba1's selective_scan_cuda left empty; Mamba2 does not use it)"
    models = import_skipping_init("mamba_ssm", "mamba_ssm.models.mixer_seq_simple")
    config = import_skipping_init("mamba_ssm", "mamba_ssm.models.config_mamba")
    generation = import_skipping_init("mamba_ssm", "mamba_ssm.utils.generation")
    mamba2 = import_skipping_init("mamba_ssm", "mamba_ssm.modules.mamba2")
    conv = "causal_conv1d" if mamba2.causal_conv1d_fn is not None else "PyTorch Conv1d (causal_conv1d not installed)"
    path = f"mamba_ssm Triton SSD kernels, conv1d by {conv}; {extension}"
    return (models.MambaLMHeadModel, config.MambaConfig, generation.InferenceParams,
            generation.update_graph_cache, path)


def _prefill_call(model, inference_params_type, ids):
    """generate's prefill: fresh inference states, one forward, the last position's logits."""
    def call():
        params = inference_params_type(max_seqlen=ids.shape[1] + 1, max_batch_size=ids.shape[0])
        model(ids, inference_params=params, num_last_tokens=1)
    return call


def _graph_step_call(step, tok, pos, seqlen):
    return lambda: step(tok, pos, seqlen)


def mamba_ssm_rows(float_dir: Path, prefill_batches, seqs, decode_batches, iters: int) -> tuple[dict, str]:
    """TTFT[(batch, L)] and TPOT[batch] in ms of the float stand-in under mamba_ssm, as generate runs it."""
    MambaLMHeadModel, MambaConfig, InferenceParams, update_graph_cache, path = mamba_ssm_modules()
    conf = json.loads((float_dir / "config.json").read_text())
    model = MambaLMHeadModel(MambaConfig(**conf), device="cuda", dtype=torch.float16).eval()
    model.load_state_dict(torch.load(float_dir / "pytorch_model.bin", map_location="cuda"))
    vocab = conf["vocab_size"]
    gen = torch.Generator(device="cuda").manual_seed(0)
    ttft, tpot = {}, {}
    with torch.inference_mode():
        for b in prefill_batches:
            for L in seqs:
                ids = torch.randint(0, vocab, (b, L), device="cuda", generator=gen)
                ttft[b, L] = cuda_ms(_prefill_call(model, InferenceParams, ids), iters)
        for b in decode_batches:
            prompt = 16
            cache = update_graph_cache(model, None, b, prompt, prompt + iters + 8)
            tok = torch.randint(0, vocab, (b, 1), device="cuda", generator=gen)
            pos = torch.full((b, 1), prompt, dtype=torch.long, device="cuda")
            tpot[b] = cuda_ms(_graph_step_call(cache.callables[b, 1], tok, pos, prompt), iters)
            cache.callables.clear()
    model.cpu()
    torch.cuda.empty_cache()
    return {"ttft": ttft, "tpot": tpot}, path


# ---------------------------------------------------------------------------------------------
# qmamba TensorRT
# ---------------------------------------------------------------------------------------------

def device_bytes_in_use() -> int:
    cudart = trt_runner._cudart()
    free, total = trt_runner._cuda(cudart.cudaMemGetInfo())
    return total - free


def qmamba_rows(engines: Path, prefill_batches, seqs, decode_batches, iters: int, bw: float) -> dict:
    """TTFT and TPOT of one engine pair; ``bw``: the copy bandwidth (bytes/s) decode's bound is taken from."""
    meta = json.loads((engines / "qmamba_engines.json").read_text())
    before = device_bytes_in_use()
    session = trt_runner.TrtSession(engines, max_batch=max([*prefill_batches, *decode_batches]))
    session.bench(1, 16, 1)   # contexts, buffers and graphs allocated before the reading
    memory = device_bytes_in_use() - before
    ttft, tpot, bound = {}, {}, {}
    for b in prefill_batches:
        for L in seqs:
            ttft[b, L], _ = session.bench(b, L, iters)
    for b in decode_batches:
        _, tpot[b] = session.bench(b, 16, iters)
        bound[b] = (b * 1e3 / tpot[b]) / trt_bench.decode_bound_tokens_per_s(meta, b, bw)
    del session
    return {"ttft": ttft, "tpot": tpot, "fraction_of_bound": bound, "copy_bandwidth_GBps": bw / 1e9,
            "device_memory_bytes": memory}


class EngineSet(NamedTuple):
    folder: Path
    batch: tuple[int, int, int]
    seq: tuple[int, int, int]
    decode_batches: list[int]


def engine_sets(work: Path, prefill_batches, seqs, decode_batches) -> list[EngineSet]:
    """The engine pairs a user would build for these batches: one for the prefills and the decode batches
    up to LINEAR_PLUGIN_MAX_BATCH, whose decode engine then uses QmambaW8A8Linear (``qmamba build``'s
    ``--decode-linear auto``); larger decode batches get a pair of their own, whose decode range makes
    TensorRT's int8 GEMM the linear (faster there). One engine covering both would decode batch 1 with
    the GEMM, about 3x slower (docs/tensorrt.md)."""
    small = [b for b in decode_batches if b <= LINEAR_PLUGIN_MAX_BATCH]
    large = [b for b in decode_batches if b > LINEAR_PLUGIN_MAX_BATCH]
    sets = [EngineSet(work / "engines", (1, 1, max([*prefill_batches, *small, 4])), (1, 128, max(seqs)), small)]
    if large:
        sets.append(EngineSet(work / f"engines-b{max(large)}", (1, 1, max(large)), (1, 16, 128), large))
    return sets


def agreement(quamba2_dir: Path, onnx_dir: Path, engines: Path, vocab: int, batches=(1, 4), prompt: int = 32,
              tokens: int = 16) -> list[dict]:
    """Engines vs ONNX Runtime (CPU) on random prompts: last-logits relative L2 and the number of greedy
    tokens that agree before the first difference (random weights give near-ties, so a later
    difference is reported, not asserted). Beside it, the PyTorch W8A8 reference (CPU) vs ONNX Runtime
    on the same prompts: how far two implementations that round alike but sum in another order drift
    apart on these random layers (they amplify each int8 rounding flip), the scale to read the first by."""
    from qmamba.runtime.agreement import float_agreement
    from qmamba.runtime.ort import OrtModel, OrtStepper

    reference = load_quamba2(quamba2_dir).eval()
    rows, rng = [], np.random.default_rng(0)
    for b in batches:
        ids = rng.integers(0, vocab, (b, prompt)).astype(np.int64)
        ort, trt = OrtStepper(OrtModel(onnx_dir)), trt_runner.TrtSession(engines, max_batch=b)
        lo, lt = ort.prefill(ids), trt.prefill(ids)
        with torch.inference_mode():
            lr = reference(torch.from_numpy(ids))[0][:, -1].float().numpy()
        rel = float_agreement("last logits", lt, lo, rel_bound=1.0).fraction
        rel_reference = float_agreement("last logits", lr, lo, rel_bound=1.0).fraction
        same = 0
        for _ in range(tokens):
            to, tt = lo.argmax(-1), lt.argmax(-1)
            if not np.array_equal(to, tt):
                break
            same += 1
            lo, lt = ort.decode(to), trt.decode(tt)
        rows.append({"batch": b, "prefill_logits_rel_l2": rel, "reference_vs_onnxruntime_rel_l2": rel_reference,
                     "greedy_tokens_equal": same, "of": tokens})
        del trt
    return rows


# The arguments that are build options, and build_engines' names for them: --compare may change these alone.
BUILD_ARGS = {"builder_optimization_level": "optimization_level", "no_tactic_libraries": "no_tactic_libraries",
              "decode_rotation_pass": "decode_rotation_pass", "weight_channel_scales": "weight_channel_scales",
              "in_proj_pieces": "in_proj_pieces", "fuse_in_proj_split": "fuse_in_proj_split"}


def build_options(args) -> dict:
    """The build_engines options the arguments ask for: engines built earlier are reused only when built with these."""
    return {option: getattr(args, arg) for arg, option in BUILD_ARGS.items()}


def compare_options(ap: argparse.ArgumentParser, args) -> dict | None:
    """The build options of ``--compare FLAGS``: this run's, changed by FLAGS; None without --compare. FLAGS
    that change anything but build options, or nothing, are refused through ``ap.error``: the two engine sets
    must differ in their build alone."""
    if args.compare is None:
        return None
    other = ap.parse_args(shlex.split(args.compare), namespace=argparse.Namespace(**vars(args)))
    changed = [k for k, v in vars(other).items() if k != "compare" and v != getattr(args, k)]
    outside = [k for k in changed if k not in BUILD_ARGS]
    if outside or not changed:
        ap.error(f"--compare {args.compare!r} must change build options only ("
                 f"{', '.join('--' + k.replace('_', '-') for k in BUILD_ARGS)}): "
                 + (f"it changes {', '.join('--' + k.replace('_', '-') for k in outside)}" if outside
                    else "it changes none"))
    return build_options(other)


def prepare_engines(sets, options: dict, onnx_dir: Path, write_export, say) -> None:
    """Builds each engine set with ``options`` (``qmamba build --prefill-logits last``), unless built so before."""
    for s in sets:
        built, built_with = s.folder / "qmamba_engines.json", s.folder.with_name(s.folder.name + ".options.json")
        if built.is_file() and json.loads(built.read_text())["profiles"]["prefill"]["batch"] == list(s.batch) \
                and built_with.is_file() and json.loads(built_with.read_text()) == options:
            continue
        if not (onnx_dir / "qmamba_onnx.json").is_file():
            write_export()
        say(f"building {s.folder} (decode batch {s.decode_batches})")
        build_engines(onnx_dir, s.folder, batch=s.batch, seq=s.seq, prefill_logits="last", force=True, progress=say,
                      **options)
        built_with.write_text(json.dumps(options))


def measure_sets(sets, prefill_batches, seqs, iters: int, bw: float) -> dict:
    """qmamba_rows over the engine sets: the prefills on the first, each decode batch on its own set."""
    q = qmamba_rows(sets[0].folder, prefill_batches, seqs, sets[0].decode_batches, iters, bw)
    for s in sets[1:]:
        more = qmamba_rows(s.folder, [], [], s.decode_batches, iters, bw)
        for key in ("tpot", "fraction_of_bound"):
            q[key].update(more[key])
    return q


# ---------------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=names(), default="mamba2-130m")
    ap.add_argument("--layers", type=int, default=None, help="fewer layers than the model has (default: all)")
    ap.add_argument("--work", help="folder for the stand-ins, ONNX and engines (default: a temporary one); "
                                   "engines already there are measured, not rebuilt")
    ap.add_argument("--prefill-batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--seq", type=int, nargs="+", default=[512, 1024, 2048])
    ap.add_argument("--decode-batch", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--agree", action="store_true", help="also compare the engines with ONNX Runtime")
    ap.add_argument("--skip-peer", action="store_true", help="qmamba's engines only")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--builder-optimization-level", type=int, default=DEFAULT_OPTIMIZATION_LEVEL, metavar="0..5",
                    help=f"as `qmamba build` (default {DEFAULT_OPTIMIZATION_LEVEL})")
    ap.add_argument("--no-tactic-libraries", action="store_true",
                    help="as `qmamba build`: no cuBLAS/cuDNN tactics (a TensorRT without those libraries)")
    ap.add_argument("--decode-rotation-pass", action=argparse.BooleanOptionalAction, default=True,
                    help="as `qmamba build`: the decode engine's gated norm and Hadamard rotation inside "
                         "QmambaW8A8Linear (the default), or as the graph's layers (--no-decode-rotation-pass)")
    ap.add_argument("--weight-channel-scales", action="store_true",
                    help="as `qmamba build`: the linears' output scales in their weights' DequantizeLinear")
    ap.add_argument("--in-proj-pieces", action="store_true",
                    help="as `qmamba build`: the prefill's in_proj as one GEMM per piece, x | B | C and dt int8 out "
                         "of it (refused with TensorRT 8)")
    ap.add_argument("--fuse-in-proj-split", action="store_true",
                    help="as `qmamba build`: the prefill's conv (QmambaInProjConv, quantizing x, B and C as it "
                         "reads them) and QmambaGatedNorm's z read from in_proj's output itself")
    ap.add_argument("--prepare-only", action="store_true",
                    help="write the stand-ins and build the engines into --work, measure nothing")
    ap.add_argument("--compare", metavar="FLAGS",
                    help="also build the engines with these build options changed (e.g. "
                         "--compare=--no-decode-rotation-pass) from the same export into WORK/compare, measure them "
                         "in the same run and print their times against this run's")
    return ap


def main() -> int:
    ap = parser()
    args = ap.parse_args()
    other_options = compare_options(ap, args)
    if args.prepare_only and not args.work:
        ap.error("--prepare-only needs --work")
    if not torch.cuda.is_available():
        print("bench_vs_mamba_ssm: needs a CUDA GPU", file=sys.stderr)
        return 2

    config = standin_config(args.model, args.layers)
    sizes = mamba2_sizes(config)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()

        def say(line: str) -> None:
            print(f"[{time.perf_counter() - started:7.1f} s] {line}", flush=True)

        say(f"{args.model}: {sizes.n_layer} layers, d_model {sizes.d_model}, vocab {sizes.vocab_size}; "
            f"GPU {torch.cuda.get_device_name()}")
        qdir, fdir, onnx_dir = (work / n for n in ("quamba2", "float", "onnx"))
        sets = engine_sets(work, args.prefill_batch, args.seq, args.decode_batch)
        other_sets = engine_sets(work / "compare", args.prefill_batch, args.seq, args.decode_batch)

        def write_export():
            write_standin(config, qdir, "quamba2")
            say("Quamba2 W8A8 stand-in written")
            export_onnx(load_quamba2(qdir), onnx_dir, force=True)
            say("exported")

        prepare_engines(sets, build_options(args), onnx_dir, write_export, say)
        if other_options is not None:
            prepare_engines(other_sets, other_options, onnx_dir, write_export, say)
        if not args.skip_peer and not (fdir / "config.json").is_file():
            write_standin(config, fdir, "mamba_ssm")
            say("mamba_ssm float stand-in written")
        if args.prepare_only:
            return 0
        engines = sets[0].folder
        sizes_mb = {f"{s.folder.name}/{p.name}": round(p.stat().st_size / 1e6, 1)
                    for s in sets for p in s.folder.glob("*.engine")}
        bw = trt_bench.copy_bandwidth()  # once: every engine pair's bound from the same reading
        q = measure_sets(sets, args.prefill_batch, args.seq, args.iters, bw)
        other = None if other_options is None else \
            measure_sets(other_sets, args.prefill_batch, args.seq, args.iters, bw)
        say(f"qmamba measured; engines {sizes_mb} MB, {q['device_memory_bytes'] / 2**20:.0f} MiB of device "
            f"memory in use for a session of {engines.name} at batch "
            f"{max([*args.prefill_batch, *sets[0].decode_batches])}")
        peer, path = None, "not run (--skip-peer)"
        if not args.skip_peer:
            try:
                peer, path = mamba_ssm_rows(fdir, args.prefill_batch, args.seq, args.decode_batch, args.iters)
                say(f"mamba_ssm measured: {path}")
            except ImportError as e:  # the table is still printed, with the peer's columns empty
                path = f"not run: mamba_ssm cannot be imported ({e})"
                say(path)
        agree = agreement(qdir, onnx_dir, engines, sizes.real_vocab_size) if args.agree else []

    print(f"\n{args.model} ({sizes.n_layer} layers), {torch.cuda.get_device_name()}, copy bandwidth "
          f"{q['copy_bandwidth_GBps']:.0f} GB/s")
    print(f"{'':<6}{'batch':>6}{'L':>6}{'qmamba ms':>11}{'mamba_ssm ms':>14}{'ratio':>8}{'of bound':>10}")
    for (b, L), ms in q["ttft"].items():
        p = peer["ttft"][b, L] if peer else float("nan")
        print(f"{'TTFT':<6}{b:>6}{L:>6}{ms:>11.3f}{p:>14.3f}{p / ms:>8.2f}{'':>10}")
    for b, ms in q["tpot"].items():
        p = peer["tpot"][b] if peer else float("nan")
        print(f"{'TPOT':<6}{b:>6}{'':>6}{ms:>11.4f}{p:>14.4f}{p / ms:>8.2f}{q['fraction_of_bound'][b]:>10.1%}")
    if other is not None:
        print(f"\nthe same export built with {args.compare!r} (ratio: its time / this run's, > 1: this run's "
              f"engines are faster)")
        print(f"{'':<6}{'batch':>6}{'L':>6}{'compared ms':>13}{'ratio':>8}{'of bound':>10}")
        for (b, L), ms in other["ttft"].items():
            print(f"{'TTFT':<6}{b:>6}{L:>6}{ms:>13.3f}{ms / q['ttft'][b, L]:>8.2f}{'':>10}")
        for b, ms in other["tpot"].items():
            print(f"{'TPOT':<6}{b:>6}{'':>6}{ms:>13.4f}{ms / q['tpot'][b]:>8.2f}{other['fraction_of_bound'][b]:>10.1%}")
    for r in agree:
        print(f"engines vs ONNX Runtime, batch {r['batch']}: last logits rel L2 {r['prefill_logits_rel_l2']:.2e} "
              f"(PyTorch W8A8 reference vs ONNX Runtime: {r['reference_vs_onnxruntime_rel_l2']:.2e}), "
              f"greedy tokens equal {r['greedy_tokens_equal']}/{r['of']}")
    if args.json:
        def keyed(d):
            return {",".join(map(str, k)) if isinstance(k, tuple) else str(k): v for k, v in d.items()}

        def rows_json(rows):  # a qmamba_rows / measure_sets result with its tables keyed by strings
            return {k: keyed(v) if isinstance(v, dict) else v for k, v in rows.items()}

        out = {"model": args.model, "layers": sizes.n_layer, "gpu": torch.cuda.get_device_name(),
               "engine_mb": sizes_mb, "peer_path": path, "agreement": agree,
               "qmamba": rows_json(q),
               "mamba_ssm": {k: keyed(v) for k, v in peer.items()} if peer else None,
               "compare": None if other is None else {
                   "flags": args.compare, "options": other_options,
                   "qmamba": rows_json(other)}}
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
