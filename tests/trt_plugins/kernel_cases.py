"""Realistic inputs for the CUDA kernel checks, benchmarks and sanitizer runs.

Scales follow calibrated Quamba2 checkpoints (Mamba2-2.7b layer 0 values,
4 x 4 head/dim groups of uneven sizes), so outputs are neither all saturated nor all zero. Every
builder takes a torch.Generator and draws on its device (a CUDA generator makes large inputs
quickly); fresh seeds give fresh inputs.
"""
from __future__ import annotations

import math
import zlib

import torch

from qmamba.export.layer_sizes import LayerShape
from qmamba.export.ops import _ssd_inputs, head_dim_groups


# One Mamba2 layer per real model (heads, head dim, state size, SSD groups; conv width 4).
LAYERS = {
    "130m": LayerShape(ngroups=1, nheads=24, headdim=64, d_state=128),
    "2.7b": LayerShape(ngroups=1, nheads=80, headdim=64, d_state=128),
    "8b": LayerShape(ngroups=8, nheads=128, headdim=64, d_state=128),
}


def case_seed(*parts) -> int:
    """A seed that names a case: the same in every process (``hash`` of a str is salted per process)."""
    return zlib.crc32(repr(parts).encode())


def _uneven_ends(total: int, parts: int, gen: torch.Generator) -> list[int]:
    """Cumulative ends of `parts` non-empty groups of uneven sizes covering `total`."""
    parts = min(parts, total)
    cuts = torch.randperm(total - 1, generator=gen, device=gen.device)[: parts - 1].cpu() + 1
    return sorted(cuts.tolist()) + [total]


def group_tensors(s: LayerShape, gen: torch.Generator, nhg: int = 4, ndg: int = 4) -> dict:
    """x_out_scales, B/C_out_scales and the group ranges (docs/ops.md, Group lookup)."""
    hpg = s.nheads // s.ngroups
    nhg = min(nhg, hpg)
    ndg = min(ndg, s.headdim)
    hr = torch.tensor([_uneven_ends(hpg, nhg, gen) for _ in range(s.ngroups)], dtype=torch.int32)
    dr = torch.tensor([[_uneven_ends(s.headdim, ndg, gen) for _ in range(nhg)] for _ in range(s.ngroups)],
                      dtype=torch.int32)
    # log-uniform between the smallest and largest 2.7b layer-0 scales (0.0029 .. 0.0816)
    lo, hi = math.log(0.0029), math.log(0.0816)
    xs = torch.exp(lo + (hi - lo) * torch.rand(s.ngroups, nhg, ndg, generator=gen, device=gen.device))
    return dict(x_out_scales=xs.float(),
                B_out_scales=0.1137 * (0.5 + torch.rand(s.ngroups, generator=gen, device=gen.device)),
                C_out_scales=0.2671 * (0.5 + torch.rand(s.ngroups, generator=gen, device=gen.device)),
                x_head_group_range=hr, x_dim_group_range=dr)


def _int8(shape, std: float, gen: torch.Generator) -> torch.Tensor:
    return (torch.randn(*shape, generator=gen, device=gen.device) * std).round().clamp(-128, 127).to(torch.int8)


def conv_case(s: LayerShape, bt: int, L: int, gen: torch.Generator, with_state: bool = True,
              device: str = "cuda") -> tuple[dict, dict]:
    """(tensors, attributes) of QuantConv1dSiLU for `bt` rows of `L` tokens."""
    grp = group_tensors(s, gen)
    t = dict(xBC=_int8((bt, L, s.conv_dim), 40.0, gen),
             weight=_int8((s.conv_dim, s.d_conv), 40.0, gen),
             bias=_int8((s.conv_dim,), 50.0, gen),
             **{k: grp[k] for k in ("x_out_scales", "B_out_scales", "C_out_scales",
                                    "x_head_group_range", "x_dim_group_range")},
             conv_state=_int8((bt, s.d_conv - 1, s.conv_dim), 40.0, gen) if with_state else None)
    attrs = dict(x_scale=0.1656, wx_scale=0.0022, bx_scale=0.004, B_scale=0.12, wB_scale=0.008,
                 bB_scale=0.003, C_scale=0.15, wC_scale=0.008, bC_scale=0.003,
                 ngroups=s.ngroups, nheads=s.nheads, headdim=s.headdim, d_state=s.d_state)
    return {k: (v.to(device) if v is not None else None) for k, v in t.items()}, attrs


