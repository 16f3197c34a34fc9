"""Small runs of every kernel for compute-sanitizer (memcheck, racecheck, synccheck).

    compute-sanitizer --tool memcheck --error-exitcode 1 python tests/trt_plugins/sanitize_kernels.py
    compute-sanitizer --tool racecheck --error-exitcode 1 python tests/trt_plugins/sanitize_kernels.py --only ssd

Covers the vector and bytewise paths, L = 1, L shorter than the conv state, the conv from in_proj's float
output (QmambaInProjConv: column scales or none, 16-byte rows and the one-channel path), L not a multiple of
the chunk, the SSD prefill at chunk 32 and at its default, d_state 16, 80 and 256, headdim 32 and 128,
in-place decode, decode blocks that stream several batch rows, decode pieces of 4 bytes, two a thread and
bytewise, part-full decode stages; the decode engine's QmambaDecodeMixer (conv widths 2-4, d_state not a
multiple of 8, several rows) and QmambaW8A8Linear (row segments, word-wise rows, norm groups, several passes,
residual in place, the rotation pass: QmambaGatedNorm's kernel without a gate, at 2.7b's row, one dense factor,
f1 = 2 under an odd f0) and the prefill's QmambaGatedNorm (kernel_cases' cases, with and without a gate, blocks
that take several rows in turn). Exits
non-zero if a kernel refuses its arguments or a result is off (a coarse check: the tests do the fine one).
"""
from __future__ import annotations

import argparse
import sys

import torch

import kernel_cases as kc  # this file's folder is first on sys.path when it runs as a script
from qmamba.export import kernels
from qmamba.export.layer_sizes import LayerShape
from qmamba.export.ops import quant_conv1d_silu_ref, quant_ssd_ref
from qmamba.runtime import kernels as decode_kernels
from qmamba.runtime.decode_mixer import decode_mixer_ref
from qmamba.runtime.gated_norm import gated_norm_ref
from qmamba.runtime.in_proj_conv import in_proj_conv_ref
from qmamba.runtime.w8a8_linear import activation_ref, near_tie_error, one_tie_error, w8a8_linear_ref

CONV = [(kc.LAYERS["8b"], 2, 37), (LayerShape(ngroups=2, nheads=8, headdim=32, d_state=40, d_conv=3), 2, 9),
        (LayerShape(ngroups=1, nheads=8, headdim=64, d_state=64, d_conv=4), 3, 2), (kc.LAYERS["130m"], 4, 1)]
# (shape, batch, L, chunk): chunk 32 runs one warp pair a block; 0, the default 128, four pairs (at 8b, L 257:
# 384 blocks, so 64-dim slices on an H100), and d_state 80 rows of six 16-byte pieces.
SSD = [(kc.LAYERS["8b"], 1, 70, 32), (LayerShape(ngroups=1, nheads=4, headdim=128, d_state=256), 1, 45, 32),
       (LayerShape(ngroups=2, nheads=8, headdim=32, d_state=16), 2, 33, 32),
       (LayerShape(ngroups=2, nheads=6, headdim=32, d_state=40), 1, 20, 32),
       (kc.LAYERS["8b"], 1, 257, 0), (LayerShape(ngroups=2, nheads=6, headdim=64, d_state=80), 1, 200, 0),
       (kc.LAYERS["130m"], 3, 1, 0), (LayerShape(ngroups=2, nheads=8, headdim=64, d_state=128), 64, 1, 0),
       (LayerShape(ngroups=2, nheads=8, headdim=32, d_state=36), 6, 1, 0),
       (LayerShape(ngroups=2, nheads=6, headdim=64, d_state=132), 3, 1, 0),
       (LayerShape(ngroups=1, nheads=4, headdim=32, d_state=17), 5, 1, 0)]
MIXER = [(kc.LAYERS["2.7b"], 1), (LayerShape(ngroups=2, nheads=8, headdim=32, d_state=36, d_conv=3), 2),
         (LayerShape(ngroups=1, nheads=4, headdim=64, d_state=64, d_conv=2), 3)]
# (K, N, rows, norm, residual in place, norm_group)
LINEAR = [(5120, 2560, 1, True, True, 5120), (8192, 96, 3, True, False, 1024), (257, 33, 3, True, False, 0),
          (2560, 257, 9, False, True, 0), (4096, 9504, 3, True, True, 0)]  # the last: tensor cores, many tiles a block
