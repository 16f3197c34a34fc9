"""The QuantSSD prefill kernel's arithmetic, in its order, on the CPU (numpy float32).

``trt_plugins/kernels/quantSSDPrefillKernel.cu`` computes the chunked scan in three phases (chunk
states, a pass over the chunks, chunk outputs) with its own rounding points: ``S'`` in phase 3's state
product as three int8 limbs of a 23-bit fixed point, their int8 products exact, the low two limbs' sums one
integer, then ``65536 hi + lo`` in fp32; ``Xq w`` (phase 1) and M's entries, scaled by a power of two into f16's range, split into two f16
parts (``v = big + small``), fp32 accumulation one mma at a time,
``__expf`` in the entries of M (left of a strip's 16-wide diagonal slab as the product of a row, a slab and a
column factor), the warp's scan order for the cumulative sums of ``dt * A``. This
module repeats those roundings so that the kernel's error against the sequential reference
(``quant_ssd_ref``) can be measured without a GPU. What it cannot repeat: how a tensor core adds
the products inside one mma (taken here as exact, then rounded once) and the last ulp of ``expf``,
``log1pf`` and ``__expf`` (numpy's float32 functions, ``__expf`` as ``exp2(x * log2 e)``).

    y, state_out, state_lsb = quant_ssd_prefill_order(**tensors, **attrs, chunk_size=128)

``state_lsb`` is the final state before its rounding, ``S_L / ssm_state_scale`` (docs/ops.md).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from qmamba.export.ops import state_scales, x_channel_scales

F32 = np.float32


def split_f16(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """v = big + small as f16 (cvt.rn.f16x2.f32, nearest even, subnormals kept), small from v - big in fp32."""
    with np.errstate(over="ignore"):
        big = np.asarray(v, F32).astype(np.float16)
        return big, (np.asarray(v, F32) - big.astype(F32)).astype(F32).astype(np.float16)


def m_scale(bound: np.ndarray) -> np.ndarray:
    """The kernel's m_scale: 2^(15 - k) for bound in [2^(k - 1), 2^k), at most 2^64; 1 where bound is not > 0."""
    b = np.asarray(bound, F32)
    k = ((b.view(np.uint32) >> 23) & 0xFF).astype(np.int64) - 126
    e = np.minimum(15 - k, 64)
    return np.where((b > 0) & (b <= F32(3.0e38)), np.ldexp(F32(1), e).astype(F32), F32(1)).astype(F32)


def fast_exp(x: np.ndarray) -> np.ndarray:
    """__expf: ex2.approx of x * log2(e) (rounded to fp32 first)."""
    return np.exp2((x.astype(F32) * F32(1.4426950408889634)).astype(F32)).astype(F32)


def mma(acc: np.ndarray, a: np.ndarray, b: np.ndarray, ks) -> np.ndarray:
    """acc[..., m, n] + one mma over the k indices ks: the products summed exactly, rounded once, added in fp32."""
    part = np.einsum("...mk,...kn->...mn", a[..., :, ks].astype(np.float64), b[..., ks, :].astype(np.float64))
    return (acc + part.astype(F32)).astype(F32)


LIMB_SCALE = (1 << 22) - 64  # the kernel's kLimbScale


def limbs_of(t: np.ndarray) -> list:
    """t (int64, |t| <= LIMB_SCALE) as balanced base-256 digits [l0, l1, l2]: t = l2 * 65536 + l1 * 256 + l0."""
    l0 = ((t + 128) & 255) - 128
    t1 = (t - l0) >> 8
    l1 = ((t1 + 128) & 255) - 128
    return [l0, l1, (t1 - l1) >> 8]


def limb_product(a_limbs: list, b: np.ndarray, subscripts: str, ks) -> np.ndarray:
    """The kernel's sum of int8 products over the k indices ks by limbs: the top limb's sums alone, the low two's
    as one integer (256 times the middle limb's sums plus the low limb's, exact in int32), then
    fp32(65536 hi + fp32(lo)) (an FMA: the product is exact)."""
    def sums(limb):
        return np.einsum(subscripts, np.take(a_limbs[limb], ks, axis=-1), np.take(b, ks, axis=-1).astype(np.int64))
    hi, lo = sums(2), 256 * sums(1) + sums(0)
    return (hi.astype(np.float64) * 65536 + lo.astype(F32).astype(np.float64)).astype(F32)