def in_proj_conv_case(s: LayerShape, bt: int, L: int, gen: torch.Generator, col_scale: bool = True,
                      device: str = "cuda") -> tuple[dict, dict]:
    """(tensors, attributes) of QmambaInProjConv: conv_case's weights and scales, and in_proj's float output
    ``[bt, L, d_ssm | conv_dim | nheads]`` whose xBC columns (times col_scale, when given: output scales of
    1e-4 .. 5e-3) quantize to spread int8 values, some saturating, one in 16 at a rounding tie of the quotient."""
    conv, attrs = conv_case(s, bt, L, gen, with_state=False, device="cpu")
    del conv["xBC"], conv["conv_state"]
    conv_dim = s.conv_dim
    dev = gen.device
    col = torch.exp(math.log(1e-4) + 4 * torch.rand(conv_dim, generator=gen, device=dev)) if col_scale \
        else torch.ones(conv_dim, device=dev)
    s_in = torch.cat([torch.full((s.d_ssm,), attrs["x_scale"]), torch.full((s.ngroups * s.d_state,), attrs["B_scale"]),
                      torch.full((s.ngroups * s.d_state,), attrs["C_scale"])]).to(dev)
    q = torch.randn(bt, L, conv_dim, generator=gen, device=dev) * 60
    ties = torch.rand(bt, L, conv_dim, generator=gen, device=dev) < 1 / 16
    q = torch.where(ties, q.floor() + 0.5, q)
    xbc = (q.double() * s_in.double() / col.double()).float()
    zxbcdt = torch.cat([torch.randn(bt, L, s.d_ssm, generator=gen, device=dev), xbc,
                        torch.randn(bt, L, s.nheads, generator=gen, device=dev)], -1)
    t = dict(zxbcdt=zxbcdt, **conv, col_scale=col.float() if col_scale else None)
    return {k: (v.to(device) if v is not None else None) for k, v in t.items()}, {**attrs, "xbc_offset": s.d_ssm}


def ssd_case(s: LayerShape, bt: int, L: int, gen: torch.Generator, with_state: bool = True,
             device: str = "cuda") -> tuple[dict, dict]:
    """(tensors, attributes) of QuantSSD; ssm_state_scale is calibrated on the inputs' own state."""
    grp = group_tensors(s, gen)
    dt0 = torch.exp(math.log(1e-3) + (math.log(1e-1) - math.log(1e-3))
                    * torch.rand(s.nheads, generator=gen, device=gen.device))
    t = dict(x=_int8((bt, L, s.d_ssm), 35.0, gen),
             dt=_int8((bt, L, s.nheads), 40.0, gen),
             B=_int8((bt, L, s.ngroups * s.d_state), 35.0, gen),
             C=_int8((bt, L, s.ngroups * s.d_state), 35.0, gen),
             A_log=torch.log(1 + 15 * torch.rand(s.nheads, generator=gen, device=gen.device)),
             D=0.5 + torch.rand(s.nheads, generator=gen, device=gen.device),
             dt_bias=torch.log(torch.expm1(dt0)),
             **{k: grp[k] for k in ("x_out_scales", "B_out_scales", "C_out_scales",
                                    "x_head_group_range", "x_dim_group_range")})
    attrs = dict(dt_scale=0.02, dt_min=0.0, dt_max=math.inf, ngroups=s.ngroups, nheads=s.nheads,
                 headdim=s.headdim, d_state=s.d_state)
    t = {k: v.to(device) for k, v in t.items()}
    t["ssm_state_scale"] = calibrate_state_scale(t, attrs, nsteps=min(L, 512))
    t["ssm_state"] = _int8((bt, s.nheads, s.headdim, s.d_state), 45.0, gen).to(device) if with_state else None
    return t, attrs


