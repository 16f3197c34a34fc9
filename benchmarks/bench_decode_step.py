"""A decode step of a W8A8 Mamba2 made of qmamba's decode kernels alone, against its bandwidth bound.

Per layer: QmambaW8A8Linear (in_proj, RMSNorm folded in) -> QmambaDecodeMixer -> QmambaW8A8Linear (out_proj,
gated norm's RMS, with --hadamard also the Hadamard rotation: its rotation pass, QmambaGatedNorm's kernel without
a gate, launched by out_proj before its product; and the residual folded in); then lm_head with
the final norm. This is the kernel sequence of
the decode engine `qmamba build` makes (docs/tensorrt.md), without TensorRT: what an engine could reach at
best, and where the time goes. Random weights at 2.7b's layer widths (byte vocabulary, --layers of 64).

    python benchmarks/bench_decode_step.py [--layers 8] [--batch 1 2 4 8] [--hadamard] [--json out.json]

Each measured sequence is captured in a CUDA graph and replayed (CUDA events, median of replays). The bound
is the bytes a step must move (every weight once; per batch row the int8 states read and written) over the
device-to-device copy bandwidth measured in the same run. Printed per batch: the whole step, and each kernel
kind alone (all layers' launches of that kind in one graph, distinct weights per layer so that L2 holds none
of them), and each pair of neighbours (in_proj + mixer, mixer + out_proj, out_proj + next in_proj, per
layer): a pair's time against the sum of its two kernels alone is what the overlap between them gains.
Run it with QMAMBA_PDL=0 for the same figures without programmatic dependent launch.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "trt_plugins"))
import kernel_cases as kc  # noqa: E402
from bench_kernels import time_graph  # noqa: E402

from qmamba.runtime import kernels  # noqa: E402
from qmamba.runtime.bench import copy_bandwidth  # noqa: E402
from qmamba.runtime.gated_norm import hadamard_rotation  # noqa: E402
from qmamba.runtime.w8a8_linear import pack_int8_words  # noqa: E402

D_MODEL, VOCAB = 2560, 256
SHAPE = kc.LAYERS["2.7b"]


def linear_weights(n: int, k: int, gen: torch.Generator, norm: bool) -> dict:
    w = torch.randint(-127, 128, (n, k), dtype=torch.int8, device="cuda", generator=gen)
    t = dict(weight=pack_int8_words(w), out_scale=torch.full((n,), 2e-5, device="cuda"),
             input_scale=torch.tensor([0.02], device="cuda"))
    if norm:
        t["norm_weight"] = torch.ones(k, device="cuda")
    return t


def model(layers: int, batch: int, gen: torch.Generator, rotate: bool = False) -> list[dict]:
    s = SHAPE
    n_in = 2 * s.d_ssm + 2 * s.ngroups * s.d_state + s.nheads
    rotation = None
    if rotate:  # 2.7b: F_0 of 40 and the Sylvester factor of 128
        f0, f1, first = hadamard_rotation(s.d_ssm)
        rotation = (f0, f1, first.cuda() if first is not None else None)
    out = []
    for _ in range(layers):
        mixer, fields = kc.mixer_case(s, batch, gen)
        out.append(dict(in_proj=linear_weights(n_in, D_MODEL, gen, True), mixer=mixer, fields=fields,
                        out_proj=linear_weights(D_MODEL, s.d_ssm, gen, True), rotation=rotation))
    return out


def layer_launches(lay: dict, h: torch.Tensor, zx: torch.Tensor | None = None, res: torch.Tensor | None = None):
    """(in_proj, mixer, out_proj launches, out_proj's output) of one layer fed the residual stream h: in_proj
    with its RMSNorm, the mixer, out_proj with the gated norm's groups and the residual (outputs into zx and
    res where given)."""
    in_proj, zx = kernels.w8a8_linear_launcher(h, **lay["in_proj"], out=zx)
    mixer, (gate, _, _) = kernels.decode_mixer_launcher(**dict(lay["mixer"], zxbcdt=zx), **lay["fields"])
    out_proj, res = kernels.w8a8_linear_launcher(gate, **lay["out_proj"], residual=h, out=res,
                                                  norm_group=SHAPE.d_ssm // SHAPE.ngroups, rotation=lay["rotation"])
    return in_proj, mixer, out_proj, res


def step_launches(layers: list[dict], lm_head: dict, batch: int) -> tuple[list, list, list, object]:
    """(in_proj, mixer, out_proj launches of every layer, lm_head's launch) of one decode step on a random
    residual stream, each layer's outputs in buffers of its own; every launch checked and bound to its buffers
    before capture (the checks read the GPU)."""
    h = torch.randn(batch, 1, D_MODEL, device="cuda")
    ins, mixes, outs = [], [], []
    for lay in layers:
        zx = torch.empty(batch, 1, lay["in_proj"]["weight"].shape[0], device="cuda")
        res = torch.empty(batch, 1, D_MODEL, device="cuda")
        a, b, c, h = layer_launches(lay, h, zx, res)
        ins.append(a)
        mixes.append(b)
        outs.append(c)
    return ins, mixes, outs, kernels.w8a8_linear_launcher(h, **lm_head)[0]


def step_bytes(layers: list[dict], lm_head: dict, batch: int) -> int:
    n = 0
    for lay in layers:
        for part in ("in_proj", "out_proj"):
            n += sum(t.numel() * t.element_size() for t in lay[part].values())
        n += sum(t.numel() * t.element_size() for k, t in lay["mixer"].items()
                 if k not in ("zxbcdt", "conv_state", "ssm_state"))
        n += 2 * batch * (lay["mixer"]["conv_state"][0].numel() + lay["mixer"]["ssm_state"][0].numel())
    return n + sum(t.numel() * t.element_size() for t in lm_head.values())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--hadamard", action="store_true",
                    help="out_proj with the Hadamard rotation after the gated norm (its rotation pass)")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    gen = torch.Generator(device="cuda").manual_seed(0)
    bw = copy_bandwidth()
    pdl = os.environ.get("QMAMBA_PDL", "1") != "0"
    print(f"{torch.cuda.get_device_name()}: copy bandwidth {bw / 1e9:.0f} GB/s; programmatic dependent launch "
          f"{'on' if pdl else 'off (QMAMBA_PDL=0)'}; 2.7b widths, {args.layers} layers"
          f"{', Hadamard rotation before out_proj' if args.hadamard else ''}")
    rows = []
    for batch in args.batch:
        layers = model(args.layers, batch, gen, args.hadamard)
        lm_head = linear_weights(VOCAB, D_MODEL, gen, True)
        ins, mixes, outs, head = step_launches(layers, lm_head, batch)

        def step():
            for a, b, c in zip(ins, mixes, outs):
                a()
                b()
                c()
            head()

        # Each kind alone: the same launches (inputs as in the step; their values do not change the time).
        parts = {"step": [step], "in_proj": ins, "mixer": mixes, "out_proj": outs,
                 "in+mix": [f for ab in zip(ins, mixes) for f in ab],
                 "mix+out": [f for ab in zip(mixes, outs) for f in ab],
                 "out+in": [f for ab in zip(outs, ins) for f in ab]}
        ms = {k: time_graph(v) for k, v in parts.items()}
        total = step_bytes(layers, lm_head, batch)
        bound_ms = total / bw * 1e3
        row = {"batch": batch, "step_ms": ms["step"], "bound_ms": bound_ms, "of_bound": bound_ms / ms["step"],
               "per_layer_us": {k: ms[k] * 1e3 for k in ("in_proj", "mixer", "out_proj")},
               "step_mb": total / 1e6, "pdl": pdl, "hadamard": args.hadamard,
               "pairs_us": {k: ms[k] * 2e3 for k in ("in+mix", "mix+out", "out+in")}}
        rows.append(row)
        lay = layers[0]
        mb = {"in_proj": lay["in_proj"]["weight"].numel() * 4, "out_proj": lay["out_proj"]["weight"].numel() * 4}
        per = ", ".join(f"{k} {v:.1f} us" + (f" ({mb[k] / (v * 1e-6) / bw:.0%} of copy bw)" if k in mb else "")
                        for k, v in row["per_layer_us"].items())
        print(f"batch {batch}: step {ms['step'] * 1e3:.1f} us, bound {bound_ms * 1e3:.1f} us "
              f"({total / 1e6:.1f} MB) -> {row['of_bound']:.1%} of bound; alone per layer: {per}; pairs: "
              + ", ".join(f"{k} {v:.1f} us" for k, v in row["pairs_us"].items()))
        del layers, step, parts
        torch.cuda.empty_cache()
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"copy_bandwidth": bw, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