def state_limbs(S: np.ndarray) -> tuple[list, np.ndarray]:
    """The kernel's limbs of S [..., p, npad] (fp32), a row being S[..., i, :]: t = rint(S * inv_i) with inv_i =
    fp32(LIMB_SCALE / max|row|), written as balanced base-256 digits [l0, l1, l2] (int64 arrays), and the row
    scales u_i = fp32(max|row| / LIMB_SCALE)."""
    m = np.abs(S).max(-1).astype(F32)
    with np.errstate(divide="ignore"):
        inv = np.where(m > 0, (F32(LIMB_SCALE) / m).astype(F32), F32(0)).astype(F32)
        u = np.where(m > 0, (m / F32(LIMB_SCALE)).astype(F32), F32(0)).astype(F32)
    return limbs_of(np.rint((S * inv[..., None]).astype(F32)).astype(np.int64)), u


def dt_values(dtq: np.ndarray, dt_scale: float, dt_bias: np.ndarray, dt_min: float, dt_max: float) -> np.ndarray:
    v = ((dtq.astype(F32) * F32(dt_scale)).astype(F32) + dt_bias.astype(F32)).astype(F32)
    with np.errstate(over="ignore"):
        sp = np.where(v > 20, v, np.log1p(np.exp(v)).astype(F32))
    return np.clip(sp, F32(dt_min), F32(dt_max)).astype(F32)


def chunk_cumsum(da: np.ndarray) -> np.ndarray:
    """The kernel's inclusive scan of da [..., Q]: lane l sums its Q/32 values in turn, then a
    shuffle (Hillis-Steele) scan of the lanes' sums; before = incl - run is added to each value."""
    Q = da.shape[-1]
    per = Q // 32
    lanes = da.reshape(*da.shape[:-1], 32, per)
    v = np.empty_like(lanes)
    run = np.zeros(lanes.shape[:-1], F32)
    for k in range(per):
        run = (run + lanes[..., k]).astype(F32)
        v[..., k] = run
    incl = run.copy()
    off = 1
    while off < 32:
        shifted = np.zeros_like(incl)
        shifted[..., off:] = incl[..., :-off]
        incl = np.where(np.arange(32) >= off, (incl + shifted).astype(F32), incl)
        off *= 2
    before = (incl - run).astype(F32)
    return (v + before[..., None]).astype(F32).reshape(da.shape)