def with_bc_scaled(t: dict, attrs: dict, factor: float) -> dict:
    """The case with B's and C's scales times `factor`, D = 0 and the state scale calibrated anew: the prefill's
    M Xq (its entries scaled by a power of two into f16's range) is then y's only part without a state, and a
    factor far from 1 puts M's unscaled entries past f16's largest or under its normal range."""
    t = {**t, "B_out_scales": t["B_out_scales"] * factor, "C_out_scales": t["C_out_scales"] * factor,
         "D": torch.zeros_like(t["D"])}
    t["ssm_state_scale"] = calibrate_state_scale(t, attrs, nsteps=min(t["x"].shape[1], 512))
    return t


def with_subnormal_state_scales(t: dict, attrs: dict) -> dict:
    """The case with the state scales of state indices 0 and 1 (every group) under the normal floats, 1e-40 (whose
    reciprocal overflows to inf) and 5e-39, B = 0 there (the state decays: S = dA * S0, which such a scale
    holds in range) and a third of the state there 0 (without a state, all of it): Q's reciprocal multiply cannot
    serve these scales (needs_division in common.cuh), and a state of exactly 0 must stay 0."""
    n = attrs["d_state"]
    t = {**t, "B": t["B"].clone(), "ssm_state_scale": t["ssm_state_scale"].clone()}
    for j, scale in ((0, 1e-40), (1, 5e-39)):
        t["ssm_state_scale"][..., j] = scale
        t["B"][..., j::n] = 0
    if t.get("ssm_state") is not None:
        t["ssm_state"] = t["ssm_state"].clone()
        t["ssm_state"][:, :, ::3, :2] = 0
    return t


def calibrate_state_scale(t: dict, attrs: dict, nsteps: int) -> torch.Tensor:
    """Per (SSD group, head group, dim group, state index): the largest |state| over the first
    `nsteps` tokens from a zero state, over the rows of that group, / 127, with room (x 2)."""
    g, h, p, n = attrs["ngroups"], attrs["nheads"], attrs["headdim"], attrs["d_state"]
    nhg, ndg = t["x_out_scales"].shape[1:]
    ones = torch.ones(g, nhg, ndg, n, device=t["x"].device)
    sl = {k: t[k][:, :nsteps] for k in ("x", "dt", "B", "C")}
    xh, Bh, _, dtv, A, _, S, _ = _ssd_inputs(
        sl["x"], sl["dt"], sl["B"], sl["C"], t["A_log"], t["D"], t["dt_bias"], t["x_out_scales"],
        t["B_out_scales"], t["C_out_scales"], t["x_head_group_range"], t["x_dim_group_range"], ones,
        None, attrs["dt_scale"], attrs["dt_min"], attrs["dt_max"], g, h, p, n)
    amax = torch.zeros_like(S[0])
    for k in range(xh.shape[1]):
        S = torch.exp(dtv[:, k] * A)[:, :, None, None] * S + (
            (dtv[:, k, :, None] * xh[:, k])[..., None] * Bh[:, k, :, None, :])
        amax = torch.maximum(amax, S.abs().amax(0))
    amax = amax.reshape(h * p, n)
    sg, hg, dg = head_dim_groups(t["x_head_group_range"], t["x_dim_group_range"], h, p)
    group = ((sg[:, None] * nhg + hg[:, None]) * ndg + dg).reshape(h * p).to(amax.device)
    scale = torch.zeros(g * nhg * ndg, n, device=amax.device).scatter_reduce(
        0, group[:, None].expand(h * p, n), amax, reduce="amax")
    return (scale.reshape(g, nhg, ndg, n) * 2 / 127).clamp_min(1e-6).float()