# kernel_cases.LINEAR_ROTATION_CASES run under the sanitizer
ROTATION = ["2.7b-out_proj-b1", "dense-12-b5", "random-5x2-b3", "130m-out_proj-b9"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["conv", "ssd", "mixer", "linear", "norm"], default=None)
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(0)
    bad = 0
    if args.only in (None, "conv"):
        for s, bt, L in CONV:
            t, a = kc.conv_case(s, bt, L, gen)
            ref = quant_conv1d_silu_ref(**t, **a)
            got = kernels.quant_conv1d_silu(**t, **a, state_in_place=(L == 1))
            ok = all((g.int() - r.int()).abs().max().item() <= 1 for g, r in zip(got, ref))
            print(f"conv {s} bt={bt} L={L}: {'ok' if ok else 'MISMATCH'}")
            bad += not ok
        for (s, bt, L), col in zip(CONV, (True, False, True, False)):
            t, a = kc.in_proj_conv_case(s, bt, L, gen, col_scale=col)
            if not col:  # rows 4 bytes off 16-byte alignment: the one-channel path
                z = t["zxbcdt"]
                t["zxbcdt"] = torch.empty(z.numel() + 1, device="cuda")[1:].view(z.shape).copy_(z)
            ref = in_proj_conv_ref(**t, **a)
            got = decode_kernels.in_proj_conv(**t, **a)
            ok = all((g.int() - r.int()).abs().max().item() <= 1 for g, r in zip(got, ref))
            print(f"in_proj conv {s} bt={bt} L={L} col_scale={col}: {'ok' if ok else 'MISMATCH'}")
            bad += not ok
    if args.only in (None, "ssd"):
        for s, bt, L, chunk in SSD:
            t, a = kc.ssd_case(s, bt, L, gen)
            y_ref, st_ref = quant_ssd_ref(**t, **a)
            y, st = kernels.quant_ssd(**t, **a, chunk_size=chunk, state_in_place=(L == 1))
            err = ((y - y_ref).norm() / y_ref.norm()).item()
            ok = err < 2e-3 and (st.int() - st_ref.int()).abs().max().item() <= 1
            print(f"ssd {s} bt={bt} L={L} chunk={chunk}: rel err {err:.1e} {'ok' if ok else 'MISMATCH'}")
            bad += not ok
    if args.only in (None, "mixer"):
        for s, bt in MIXER:
            t, f = kc.mixer_case(s, bt, torch.Generator(device="cuda").manual_seed(bt))
            want = decode_mixer_ref(**t, **f)
            got = decode_kernels.decode_mixer(**t, **f)
            err = ((got[0] - want[0]).norm() / want[0].norm()).item()
            ok = err < 1e-3 and all((g.int() - w.int()).abs().max().item() <= 1 for g, w in zip(got[1:], want[1:]))
            print(f"mixer {s} bt={bt}: rel err {err:.1e} {'ok' if ok else 'MISMATCH'}")
            bad += not ok
    if args.only in (None, "linear"):
        for k, n, rows, norm, in_place, group in LINEAR:
            a, w = kc.linear_case(k, n, rows, norm, in_place)
            want = w8a8_linear_ref(**a, norm_group=group)
            got = decode_kernels.w8a8_linear(**a, out=a.get("residual"), norm_group=group)
            ok = bool(((got - want).abs() <= one_tie_error(a["out_scale"], w) + 1e-6 * want.abs()).all())
            print(f"linear K={k} N={n} rows={rows} norm={norm} in_place={in_place}: {'ok' if ok else 'MISMATCH'}")
            bad += not ok
    if args.only in (None, "linear"):
        for name in ROTATION:
            k, n, rows, group, orders = kc.LINEAR_ROTATION_CASES[name]
            a, w = kc.linear_case(k, n, rows, True, True)
            rot = kc.linear_rotation(k, orders)
            want = w8a8_linear_ref(**a, norm_group=group, rotation=rot)
            got = decode_kernels.w8a8_linear(**a, norm_group=group, rotation=rot)
            v = activation_ref(a["x"], a["norm_weight"], 1e-5, group, rot)
            tol = kc.ROTATED_VALUE_TOL * v.abs().amax(-1, True)
            bound = near_tie_error(v, a["input_scale"], w, a["out_scale"], tol)
            ok = bool(((got - want).abs() <= bound + 1e-6 * want.abs()).all())
            print(f"linear rotation {name}: {'ok' if ok else 'MISMATCH'}")
            bad += not ok
    if args.only in (None, "norm"):
        for name, case in {**kc.GATED_NORM_CASES, **kc.GATED_NORM_MANY_ROWS}.items():
            t, a = kc.gated_norm_case(*case, device="cuda")
            err = kc.row_rel_err(decode_kernels.gated_norm(**t, **a), gated_norm_ref(**t, **a))
            ok = err <= 1e-5
            print(f"gated norm {name}: row rel err {err:.1e} {'ok' if ok else 'MISMATCH'}")
            bad += not ok
    torch.cuda.synchronize()
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