def pick_chunk(requested: int) -> int:
    """The kernel's chunk length where its tiles fit in shared memory."""
    q = 128 if requested == 0 else requested
    return 32 if q < 32 else (256 if q > 256 else q // 32 * 32)


def quant_ssd_prefill_order(x, dt, B, C, A_log, D, dt_bias, x_out_scales, B_out_scales, C_out_scales,
                            x_head_group_range, x_dim_group_range, ssm_state_scale, ssm_state=None, *,
                            dt_scale, dt_min=0.0, dt_max=math.inf, ngroups, nheads, headdim, d_state,
                            chunk_size=128):
    """(y fp32 [bt, L, h*p], ssm_state_out int8, S_L / ssm_state_scale) in the kernel's order."""
    h, p, n, g = nheads, headdim, d_state, ngroups
    hpg = h // g
    bt, L, _ = x.shape
    Q = pick_chunk(chunk_size)
    nc = -(-L // Q)
    npad = -(-n // 32) * 32
    pad = nc * Q - L

    def chunks(v, width):  # [bt, L, width] int8 -> [bt, nc, Q, width] float (exact), zero rows past L
        v = np.asarray(v.cpu(), dtype=F32)
        v = np.concatenate([v, np.zeros((bt, pad, width), F32)], 1)
        return v.reshape(bt, nc, Q, width)

    X = chunks(x, h * p).reshape(bt, nc, Q, h, p).transpose(0, 1, 3, 2, 4)          # [bt, nc, h, Q, p]
    Bq = chunks(B, g * n).reshape(bt, nc, Q, g, n).transpose(0, 1, 3, 2, 4)        # [bt, nc, g, Q, n]
    Cq = chunks(C, g * n).reshape(bt, nc, Q, g, n).transpose(0, 1, 3, 2, 4)
    Bq = np.pad(np.repeat(Bq, hpg, axis=2), [(0, 0)] * 4 + [(0, npad - n)])         # [bt, nc, h, Q, npad]
    Cq = np.pad(np.repeat(Cq, hpg, axis=2), [(0, 0)] * 4 + [(0, npad - n)])
    sg_of = np.arange(h) // hpg
    sB = np.asarray(B_out_scales.cpu(), F32)[sg_of]                                 # [h]
    sC = np.asarray(C_out_scales.cpu(), F32)[sg_of]
    sCB = (sC * sB).astype(F32)
    A = (-np.exp(np.asarray(A_log.cpu(), F32))).astype(F32)
    Dh = np.asarray(D.cpu(), F32)
    sx = np.asarray(x_channel_scales(x_out_scales, x_head_group_range, x_dim_group_range, h, p).cpu(),
                    F32).reshape(h, p)
    ss = np.asarray(state_scales(ssm_state_scale, x_head_group_range, x_dim_group_range, h, p).cpu(),
                    F32).reshape(h, p, n)

    valid = (np.arange(nc * Q) < L).reshape(nc, Q)
    dtq = np.concatenate([np.asarray(dt.cpu(), F32), np.zeros((bt, pad, h), F32)], 1)
    dtv = dt_values(dtq, dt_scale, np.asarray(dt_bias.cpu(), F32), dt_min, dt_max)
    dtv = np.where(valid.reshape(1, nc * Q, 1), dtv, F32(0)).reshape(bt, nc, Q, h).transpose(0, 1, 3, 2)  # [bt, nc, h, Q]
    acum = chunk_cumsum((dtv * A[None, None, :, None]).astype(F32))
    a_last = acum[..., -1:]

    # Phase 1: L_c = Xw^T Bq with Xw = Xq * w times xscale (a power of two putting 128 max_s w[s] below 2^15) in
    # two f16 parts, small then big a 16-deep step; the sum divided by xscale. And the decays.
    w = ((np.exp((a_last - acum).astype(F32)).astype(F32) * dtv).astype(F32) * sB[None, None, :, None]).astype(F32)
    Xw = (X * w[..., None]).astype(F32)                                              # [bt, nc, h, Q, p]
    xscale = m_scale((F32(128) * w.max(-1)).astype(F32))                             # [bt, nc, h]
    big, small = split_f16((Xw * xscale[..., None, None]).astype(F32))
    big, small = np.swapaxes(big, -1, -2), np.swapaxes(small, -1, -2)                 # [bt, nc, h, p, Q]
    Lc = np.zeros((bt, nc, h, p, npad), F32)
    for k0 in range(0, Q, 16):
        ks16 = np.arange(k0, k0 + 16)
        Lc = mma(Lc, small, Bq, ks16)
        Lc = mma(Lc, big, Bq, ks16)
    Lc = (Lc * (F32(1) / xscale)[..., None, None]).astype(F32)
    decay = np.exp(a_last[..., 0]).astype(F32)                                       # [bt, nc, h]

    # Phase 2: the pass over the chunks.
    if ssm_state is None:
        S = np.zeros((bt, h, p, npad), F32)
    else:
        s0 = (np.asarray(ssm_state.cpu(), F32) * ss).astype(F32)
        S = np.pad((s0 / sx[..., None]).astype(F32), [(0, 0)] * 3 + [(0, npad - n)])
    S_in = np.empty_like(Lc)
    for c in range(nc):
        S_in[:, c] = S
        S = ((decay[:, c, :, None, None] * S).astype(F32) + Lc[:, c]).astype(F32)
    S_last = (S[..., :n] * sx[..., None]).astype(F32)
    state_lsb = (S_last / ss).astype(F32)
    state_out = np.clip(np.round(state_lsb), -128, 127).astype(np.int8)

    # Phase 3: y = s_x (rC * (Cq S'^T) + M Xq) + D xh, a strip's sums split between two warps (side 0: the even
    # 32-wide blocks of d_state and the even 16-wide slabs of M, side 1 the odd ones), added at the end; M and the
    # state's part times mscale (a power of two), the sum divided by it.
    rC = (np.exp(acum).astype(F32) * sC[None, None, :, None]).astype(F32)
    bound = ((F32(16384 * npad) * sCB).astype(F32)[None, None, :] * dtv.max(-1)).astype(F32)  # [bt, nc, h]
    mscale = m_scale(bound)
    sCBm = (sCB[None, None, :] * mscale).astype(F32)                                      # [bt, nc, h]
    limbs, u = state_limbs(S_in)                                                     # [bt, nc, h, p, npad], [.., p]
    blocks = [np.arange(k0, k0 + 32) for k0 in range(0, npad, 32)]
    cb = np.einsum("...tj,...sj->...ts", Cq.astype(np.float64), Bq.astype(np.float64)).astype(F32)  # exact
    diff = (acum[..., :, None] - acum[..., None, :]).astype(F32)
    causal = np.tril(np.ones((Q, Q), bool))
    with np.errstate(over="ignore", invalid="ignore"):
        M = (((cb * sCBm[..., None, None]).astype(F32) * fast_exp(np.where(causal, diff, F32(0))))
             .astype(F32) * dtv[..., None, :]).astype(F32)
    M = np.where(causal, M, F32(0))
    # Left of a strip's diagonal slab (slab s0 with s0 + 16 <= m0, the strip's first row): the decay as three
    # factors, I2F(cb) * (row * slab) * colw[s] (the kernel's phase 3).
    tq, sq = np.arange(Q)[:, None], np.arange(Q)[None, :]
    m0 = tq // 16 * 16
    left = (sq // 16 * 16 + 16) <= m0                                                # [Q, Q]
    with np.errstate(over="ignore", invalid="ignore"):
        colw = ((fast_exp((acum[..., np.arange(Q) | 15] - acum).astype(F32)) * dtv).astype(F32)
                * sCBm[..., None]).astype(F32)                                       # [bt, nc, h, Q]
        a_ref = acum[..., np.maximum(m0[:, 0] - 1, 0)]                                 # [bt, nc, h, Q] by row t
        row = fast_exp((acum - a_ref).astype(F32))
        slab = fast_exp((a_ref[..., :, None] - acum[..., None, np.arange(Q) // 16 * 16 + 15]).astype(F32))
        M_left = ((cb * (row[..., :, None] * slab).astype(F32)).astype(F32) * colw[..., None, :]).astype(F32)
    M = np.where(left, M_left, M)
    big, small = split_f16(M)
    sides = []
    for side in (0, 1):
        acc = np.zeros((bt, nc, h, Q, p), F32)
        ks = [k for i, b in enumerate(blocks) if i % 2 == side for k in b]
        if ks:
            acc = limb_product(limbs, Cq, "...ik,...tk->...ti", np.array(ks))
        acc = (((acc * u[..., None, :]).astype(F32) * rC[..., None]).astype(F32)
               * mscale[..., None, None]).astype(F32)
        for s0 in range(16 * side, Q, 32):
            ks16 = np.arange(s0, s0 + 16)
            acc = mma(acc, small, X, ks16)
            acc = mma(acc, big, X, ks16)
        sides.append(acc)
    acc = ((sides[0] + sides[1]).astype(F32) * (F32(1) / mscale)[..., None, None]).astype(F32)
    xh = (sx[None, None, :, None, :] * X).astype(F32)
    y = ((sx[None, None, :, None, :] * acc).astype(F32) + (Dh[None, None, :, None, None] * xh).astype(F32)).astype(F32)
    y = y.transpose(0, 1, 3, 2, 4).reshape(bt, nc * Q, h * p)[:, :L]
    return torch.from_numpy(np.ascontiguousarray(y)), torch.from_numpy(state_out), torch.from_numpy(state_lsb)