def poison_(*tensors: torch.Tensor) -> None:
    """Fills outputs with a value no kernel writes on these inputs (NaN, or -77 for int8)."""
    for t in tensors:
        if t is not None:
            t.fill_(-77 if t.dtype == torch.int8 else float("nan"))


def mixer_case(s: LayerShape, bt: int, gen: torch.Generator, device: str = "cuda") -> tuple[dict, dict]:
    """(tensors, fields) of QmambaDecodeMixer for `bt` rows of one token: in_proj's float output whose
    segments quantize to spread int8 values, the conv and SSD tensors of one layer (one set of group
    tensors for both), int8 states."""
    ssd, ssd_attrs = ssd_case(s, bt, 8, gen, device=device)
    conv, conv_attrs = conv_case(s, bt, 1, gen, device=device)
    groups = ("x_out_scales", "B_out_scales", "C_out_scales", "x_head_group_range", "x_dim_group_range")
    fields = {**conv_attrs, "d_conv": s.d_conv, "z_scale": 0.05, "dt_scale": ssd_attrs["dt_scale"], "dt_min": 0.0,
              "dt_max": math.inf}
    seg_scale = [fields["z_scale"], fields["x_scale"], fields["B_scale"], fields["C_scale"], fields["dt_scale"]]
    widths = [s.d_ssm, s.d_ssm, s.ngroups * s.d_state, s.ngroups * s.d_state, s.nheads]
    zxbcdt = torch.cat([torch.randn(bt, 1, w, generator=gen, device=gen.device) * 40 * sc
                        for w, sc in zip(widths, seg_scale)], -1)
    t = dict(zxbcdt=zxbcdt.float(), conv_weight=conv["weight"], conv_bias=conv["bias"],
             **{k: ssd[k] for k in groups}, A_log=ssd["A_log"], D=ssd["D"], dt_bias=ssd["dt_bias"],
             ssm_state_scale=ssd["ssm_state_scale"], conv_state=conv["conv_state"], ssm_state=ssd["ssm_state"])
    return {k: v.to(device) for k, v in t.items()}, fields


def linear_case(k: int, n: int, rows: int, norm: bool, residual: bool, seed: int = 0) -> tuple[dict, torch.Tensor]:
    """(arguments of QmambaW8A8Linear on the GPU, its int8 weight [n, k]) for `rows` activation rows."""
    from qmamba.runtime.w8a8_linear import pack_int8_words

    g = torch.Generator(device="cuda").manual_seed(seed)
    w = torch.randint(-128, 128, (n, k), dtype=torch.int8, device="cuda", generator=g)
    args = dict(x=torch.randn(rows, 1, k, device="cuda", generator=g) * 2, weight=pack_int8_words(w),
                out_scale=torch.rand(n, device="cuda", generator=g) * 1e-3 + 1e-5,
                input_scale=torch.tensor([0.02], device="cuda"))
    if norm:
        args["norm_weight"] = torch.rand(k, device="cuda", generator=g) + 0.5
    if residual:
        args["residual"] = torch.randn(rows, 1, n, device="cuda", generator=g)
    return args, w


# QmambaW8A8Linear with a rotation: name -> (K, N, rows, norm_group, rotation as in linear_rotation): out_proj of
# 2.7b (40 x 128; one row, and 8 on tensor cores), 8b (64 x 128, 8 norm groups) and 130m (12 x 128, rows over 8),
# one Sylvester factor, one dense factor of 12 (f1 = 1), a random dense factor of 3 over 16, and f1 = 2 under an
# odd f0 with K not a multiple of 4.
LINEAR_ROTATION_CASES = {
    "2.7b-out_proj-b1": (5120, 2560, 1, 5120, "hadamard"),
    "2.7b-out_proj-b8": (5120, 2560, 8, 5120, "hadamard"),
    "8b-out_proj-b3": (8192, 4096, 3, 1024, "hadamard"),
    "130m-out_proj-b9": (1536, 768, 9, 1536, "hadamard"),
    "sylvester-128-b2": (128, 64, 2, 64, "hadamard"),
    "dense-12-b5": (12, 7, 5, 0, "hadamard"),
    "random-3x16-b4": (48, 33, 4, 24, (3, 16)),
    "random-5x2-b3": (10, 9, 3, 5, (5, 2)),
}
# How far a value of the rotation pass may be from the fp32 twin's, relative to its row's largest: fp32 sums in
# two orders (QmambaGatedNorm's rows are within about 2e-7 of the float64 twin, relative to the row's norm).
ROTATED_VALUE_TOL = 4e-6


