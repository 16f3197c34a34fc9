"""TensorRT engines vs PyTorch on one GPU, in one run: prefill latency (default L = 512, 2048) and decode
tokens/s (default batch 1, 8) of
  - the TensorRT engine (qmamba's plugins, decode under a CUDA graph),
  - the PyTorch W8A8 reference model (QuantMamba2LM with the CUDA kernels),
  - the float model in PyTorch fp16 (transformers Mamba2ForCausalLM, same shape),
for the small byte-level model of the TensorRT tests (g = 1) and a 2.7b-shaped W8A8 model with random weights (2.7b's layer
widths, byte vocabulary; --layers of its 64 layers to fit the time). Decode is also given as a
fraction of its bandwidth bound (bytes of weights and states per step ÷ measured copy bandwidth).

    python benchmarks/bench_trt.py --out OUT [--layers 8] [--skip-torch] [--batch 1 8] [--seq 512 2048]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from qmamba.export.metadata import read_engines_metadata
from qmamba.export.onnx_export import export_onnx
from qmamba.export.qmodel import QuantConfig, QuantMamba2LM
from qmamba.runtime import bench as trt_bench
from qmamba.runtime import trt_runner
from qmamba.runtime.build import DECODE_LINEAR_CHOICES, DECODE_MIXER_CHOICES, build_engines


def random_w8a8(cfg: QuantConfig, seed: int = 0) -> QuantMamba2LM:
    """A valid W8A8 model with random int8 weights and plausible scales (speed only, not accuracy)."""
    g = torch.Generator().manual_seed(seed)
    model = QuantMamba2LM(cfg)
    hpg = cfg.nheads // cfg.ngroups
    head_ends = torch.linspace(0, hpg, cfg.n_head_groups + 1)[1:].round().int()
    dim_ends = torch.linspace(0, cfg.headdim, cfg.n_dim_groups + 1)[1:].round().int()
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if buf.dtype == torch.int8:
                buf.copy_(torch.randint(-127, 128, buf.shape, generator=g, dtype=torch.int8))
            elif name.endswith("x_head_group_range"):
                buf.copy_(head_ends.expand_as(buf))
            elif name.endswith("x_dim_group_range"):
                buf.copy_(dim_ends.expand_as(buf))
            elif name.endswith("A_log"):
                buf.copy_(torch.rand(buf.shape, generator=g) * 2)
            elif name.endswith(("D", "dt_bias")) or "norm" in name and name.endswith("weight"):
                buf.fill_(1.0 if not name.endswith("dt_bias") else -3.0)
            elif buf.dtype == torch.float32:
                buf.fill_(0.02)   # every scale: activations and weights of magnitude ~1
    model.validate()
    return model


def cuda_ms(fn, iters: int) -> float:
    """Median GPU time of fn() in ms (CUDA events), after one warm-up call."""
    fn()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return float(np.median(times))


# transformers' chunk length for the float model (mamba2-2.7b's own is 256), then the smaller ones tried where
# a shape does not fit the GPU.
FP16_CHUNKS = (256, 128, 64)


def torch_w8a8(model: QuantMamba2LM, batches, seqs, iters: int) -> list[dict]:
    model = model.cuda()
    model.ops_backend = "kernels"
    rows = []
    for b in batches:
        for L in seqs:
            ids = torch.randint(0, model.config.vocab_size, (b, L), device="cuda")
            pre = cuda_ms(lambda: model(ids), iters)
            _, states = model(ids)
            step = ids[:, -1:]
            dec = cuda_ms(lambda: model(step, states), iters)
            rows.append({"batch": b, "seq": L, "prefill_ms": pre, "decode_ms_per_step": dec,
                         "decode_tokens_per_s": b * 1e3 / dec})
    model.cpu()
    return rows


def torch_fp16(cfg: QuantConfig, batches, seqs, iters: int) -> list[dict]:
    from transformers import Mamba2Config, Mamba2ForCausalLM

    fc = Mamba2Config(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layer,
                      num_heads=cfg.nheads, head_dim=cfg.headdim, state_size=cfg.d_state, n_groups=cfg.ngroups,
                      expand=cfg.d_ssm // cfg.d_model, conv_kernel=cfg.d_conv, chunk_size=FP16_CHUNKS[0])
    with torch.device("cuda"):
        model = Mamba2ForCausalLM(fc).half().eval()
    mixers = [layer.mixer for layer in model.backbone.layers]
    rows = []
    with torch.no_grad():
        for b in batches:
            for L in seqs:
                # transformers' pure-PyTorch scan materializes [batch, chunks, chunk, chunk, heads, headdim]
                # tensors, whose size grows with the chunk: a shape that does not fit is retried with smaller
                # chunks (the same function of the input), and the chunk that ran is reported.
                for chunk in FP16_CHUNKS:
                    for m in mixers:
                        m.chunk_size = chunk
                    try:
                        ids = torch.randint(0, cfg.vocab_size, (b, L), device="cuda")
                        pre = cuda_ms(lambda: model(ids), iters)
                        out = model(ids, use_cache=True)
                        cache, step = out.cache_params, ids[:, -1:]
                        pos = torch.tensor([L], device="cuda")
                        dec = cuda_ms(lambda: model(step, cache_params=cache, use_cache=True, cache_position=pos),
                                      iters)
                    except torch.cuda.OutOfMemoryError as e:
                        print(f"  torch-fp16 batch {b} seq {L} chunk {chunk}: out of GPU memory "
                              f"({str(e).splitlines()[0]})")
                        out = cache = None  # noqa: F841 (frees the failed shape's tensors)
                        torch.cuda.empty_cache()
                        continue
                    rows.append({"batch": b, "seq": L, "prefill_ms": pre, "decode_ms_per_step": dec,
                                 "decode_tokens_per_s": b * 1e3 / dec, "chunk_size": chunk})
                    out = cache = None  # noqa: F841 (frees this shape's tensors before the next)
                    break
    model = mixers = None  # the closures above hold them: drop them before freeing the cache
    torch.cuda.empty_cache()
    return rows


def engines_for(model: QuantMamba2LM, root: Path, batches, seqs, decode_linear: str, decode_mixer: str,
                prefill_norm_plugin: bool = True) -> Path:
    export_onnx(model, root / "onnx", force=True, check=False)
    t = time.time()
    meta = build_engines(root / "onnx", root / "engines", batch=(1, 1, max(batches)), seq=(1, 512, max(seqs)),
                         no_tactic_libraries=True, force=True, decode_linear=decode_linear, decode_mixer=decode_mixer,
                         prefill_norm_plugin=prefill_norm_plugin)
    print(f"  engines built in {time.time() - t:.0f} s; decode linears: {meta['decode_linears']}; "
          f"decode mixers: {meta['decode_mixers']}; prefill gated norm: {meta['prefill_gated_norm']}")
    return root / "engines"


def trt_rows(engines: Path, batches, seqs, iters: int, bw: float, profile: bool) -> list[dict]:
    meta = read_engines_metadata(engines)
    session = trt_runner.TrtSession(engines, max_batch=max(batches))
    if profile:  # where a decode step's time goes (TensorRT's layer profiler, no CUDA graph)
        print(session.profile(batches[0], seqs[0], iters))
    rows = []
    for b in batches:
        for L in seqs:
            pre, dec = session.bench(b, L, iters, use_graph=True)
            bound = trt_bench.decode_bound_tokens_per_s(meta, b, bw)
            rows.append({"batch": b, "seq": L, "prefill_ms": pre, "decode_ms_per_step": dec,
                         "decode_tokens_per_s": b * 1e3 / dec, "decode_bound_tokens_per_s": bound,
                         "decode_fraction_of_bound": b * 1e3 / dec / bound})
    return rows


def table(name: str, results: dict) -> None:
    print(f"\n{name}")
    print(f"{'runner':<12} {'batch':>5} {'seq':>5} {'prefill ms':>11} {'decode ms':>10} {'tok/s':>9} {'of bound':>8}")
    for runner, rows in results.items():
        for r in rows:
            frac = r.get("decode_fraction_of_bound")
            chunk = r.get("chunk_size", FP16_CHUNKS[0])
            print(f"{runner:<12} {r['batch']:>5} {r['seq']:>5} {r['prefill_ms']:>11.3f} {r['decode_ms_per_step']:>10.4f} "
                  f"{r['decode_tokens_per_s']:>9.0f} {'' if frac is None else f'{frac:.1%}':>8}"
                  f"{'' if chunk == FP16_CHUNKS[0] else f'  (chunk {chunk})'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out")
    ap.add_argument("--layers", type=int, default=8, help="layers of the 2.7b-shaped model (2.7b has 64)")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8; the engines' "
                    "profile ends at the largest)")
    ap.add_argument("--seq", type=int, nargs="+", default=[512, 2048], help="prompt lengths (default 512 2048)")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--models", default="2.7b,small", help="which models, comma-separated: 2.7b, small")
    ap.add_argument("--profile", action="store_true",
                    help="print TensorRT's per-layer times (at the first --batch and --seq)")
    ap.add_argument("--decode-linear", choices=DECODE_LINEAR_CHOICES, default="plugin",
                    help="the decode engine's linears (qmamba build --decode-linear; default plugin: both "
                         "batches measured with QmambaW8A8Linear)")
    ap.add_argument("--decode-mixer", choices=DECODE_MIXER_CHOICES, default="plugin",
                    help="the decode engine's mixers (qmamba build --decode-mixer)")
    ap.add_argument("--no-prefill-norm-plugin", action="store_true",
                    help="the prefill engine's gated norms as the graph's layers "
                         "(qmamba build --no-prefill-norm-plugin)")
    args = ap.parse_args()
    out = Path(args.out)
    work = Path(tempfile.gettempdir()) / "qmamba_bench"
    bw = trt_bench.copy_bandwidth()
    print(f"device-to-device copy bandwidth: {bw / 1e9:.0f} GB/s")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "runtime"))
    from trt_helpers import small_quantized_model  # the TensorRT tests' small model (kernel-supported sizes)

    # The 2.7b-shaped model first: its layer widths are the ones that matter (results are written per model).
    models = {}
    if "2.7b" in args.models.split(","):
        name = f"2.7b-shaped ({args.layers} of 64 layers, d_model 2560, h 80, p 64, n 128, byte vocab)"
        models[name] = random_w8a8(QuantConfig(vocab_size=256, d_model=2560, n_layer=args.layers, nheads=80,
                                               headdim=64, d_state=128, ngroups=1, d_conv=4))
    if "small" in args.models.split(","):
        models["small g1 (2 layers, d_model 128, h 8, p 32, n 32)"] = small_quantized_model("g1")
    report = {"copy_bandwidth_GBps": bw / 1e9, "models": {}}
    for i, (name, model) in enumerate(models.items()):
        print(f"{name}:")
        engines = engines_for(model, work / f"m{i}", args.batch, args.seq, args.decode_linear, args.decode_mixer,
                              not args.no_prefill_norm_plugin)
        results = {"tensorrt": trt_rows(engines, args.batch, args.seq, args.iters, bw, args.profile)}
        if not args.skip_torch:
            for runner, fn in (("torch-w8a8", lambda: torch_w8a8(model, args.batch, args.seq, args.iters)),
                               ("torch-fp16", lambda: torch_fp16(model.config, args.batch, args.seq, args.iters))):
                try:
                    results[runner] = fn()
                except Exception as e:  # report and go on: one runner's failure must not hide the others
                    print(f"  {runner}: not measured ({type(e).__name__}: {e})")
        table(name, results)
        report["models"][name] = results
        (out / "trt_bench.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