def linear_rotation(k: int, rotation, seed: int = 1) -> tuple:
    """(f0, f1, F_0 on the GPU or None): "hadamard" the model's (``hadamard_rotation(k)``), (f0, f1) a random
    orthogonal F_0 of order f0 over the Sylvester factor of order f1."""
    from qmamba.runtime.gated_norm import hadamard_rotation

    if rotation == "hadamard":
        f0, f1, first = hadamard_rotation(k)
    else:
        f0, f1 = rotation
        g = torch.Generator().manual_seed(case_seed(k, f0, f1, seed))
        first = torch.linalg.qr(torch.randn(f0, f0, generator=g, dtype=torch.float64))[0].float()
    return f0, f1, first.cuda() if first is not None else None


# QmambaGatedNorm: name -> (rows, K, group_size, rotation, z_scale[, z_col_scale]). rotation: None, "hadamard"
# (the model's, hadamard_rotation(K)) or (f0, f1): a random orthogonal F_0 of order f0 and the Sylvester factor of
# order f1. z_scale None: no z, no gate (the norm and rotation of y alone, as QmambaW8A8Linear's rotation pass runs
# it). z_col_scale True: z comes unscaled with a scale a column, as in_proj's z piece before its output scale.
# Real rows (130m, 780m, 2.7b one group; 8b eight groups; 48 x 128 four), with the dense F_0 of 3 (8 groups)
# each tile height 1 to 6 of F_0^T Y; one Sylvester factor (of 128, and of 64: half a unit of the transform),
# one dense factor, no rotation with one group, with 8 and with many small groups, K not a multiple of 4 (scalar
# paths), f1 = 2 under an odd f0, and rows too long for shared memory (normed in out); without a gate 2.7b's
# and 8b's rows, one factor, no rotation with odd K and 3 groups, f1 = 2 under an odd f0. Rows not a multiple of
# anything; with z_scale > 0 a third of z sits on or next to a rounding tie of z / z_scale. With a column scale
# 2.7b's row and 8b's groups, K not a multiple of 4 (the scalar path) and z as is (z_scale 0).
GATED_NORM_CASES = {
    "130m-12x128": (3, 1536, 1536, "hadamard", 0.05),
    "2.7b-40x128-one-row": (1, 5120, 5120, "hadamard", 0.05),
    "8b-64x128-8-groups": (2, 8192, 1024, "hadamard", 0.05),
    "780m-24x128": (2, 3072, 3072, "hadamard", 0.05),
    "48x128-4-groups": (2, 6144, 1536, "hadamard", 0.05),
    "dense-3x64-8-groups": (7, 192, 24, (3, 64), 0.1),
    "sylvester-128": (3, 128, 64, "hadamard", 0.1),
    "sylvester-64-half-unit": (5, 64, 64, "hadamard", 0.1),
    "dense-96": (7, 96, 96, "hadamard", 0.1),
    "plain-one-group": (3, 1536, 1536, None, 0.05),
    "plain-8-groups-z-as-is": (7, 5120, 640, None, 0.0),
    "plain-24-groups-of-4": (3, 96, 4, None, 0.1),
    "plain-odd-K-3-groups": (3, 99, 33, None, 0.1),
    "dense-5x2-odd": (3, 10, 5, (5, 2), 0.1),
    "plain-row-in-out": (2, 16384, 2048, None, 0.05),
    "no-gate-2.7b-40x128": (1, 5120, 5120, "hadamard", None),
    "no-gate-8b-64x128-8-groups": (3, 8192, 1024, "hadamard", None),
    "no-gate-sylvester-128": (2, 128, 64, "hadamard", None),
    "no-gate-plain-odd-K-3-groups": (3, 99, 33, None, None),
    "no-gate-dense-5x2-odd": (3, 10, 5, (5, 2), None),
    "col-scale-2.7b-40x128": (3, 5120, 5120, "hadamard", 0.05, True),
    "col-scale-8b-64x128-8-groups": (2, 8192, 1024, "hadamard", 0.05, True),
    "col-scale-plain-odd-K-3-groups": (3, 99, 33, None, 0.1, True),
    "col-scale-z-as-is-24-groups-of-4": (5, 96, 4, None, 0.0, True),
}
# More rows than a GPU holds blocks: each block takes several rows in turn (the sanitizer's races between rows).
GATED_NORM_MANY_ROWS = {
    "dense-3x64-1100-rows": (1100, 192, 24, (3, 64), 0.1),
    "plain-24-groups-1100-rows": (1100, 96, 4, None, 0.1),
    "no-gate-dense-3x64-1100-rows": (1100, 192, 24, (3, 64), None),
    "col-scale-dense-3x64-1100-rows": (1100, 192, 24, (3, 64), 0.1, True),
}


def gated_norm_case(rows: int, k: int, group: int, rotation, z_scale: float | None, z_col_scale: bool = False, *,
                    seed: int = 0, device: str = "cpu") -> tuple[dict, dict]:
    """(tensors y, z [rows, 1, k] (None when z_scale is None) and weight, attributes of ``gated_norm`` /
    ``gated_norm_ref``; with ``z_col_scale`` also that tensor [k] (scales of 0.005 to 0.015, as in_proj's output
    scales) and z divided by it in fp32, so that z times it lands on or one ulp beside the values above, ties
    included)."""
    from qmamba.runtime.gated_norm import hadamard_rotation

    g = torch.Generator().manual_seed(case_seed(rows, k, group, rotation, z_scale, seed))
    y = torch.randn(rows, 1, k, generator=g) * 2
    z = torch.randn(rows, 1, k, generator=g) * 3
    if z_scale is not None and z_scale > 0:  # ties of z / z_scale: (n + 1/2) * s in fp32, and its neighbours one ulp away
        s = torch.tensor(z_scale, dtype=torch.float32)
        tie = (torch.randint(-130, 130, (rows, 1, k), generator=g) + 0.5).float() * s
        pick = torch.randint(0, 9, (rows, 1, k), generator=g)
        z = torch.where(pick == 0, tie, z)
        z = torch.where(pick == 1, torch.nextafter(tie, torch.tensor(math.inf)), z)
        z = torch.where(pick == 2, torch.nextafter(tie, torch.tensor(-math.inf)), z)
    weight = torch.rand(k, generator=g) + 0.5
    rot = None
    if rotation == "hadamard":
        rot = hadamard_rotation(k)
    elif rotation is not None:
        f0, f1 = rotation
        rot = (f0, f1, torch.linalg.qr(torch.randn(f0, f0, generator=g, dtype=torch.float64))[0].float())
    if rot is not None and rot[2] is not None:
        rot = (rot[0], rot[1], rot[2].to(device))
    tensors = dict(y=y.to(device), z=z.to(device) if z_scale is not None else None, weight=weight.to(device))
    if z_col_scale:
        col = (torch.rand(k, generator=g) + 0.5) * 0.01
        tensors.update(z=(z / col).to(device), z_col_scale=col.to(device))
    return tensors, dict(group_size=group, eps=1e-5, z_scale=z_scale or 0.0, rotation=rot)


def row_rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """The largest ||got - want|| / ||want|| over the rows (last axis), in float64."""
    got, want = got.double().reshape(-1, got.shape[-1]), want.double().reshape(-1, want.shape[-1])
    return ((got - want).norm(dim=-1) / want.norm(dim=-1).clamp_min(1e-300)).max().item()
