// QuantSSD prefill (docs/ops.md): the chunked SSD scan in three launches, each parallel over chunks.
//
// With chunks of Q tokens, a_cum the inclusive cumulative sum of dt * A inside a chunk, and
// Xq, Bq, Cq the chunk's int8 inputs (exact floats), the state is kept as S' = S / s_x(i) (each row
// divided by its dim's x scale, so the per-dim group scale factors out of every product):
//
//   1. chunk state, a block per (batch row, chunk, head, slice of P dims), all chunks at once:
//        L_c   = Xw^T Bq,  Xw[s, i] = Xq[s, i] * w[s],  w[s] = exp(a_last - a_cum[s]) dt[s] sB    [P x n]
//        d_c   = exp(a_last)                                        (the chunk's decay, a_last = a_cum[Q-1])
//      written to the workspace (fp32).
//   2. state pass, a warp per state row of one (batch row, head), walking the chunks:
//        S'_0 = s_state * q / s_x;  workspace[c] <- S'_c (the state entering chunk c, as phase 3's limbs);
//        S'_{c+1} = d_c S'_c + L_c;  ssm_state_out = Q(S'_last * s_x, s_state).
//   3. chunk scan, a block per (batch row, chunk, head, slice), all chunks at once:
//        y = s_x(i) * ( diag(rC) Cq S'_c^T + M Xq ) + D xh,   rC[t] = exp(a_cum[t]) sC,
//        M[t, s] = (Cq Bq^T)[t, s] sC sB exp(a_cum[t] - a_cum[s]) dt[s]  for s <= t, else 0.
//
// Only phase 2 is sequential over chunks, and it is a multiply-add per entry and chunk, streaming
// the workspace. The workspace holds one state per (batch row, chunk, head), 16 bytes a quad of entries
// (L_c in fp32; then S'_c as limbs, three bytes an entry and a unit a row, in the first 3 n4 + 4 bytes of each
// row): qmamba_quant_ssd_prefill_workspace() says how much.
//
// Arithmetic, point by point as in the fused kernel this replaces: dt (dt_value), the scan of
// dt * A (one warp, the same order), rC, w, the decay (expf), the entries of M on and right of a strip's
// diagonal slab (int32 product, then * sC sB * __expf(a_cum[t] - a_cum[s]) * dt[s], left to right), the
// initial S' (IEEE product, IEEE division) and the final Q. Products on tensor cores:
//   - Cq Bq^T: mma.sync m16n8k32 s8 x s8 -> s32, exact (|sum| <= 2^22 < 2^31), as the fused kernel's
//     TF32 product was;
//   - Cq S'^T: mma.sync m16n8k32 s8 x s8 -> s32 with S' as three int8 limbs of a 23-bit fixed point
//     (kLimbScale, below), exact a limb, combined in fp32 and scaled by the row's unit;
//   - M Xq and Xw^T Bq: mma.sync m16n8k16 f16 with fp32 accumulation, the float operand (M, Xw) times a
//     power of two that puts it below 2^15 (mscale a block, xscale a chunk) and split into two f16 numbers
//     v = big + small (small * b first, then big * b; Xq and Bq are int8, exact in f16): 22 bits of each
//     entry, as two TF32 numbers (M) or the limbs (Xw) kept before.
// Where the order differs from the fused kernel, and how far results may move:
//   - M left of a strip's diagonal slab: the decay as the product of three __expf factors (row, slab,
//     column; phase 3 below), each rounded, instead of one __expf: a few fp32 roundings an entry. An
//     entry of M or Xw so small that its scale leaves it below f16's normal range (2^-14, i.e. under 2^-29
//     of the bound) keeps fewer bits: at most 2^-25 absolute after scaling, 2^-40 of the bound.
//   - The state: the fused kernel added the chunk's products onto d_c S' inside the accumulator; here
//     L_c is summed on its own (the weight w rides on Xq instead of Bq: Xq * w is rounded where
//     Bq * w was) and S' = d_c S' + L_c is one IEEE multiply and one IEEE add. Each changes a
//     chunk's state by a few fp32 roundings of its magnitude (|S / s| <= 127.5 LSB: ~1e-5 LSB), and
//     Xw's two f16 parts keep 22 bits of each entry, so S_L stays well inside docs/ops.md's
//     delta = 0.05 LSB of the sequential reference (ssd_prefill_order.py emulates this order on the
//     CPU: tests/trt_plugins/test_ssd_prefill_order.py).
//   - y: rC and u_i are applied to the sum Cq S'^T instead of to each entry before the product, S'
//     is rounded to 2^-22 of its row's largest entry (the fused kernel split both operands of its
//     TF32 product, 3xTF32), and the two warps of a pair sum halves of d_state and of the slabs of M
//     apart. Relative error of y: ~1e-6 (emulated), far under the tests' 2e-3.
//   - d_c and a_last come from phase 1's scan; phase 3 repeats the same scan on the same inputs with
//     the same code (chunk_dt_cumsum), so the two agree bit for bit.
// Fragment order: the mma operands come from shared memory by ldmatrix (four 8 x 16-byte tiles a load;
// .trans for the f16 operands that lie token by token, Xq, Xw and Bq); the M tile stays in registers, the
// accumulators of a 16-wide slab's two 8-wide halves (row g, columns 2q and 2q+1 of each) being, packed to
// f16 pairs, the A fragment of the next product.
#include <math.h>

#include "checks.h"
#include "common.cuh"
#include "ssdChecks.h"
#include "tensorCore.cuh"

namespace qmamba {
namespace {

constexpr int kDefaultChunk = 128;   // chunk_size 0; the state traffic halves with each doubling
constexpr int kMaxChunk = 256;       // phase 3 runs Q / 16 warps: at most 16
constexpr int kStateWarps = 4;       // phase 1
constexpr int kStateThreads = kStateWarps * 32;
constexpr int kPassWarps = 8;        // phase 2: a warp a state row
constexpr int kSmallestOptin = 101376;  // workspace sizing without a device: sm_86 / sm_89's opt-in (99 KiB)
constexpr size_t kStatesAlign = 256;

struct PrefillArgs {
  const int8_t* __restrict__ x;
  const int8_t* __restrict__ dt;
  const int8_t* __restrict__ B;
  const int8_t* __restrict__ C;
  const float* __restrict__ A_log;
  const float* __restrict__ D;
  const float* __restrict__ dt_bias;
  const float* __restrict__ x_out_scales;
  const float* __restrict__ B_out_scales;
  const float* __restrict__ C_out_scales;
  const int32_t* __restrict__ head_ranges;
  const int32_t* __restrict__ dim_ranges;
  const float* __restrict__ state_scale;
  const int8_t* state;  // may alias state_out: each thread of phase 2 reads its entries before writing them
  void* __restrict__ y;
  int8_t* state_out;
  float* __restrict__ states;  // workspace: [batch, nchunks, nheads, headdim, n4] fp32 L_c, then S'_c's limbs
  float* __restrict__ decays;  // workspace: [batch, nchunks, nheads]
  int64_t seqlen;
  float dt_scale, dt_min, dt_max;
  int nheads, headdim, d_state, gn, hpg, nhg, ndg;
  int out_fp16;
  int vec_y;    // y's base is aligned for two-element stores
  int Q;        // chunk length, a multiple of 32, <= kMaxChunk
  int P;        // dims per block, 32 or 64
  int npad;     // d_state rounded up to a multiple of 32 (zero columns)
  int n4;       // d_state rounded up to a multiple of 4: the workspace's row length
  int pslices;  // headdim / P
  int nchunks;  // ceil(seqlen / Q)
};

// The state product of phase 3 in int8 mma: a float operand v given as the integer t = rint(v / u),
// |t| <= kLimbScale (u its unit: 2^-22 of the largest |v| it covers), written as three balanced base-256 digits
// t = l2 * 65536 + l1 * 256 + l0, each in [-128, 127]; its product with an int8 operand is then three exact int32
// sums (|sum| <= 128 * 128 * 256 = 2^22 a limb), the low two as one int32 (256 l1-sums + l0-sums), then
// 65536 hi + lo in fp32, and scaled by u. S'_c has a
// unit a row, max_j |S'[i, j]| / kLimbScale (phase 2 writes the limbs). A numpy study on an 8b-shaped head put
// Cq S'^T so at 1.2e-7 relative L2 from float64 (at 24 bits fixed point), with 2xTF32 at 4.4e-8 and plain TF32
// at 2.2e-4.
// kLimbScale keeps |v / u| below 2^22 (by 64, for the roundings of v * (1 / u)), where adding 1.5 * 2^23 to a
// float rounds it to an integer (to nearest even, as cvt.rni) in the low bits: no F2I (a quarter of the FADD
// rate) and no integer digit arithmetic.
constexpr int kLimbScale = (1 << 22) - 64;

// x's limbs as the bytes of rint(x) + 0x808080 (|x| < 2^22): byte k is l_k + 128 for the balanced digits l_k of
// rint(x), since t + 0x808080 = (l2 + 128) * 65536 + (l1 + 128) * 256 + (l0 + 128).
__device__ __forceinline__ uint32_t biased_limbs(float x) {
  return __float_as_uint(__fadd_rn(x, 12582912.0f)) - (0x4B400000u - 0x808080u);
}

// Four values' biased limbs into words[l] (byte e = limb l of value e, as int8: l + 128 with its top bit flipped).
__device__ __forceinline__ void pack_limbs(const uint32_t (&b)[4], uint32_t (&words)[3]) {
  const uint32_t lo01 = __byte_perm(b[0], b[1], 0x5140);  // b0.0 b1.0 b0.1 b1.1
  const uint32_t lo23 = __byte_perm(b[2], b[3], 0x5140);
  const uint32_t hi01 = __byte_perm(b[0], b[1], 0x0062);  // b0.2 b1.2
  const uint32_t hi23 = __byte_perm(b[2], b[3], 0x0062);
  words[0] = __byte_perm(lo01, lo23, 0x5410) ^ 0x80808080u;
  words[1] = __byte_perm(lo01, lo23, 0x7632) ^ 0x80808080u;
  words[2] = __byte_perm(hi01, hi23, 0x5410) ^ 0x80808080u;
}

// The sums of Cq's strip (A fragments at c_rows) times one limb of S' (B rows at limb_rows) over this warp's
// 32-wide blocks of d_state (from k_first, every other one), added onto d: exact in int32 while |d| stays below
// 2^31 (a limb's sums are at most 128 * 128 * 256 = 2^22).
template <int NT>
__device__ __forceinline__ void add_limb_sums(int (&d)[NT][4], const int8_t* c_rows, const int8_t* limb_rows, int ldn,
                                              int k_first, int npad) {
#pragma unroll 1  // unrolled, the fragments in flight cost the P = 32 kernel a third block an SM (94 registers)
  for (int k0 = k_first; k0 < npad; k0 += 64) {
    uint32_t ca[4];
    ldmatrix_x4(ca, c_rows + k0);
#pragma unroll
    for (int nt = 0; nt < NT; nt += 2) {
      uint32_t b[4];  // b0, b1 of column tiles nt and nt + 1
      ldmatrix_x4(b, limb_rows + 8 * nt * ldn + k0);
      mma_s8(d[nt], ca[0], ca[1], ca[2], ca[3], b[0], b[1]);
      mma_s8(d[nt + 1], ca[0], ca[1], ca[2], ca[3], b[2], b[3]);
    }
  }
}

// Shared memory of phase 1, in bytes: Xw = Xq w xscale as two f16 parts, big and small, [2][Q][P + 8]; Bq as f16
// [Q][npad + 8] (exact); dt, a_cum, w (Q floats each) and the warps' largest w (kStateWarps floats). Rows start
// 16-byte aligned and lie an odd multiple of 16 bytes apart, so the eight rows of an ldmatrix tile fall in
// distinct banks.
struct StateLayout {
  int ldx, ldb;  // halves
  int off_b, off_vec, bytes;
};
__host__ __device__ inline StateLayout state_layout(int Q, int P, int npad) {
  StateLayout l;
  l.ldx = P + 8;
  l.ldb = npad + 8;
  l.off_b = 2 * Q * l.ldx * 2;
  l.off_vec = l.off_b + Q * l.ldb * 2;
  l.bytes = l.off_vec + 3 * Q * 4 + kStateWarps * 4;
  return l;
}

// Shared memory of phase 3, in bytes: Cq and Bq as int8 [Q][npad + 16], Xq as f16 [Q][P + 8],
// S'_c as three int8 limbs [3][P][npad + 16] (state_limbs), the second warp of each pair's sums (Q / 32 pairs
// of 32 lanes x P / 2 floats, in fragment order), dt, a_cum, rC, colw (Q floats each), s_x and the limbs' row
// scales (P floats each), the chunk's largest dt. Every row starts 16-byte aligned (ldmatrix) and rows 16
// (mod 128) bytes apart: the eight rows of an ldmatrix tile fall in distinct banks.
struct ScanLayout {
  int ldn, ldx;
  int off_b, off_xt, off_s, off_red, off_vec, bytes;
};
__host__ __device__ inline ScanLayout scan_layout(int Q, int P, int npad) {
  ScanLayout l;
  l.ldn = npad + 16;
  l.ldx = P + 8;  // halves: 2P + 16 bytes, 16 (mod 128) for P = 64, 80 for P = 32
  l.off_b = Q * l.ldn;
  l.off_xt = 2 * Q * l.ldn;
  l.off_s = l.off_xt + Q * l.ldx * 2;
  l.off_red = l.off_s + 3 * P * l.ldn;
  l.off_vec = l.off_red + Q * P * 2;
  l.bytes = l.off_vec + 4 * Q * 4 + 2 * P * 4 + 16;
  return l;
}

// Two values v as f16 pairs big + small: what f16 rounding leaves of v (exact in fp32) is carried by a second
// product, so that big + small keeps 22 of v's bits (11 + 11) where it lies in f16's normal range.
struct SplitF16x2 {
  uint32_t big, small;
};
__device__ __forceinline__ SplitF16x2 split_f16x2(float lo, float hi) {
  const uint32_t big = pack_f16x2(lo, hi);
  const float2 b = unpack_f16x2(big);
  return {big, pack_f16x2(lo - b.x, hi - b.y)};
}

// The power of two that puts a float operand's entries (M, Xw) in f16's range, from a bound of their size:
// 2^(15 - k) for bound in [2^(k - 1), 2^k), so |v| * scale < 2^15 (f16's largest is 65504) and an entry near the
// bound keeps its 22 bits; at most 2^64, so that phase 3's state part, scaled alike, stays far from fp32's overflow.
constexpr int kMaxMScaleLog2 = 64;
__device__ __forceinline__ float m_scale(float bound) {
  if (!(bound > 0.0f) || bound > 3.0e38f) return 1.0f;  // no entry to scale (or none that f16 can hold)
  const int k = static_cast<int>((__float_as_uint(bound) >> 23) & 0xffu) - 126;  // a subnormal bound: k = -126
  const int e = min(15 - k, kMaxMScaleLog2);
  return __uint_as_float(static_cast<uint32_t>(e + 127) << 23);
}

// dtv[t] = dt of row t of the chunk (0 past the sequence: no decay, no input) and acum[t] = the
// inclusive cumulative sum of dt * A over the chunk, in the fused kernel's order: warp 0, Q / 32
// consecutive values a lane summed in turn, then a shuffle scan of the lanes' sums; *dt_largest (where
// given) the chunk's largest dt. Every thread of the block calls it (it synchronizes); phases 1 and 3 call
// it on the same inputs and agree bit for bit.
__device__ __forceinline__ void chunk_dt_cumsum(const PrefillArgs& a, const int8_t* __restrict__ dt_col, int T,
                                                float A, float dt_b, float* dtv, float* acum,
                                                float* dt_largest = nullptr) {
  const int Q = a.Q;
  for (int t = threadIdx.x; t < Q; t += blockDim.x) {
    const float d = t < T ? dt_value(dt_col[static_cast<int64_t>(t) * a.nheads], a.dt_scale, dt_b, a.dt_min, a.dt_max)
                          : 0.0f;
    dtv[t] = d;
    acum[t] = d * A;
  }
  __syncthreads();
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x, per = Q / 32;
    float v[kMaxChunk / 32];
    float run = 0.0f, dmax = 0.0f;
#pragma unroll
    for (int k = 0; k < kMaxChunk / 32; ++k) {
      if (k < per) {
        run += acum[lane * per + k];
        v[k] = run;
        dmax = fmaxf(dmax, dtv[lane * per + k]);
      }
    }
    if (dt_largest != nullptr) {
#pragma unroll
      for (int off = 16; off > 0; off /= 2) dmax = fmaxf(dmax, __shfl_xor_sync(0xffffffffu, dmax, off));
      if (lane == 0) *dt_largest = dmax;
    }
    float incl = run;
#pragma unroll
    for (int off = 1; off < 32; off *= 2) {
      const float o = __shfl_up_sync(0xffffffffu, incl, off);
      if (lane >= off) incl += o;
    }
    const float before = incl - run;
#pragma unroll
    for (int k = 0; k < kMaxChunk / 32; ++k) {
      if (k < per) acum[lane * per + k] = v[k] + before;
    }
  }
  __syncthreads();
}

// 16 int8 of a row at dst: as int8, one 16-byte store; as f16 (the int8 values, exact), two. Phase 3's M Xq takes
// its f16 B operands from such rows by ldmatrix.trans.
__device__ __forceinline__ void store_piece16(int8_t* dst, uint4 v) { *reinterpret_cast<uint4*>(dst) = v; }
__device__ __forceinline__ void store_piece16(uint16_t* dst, uint4 v) {
  uint32_t h[8];
  int8x4_to_f16x2(v.x, h[0], h[1]);
  int8x4_to_f16x2(v.y, h[2], h[3]);
  int8x4_to_f16x2(v.z, h[4], h[5]);
  int8x4_to_f16x2(v.w, h[6], h[7]);
  reinterpret_cast<uint4*>(dst)[0] = make_uint4(h[0], h[1], h[2], h[3]);
  reinterpret_cast<uint4*>(dst)[1] = make_uint4(h[4], h[5], h[6], h[7]);
}

// The 16 int8 of row r from column c of src (row stride `stride`), zero outside rows_valid x cols_valid. VEC = 16:
// one 16-byte load (cols_valid, c, the stride and the base 16-byte aligned); VEC = 1: bytes.
template <int VEC>
__device__ __forceinline__ uint4 load_piece16(const int8_t* __restrict__ src, int64_t stride, int r, int c,
                                              int rows_valid, int cols_valid) {
  if constexpr (VEC == 16) {
    return r < rows_valid && c < cols_valid ? *reinterpret_cast<const uint4*>(src + r * stride + c)
                                            : make_uint4(0u, 0u, 0u, 0u);
  } else {
    uint32_t w[4] = {0u, 0u, 0u, 0u};
#pragma unroll
    for (int k = 0; k < 16; ++k) {
      if (r < rows_valid && c + k < cols_valid) {
        w[k / 4] |= static_cast<uint32_t>(static_cast<uint8_t>(src[r * stride + c + k])) << (8 * (k % 4));
      }
    }
    return make_uint4(w[0], w[1], w[2], w[3]);
  }
}

// An int8 tile [rows][cols_pad] copied into dst [rows][ld] (int8 or f16 elements) in 16-element pieces, zero
// outside rows_valid x cols_valid.
template <int VEC, typename T>
__device__ __forceinline__ void load_rows(T* dst, int ld, const int8_t* __restrict__ src, int64_t stride,
                                          int rows_valid, int rows, int cols_valid, int cols_pad) {
  // A thread keeps one column piece and steps over rows (one division a thread, not one a piece).
  const int pieces = cols_pad / 16, row_step = blockDim.x / pieces;
  const int c = (threadIdx.x % pieces) * 16;
  for (int r = threadIdx.x / pieces; r < rows && threadIdx.x < row_step * pieces; r += row_step) {
    store_piece16(dst + r * ld + c, load_piece16<VEC>(src, stride, r, c, rows_valid, cols_valid));
  }
}

// The block's (batch row, chunk, head, slice): heads run fastest, so the blocks of one chunk that
// share B and C are neighbours.
struct ChunkBlock {
  int64_t b;
  int c, hd, ps;
};
__device__ __forceinline__ ChunkBlock chunk_block(const PrefillArgs& a) {
  ChunkBlock k;
  int64_t idx = blockIdx.x;
  k.ps = static_cast<int>(idx % a.pslices);
  idx /= a.pslices;
  k.hd = static_cast<int>(idx % a.nheads);
  idx /= a.nheads;
  k.c = static_cast<int>(idx % a.nchunks);
  k.b = idx / a.nchunks;
  return k;
}

// Phase 1: L_c = Xw^T Bq for one (batch row, chunk, head, slice of P dims), 32 x 32 warp tiles over
// P x npad on f16 tensor cores, and the chunk's decay. Both operands lie in shared memory in the inputs' own
// row order (token s, then dim or state index): ldmatrix.trans gives the fragments of the product over s. Xw is
// Xq w (one fp32 rounding, as the fused kernel rounded Bq w) times xscale, a power of two that puts |Xw| below
// 2^15 (|Xq w| <= 128 max_s w[s]), in two f16 parts v = big + small (22 bits); L_c is the sum divided by xscale.
template <int VEC>
__global__ void __launch_bounds__(kStateThreads) quant_ssd_chunk_state_kernel(const PrefillArgs a) {
  extern __shared__ float4 smem_f4[];
  int8_t* smem = reinterpret_cast<int8_t*>(smem_f4);
  const int Q = a.Q, P = a.P, npad = a.npad, n = a.d_state, p = a.headdim;
  const StateLayout lay = state_layout(Q, P, npad);
  uint16_t* tXw = reinterpret_cast<uint16_t*>(smem);              // [2][Q][ldx]: big, then small
  uint16_t* tB = reinterpret_cast<uint16_t*>(smem + lay.off_b);   // Bq as f16 [Q][ldb]
  float* dtv = reinterpret_cast<float*>(smem + lay.off_vec);
  float* acum = dtv + Q;
  float* w = acum + Q;
  float* wmax_warp = w + Q;

  const ChunkBlock blk = chunk_block(a);
  const int hd = blk.hd, i0 = blk.ps * P;
  const int64_t c0 = static_cast<int64_t>(blk.c) * Q;
  const int T = a.seqlen - c0 < Q ? static_cast<int>(a.seqlen - c0) : Q;
  const int sg = hd / a.hpg;
  const int d_ssm = a.nheads * p;
  const float A = -expf(__ldg(a.A_log + hd));
  const float sB = __ldg(a.B_out_scales + sg);
  const int64_t row0 = blk.b * a.seqlen + c0;  // token row of the chunk's first token
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  chunk_dt_cumsum(a, a.dt + row0 * a.nheads + hd, T, A, __ldg(a.dt_bias + hd), dtv, acum);
  const float a_last = acum[Q - 1];
  {
    float m = 0.0f;  // w >= 0
    for (int t = threadIdx.x; t < Q; t += kStateThreads) {
      w[t] = expf(a_last - acum[t]) * dtv[t] * sB;
      m = fmaxf(m, w[t]);
    }
#pragma unroll
    for (int off = 16; off > 0; off /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
    if (lane == 0) wmax_warp[warp] = m;
  }
  if (blk.ps == 0 && threadIdx.x == 0) a.decays[(blk.b * a.nchunks + blk.c) * a.nheads + hd] = expf(a_last);
  load_rows<VEC>(tB, lay.ldb, a.B + row0 * a.gn + sg * n, a.gn, T, Q, n, npad);
  __syncthreads();
  float wmax = 0.0f;
#pragma unroll
  for (int k = 0; k < kStateWarps; ++k) wmax = fmaxf(wmax, wmax_warp[k]);
  const float xscale = m_scale(__fmul_rn(128.0f, wmax));

  // Xw[s][i] = Xq[s][i] * w[s] * xscale as f16 big and small, 16 dims of a row a piece.
  {
    const int8_t* X = a.x + row0 * d_ssm + hd * p + i0;
    const int pieces = P / 16, row_step = kStateThreads / pieces;  // P / 16 divides kStateThreads
    const int c = (threadIdx.x % pieces) * 16;
    for (int r = threadIdx.x / pieces; r < Q; r += row_step) {
      const uint4 v = load_piece16<VEC>(X, d_ssm, r, c, T, P);
      const float ws = w[r] * xscale;  // a power of two: Xq * ws is fp32(Xq * w) * xscale exactly
      const uint32_t words[4] = {v.x, v.y, v.z, v.w};
      uint32_t big[8], small[8];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        float f[4];
        biased_word_to_floats(words[k] ^ 0x80808080u, f);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const SplitF16x2 sp = split_f16x2(__fmul_rn(f[2 * h], ws), __fmul_rn(f[2 * h + 1], ws));
          big[2 * k + h] = sp.big;
          small[2 * k + h] = sp.small;
        }
      }
      uint4* dst_big = reinterpret_cast<uint4*>(tXw + r * lay.ldx + c);
      uint4* dst_small = reinterpret_cast<uint4*>(tXw + (Q + r) * lay.ldx + c);
      dst_big[0] = make_uint4(big[0], big[1], big[2], big[3]);
      dst_big[1] = make_uint4(big[4], big[5], big[6], big[7]);
      dst_small[0] = make_uint4(small[0], small[1], small[2], small[3]);
      dst_small[1] = make_uint4(small[4], small[5], small[6], small[7]);
    }
  }
  __syncthreads();

  const int g = lane / 4, q = lane % 4;
  // ldmatrix.trans row addresses (lane l names row l % 8 of tile l / 8). mma_f16's a from Xw [s][i] (a = Xw^T):
  // tiles (s 0-7, i 0-7), (s 0-7, i 8-15), (s 8-15, i 0-7), (s 8-15, i 8-15); its b of two column tiles from
  // Bq [s][j]: (s 0-7, j 0-7), (s 8-15, j 0-7), (s 0-7, j 8-15), (s 8-15, j 8-15).
  const int a_row = (lane & 7) + ((lane & 16) >> 1), a_col = (lane & 8);  // halves
  const int b_row = (lane & 7) + (lane & 8), b_col = (lane & 16) >> 1;
  const int k_end = (T + 15) / 16 * 16;  // Xw and Bq are zero past T
  const int nj_tiles = npad / 32;
  const float unscale = 1.0f / xscale;  // a power of two: exact
  float* out = a.states + ((blk.b * a.nchunks + blk.c) * a.nheads + hd) * static_cast<int64_t>(p) * a.n4;
  for (int tile = warp; tile < (P / 32) * nj_tiles; tile += kStateWarps) {
    const int m0 = (tile / nj_tiles) * 32, n0 = (tile % nj_tiles) * 32;
    float acc[2][4][4] = {};
    const uint16_t* a_big = tXw + a_row * lay.ldx + m0 + a_col;
    const uint16_t* a_small = a_big + Q * lay.ldx;
    const uint16_t* b_rows = tB + b_row * lay.ldb + n0 + b_col;
    for (int k0 = 0; k0 < k_end; k0 += 16) {
      uint32_t ab[2][4], as[2][4], bf[2][4];  // [16-row half of m], [pair of 8-wide column tiles of n]
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        ldmatrix_x4_trans(ab[mt], a_big + k0 * lay.ldx + 16 * mt);
        ldmatrix_x4_trans(as[mt], a_small + k0 * lay.ldx + 16 * mt);
      }
#pragma unroll
      for (int np = 0; np < 2; ++np) ldmatrix_x4_trans(bf[np], b_rows + k0 * lay.ldb + 16 * np);
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
          const uint32_t b0 = bf[nt / 2][2 * (nt % 2)], b1 = bf[nt / 2][2 * (nt % 2) + 1];
          mma_f16(acc[mt][nt], as[mt], b0, b1);
          mma_f16(acc[mt][nt], ab[mt], b0, b1);
        }
      }
    }
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        const int j = n0 + 8 * nt + 2 * q;
        if (j >= a.n4) continue;  // n4 is a multiple of 4: j and j + 1 are both in or both out
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int i = i0 + m0 + 16 * mt + g + 8 * r;
          *reinterpret_cast<float2*>(out + static_cast<int64_t>(i) * a.n4 + j) =
              make_float2(acc[mt][nt][2 * r] * unscale, acc[mt][nt][2 * r + 1] * unscale);
        }
      }
    }
  }
}

// S'_c's row as phase 3 takes it, to be written over the row's L_c (4 n4 bytes) in its first 3 n4 + 4: the three
// limb planes (bytes [l n4, (l + 1) n4): limb l of each entry, t = rint(v / u), u = max_j |S'[i, j]| / kLimbScale),
// then the unit u. Lane l holds the limb words of its quads 4(l + 32u) .. + 3 (store_limbs writes them, 128 bytes
// a warp and plane, and lane 0 the unit); phase 3 copies a plane with 16-byte accesses and reads a quarter fewer
// bytes than the row's floats.
template <int QPL>
struct StateLimbs {
  uint32_t w[QPL][3];
  float unit;
};

template <int QPL>
__device__ __forceinline__ StateLimbs<QPL> state_limbs(const float4 (&v)[QPL]) {
  float m = 0.0f;
#pragma unroll
  for (int u = 0; u < QPL; ++u) {
    m = fmaxf(m, fmaxf(fmaxf(fabsf(v[u].x), fabsf(v[u].y)), fmaxf(fabsf(v[u].z), fabsf(v[u].w))));
  }
#pragma unroll
  for (int off = 16; off > 0; off /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
  const float inv = m > 0.0f ? __fdiv_rn(static_cast<float>(kLimbScale), m) : 0.0f;
  StateLimbs<QPL> r;
  r.unit = m > 0.0f ? __fdiv_rn(m, static_cast<float>(kLimbScale)) : 0.0f;
#pragma unroll
  for (int u = 0; u < QPL; ++u) {
    const float f[4] = {v[u].x, v[u].y, v[u].z, v[u].w};
    uint32_t bl[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) bl[e] = biased_limbs(__fmul_rn(f[e], inv));
    pack_limbs(bl, r.w[u]);
  }
  return r;
}

// The row's limb planes and unit (state_limbs) over its L_c. A lane writes bytes other lanes read as L_c: the
// caller has used its L_c (the loaded values are in registers) and passed a __syncwarp first.
template <int QPL>
__device__ __forceinline__ void store_limbs(uint32_t* row, const StateLimbs<QPL>& s, int n4, int lane) {
  const int q4 = n4 / 4;  // words a plane
#pragma unroll
  for (int u = 0; u < QPL; ++u) {
    const int q = lane + 32 * u;
    if (q >= q4) continue;
    uint32_t* const at = row + q;
    at[0] = s.w[u][0];
    at[q4] = s.w[u][1];
    at[2 * q4] = s.w[u][2];
  }
  if (lane == 0) row[3 * q4] = __float_as_uint(s.unit);
}

// Phase 2: a warp per row i of the [headdim][n4] state of one (batch row, head), lane l holding the entries
// 4(l + 32u) .. + 3 (u < QPL: 1 for n4 <= 128, else 2), the walk over the chunks: the workspace's L_c (fp32) is
// replaced by S'_c, the state entering chunk c, as three int8 limbs and the row's unit (state_limbs), which
// phase 3 reads as they are.
// Six blocks an SM with one quad a lane (40 registers; the few values it then spills are saved before the walk
// over the chunks and restored after it), as before the limbs were held across the update.
template <int QPL>
__global__ void __launch_bounds__(kPassWarps * 32, QPL == 1 ? 6 : 1) quant_ssd_state_pass_kernel(const PrefillArgs a) {
  const int p = a.headdim, n = a.d_state, n4 = a.n4;
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kPassWarps + threadIdx.x / 32;  // (batch row, head, i)
  const int i = static_cast<int>(row % p);
  const int64_t bh = row / p;
  const int hd = static_cast<int>(bh % a.nheads);
  const int64_t b = bh / a.nheads;
  const int sg = hd / a.hpg;
  const int hg = head_group(a.head_ranges, a.nhg, sg, hd % a.hpg);
  const int group = (sg * a.nhg + hg) * a.ndg + dim_group(a.dim_ranges, a.nhg, a.ndg, sg, hg, i);
  const float sx = __ldg(a.x_out_scales + group);
  const int64_t srow = row * n;  // the row's entries in ssm_state / ssm_state_out
  float4 S[QPL];
  float ss[QPL][4];
#pragma unroll
  for (int u = 0; u < QPL; ++u) {
    float v[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int j = 4 * (lane + 32 * u) + k;
      ss[u][k] = j < n ? __ldg(a.state_scale + static_cast<int64_t>(group) * n + j) : 1.0f;
      v[k] = 0.0f;
      if (a.state != nullptr && j < n) v[k] = __fdiv_rn(__fmul_rn(static_cast<float>(a.state[srow + j]), ss[u][k]), sx);
    }
    S[u] = make_float4(v[0], v[1], v[2], v[3]);
  }

  const int64_t chunk_stride = static_cast<int64_t>(a.nheads) * p * n4 / 4;  // float4 from chunk c to c + 1
  const int64_t row_c0 = ((b * a.nchunks * a.nheads + hd) * p + i) * static_cast<int64_t>(n4);  // row i of chunk 0
  float4* st = reinterpret_cast<float4*>(a.states + row_c0);
  const float* dec = a.decays + b * a.nchunks * a.nheads + hd;
  auto load_row = [&](int c, float4 (&L)[QPL]) {
#pragma unroll
    for (int u = 0; u < QPL; ++u) {
      const int q = lane + 32 * u;
      L[u] = 4 * q < n4 ? st[c * chunk_stride + q] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
  };
  float4 next[QPL];
  load_row(0, next);
  for (int c = 0; c < a.nchunks; ++c) {
    float4 L[QPL];
#pragma unroll
    for (int u = 0; u < QPL; ++u) L[u] = next[u];
    if (c + 1 < a.nchunks) load_row(c + 1, next);  // in flight during this chunk's update
    const StateLimbs<QPL> limbs = state_limbs(S);
    const float d = dec[static_cast<int64_t>(c) * a.nheads];
#pragma unroll
    for (int u = 0; u < QPL; ++u) {
      S[u] = make_float4(__fadd_rn(__fmul_rn(d, S[u].x), L[u].x), __fadd_rn(__fmul_rn(d, S[u].y), L[u].y),
                         __fadd_rn(__fmul_rn(d, S[u].z), L[u].z), __fadd_rn(__fmul_rn(d, S[u].w), L[u].w));
    }
    // Every lane has used its L_c above: from here the warp may write S'_c's limbs over the row.
    __syncwarp();
    store_limbs(reinterpret_cast<uint32_t*>(st + c * chunk_stride), limbs, n4, lane);
  }
#pragma unroll
  for (int u = 0; u < QPL; ++u) {
    const float v[4] = {S[u].x, S[u].y, S[u].z, S[u].w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int j = 4 * (lane + 32 * u) + k;
      if (j < n) a.state_out[srow + j] = quantize_rn(__fmul_rn(v[k], sx), ss[u][k]);
    }
  }
}

// Stores y[idx], y[idx + 1] (idx even) in the requested dtype, as one access where y is aligned.
__device__ __forceinline__ void store_y2(void* y, int64_t idx, float v0, float v1, bool fp16, bool vec) {
  if (vec) {
    if (fp16) {
      *reinterpret_cast<__half2*>(static_cast<__half*>(y) + idx) = __floats2half2_rn(v0, v1);
    } else {
      *reinterpret_cast<float2*>(static_cast<float*>(y) + idx) = make_float2(v0, v1);
    }
  } else {
    store_y(y, idx, v0, fp16);
    store_y(y, idx + 1, v1, fp16);
  }
}

// Phase 3: y of one (batch row, chunk, head, slice of P dims), Q / 16 warps in Q / 32 pairs. Pair p
// (warps p and p + Q / 32) owns the 16-row strips p and Q/16 - 1 - p (equal work under the causal mask)
// and all P columns; its two warps split each strip's sums: the state's part diag(rC) Cq S'^T over
// the even and the odd 32-wide blocks of d_state, then M Xq over the even and the odd 16-wide slabs of M,
// each slab made by int8 mma, scaled in registers and packed into the next f16 mma's A fragment. The
// second warp's sums reach the first through shared memory; the first adds them and writes y. (Two warps
// a strip instead of one: twice the warps an SM for the same shared memory, and neither repeats the
// other's work.)
template <int VEC, int P>
__global__ void __launch_bounds__(2 * kMaxChunk) quant_ssd_chunk_scan_kernel(const PrefillArgs a) {
  constexpr int NT = P / 8;  // 8-wide column tiles of a strip
  extern __shared__ float4 smem_f4[];
  int8_t* smem = reinterpret_cast<int8_t*>(smem_f4);
  const int Q = a.Q, npad = a.npad, n = a.d_state, p = a.headdim;
  const ScanLayout lay = scan_layout(Q, P, npad);
  int8_t* tC = smem;                  // Cq [Q][ldn]
  int8_t* tB = smem + lay.off_b;      // Bq [Q][ldn]
  uint16_t* tX = reinterpret_cast<uint16_t*>(smem + lay.off_xt);  // Xq as f16 [Q][ldx]
  int8_t* tL = smem + lay.off_s;      // S'_c's limbs [3][P][ldn], limb 0 the lowest
  float* dtv = reinterpret_cast<float*>(smem + lay.off_vec);
  float* acum = dtv + Q;
  float* rC = acum + Q;
  float* colw = rC + Q;                // column factors of M's off-diagonal slabs (below)
  float* sx = colw + Q;
  float* su = sx + P;                  // the limbs' row scales u_i
  float* dt_largest = su + P;

  const ChunkBlock blk = chunk_block(a);
  const int hd = blk.hd, i0 = blk.ps * P;
  const int64_t c0 = static_cast<int64_t>(blk.c) * Q;
  const int T = a.seqlen - c0 < Q ? static_cast<int>(a.seqlen - c0) : Q;
  const int sg = hd / a.hpg;
  const int hg = head_group(a.head_ranges, a.nhg, sg, hd % a.hpg);
  const int d_ssm = a.nheads * p;
  const float A = -expf(__ldg(a.A_log + hd));
  const float Dh = __ldg(a.D + hd);
  const float sC = __ldg(a.C_out_scales + sg), sCB = sC * __ldg(a.B_out_scales + sg);
  const int64_t row0 = blk.b * a.seqlen + c0;

  for (int i = threadIdx.x; i < P; i += blockDim.x) {
    sx[i] = __ldg(a.x_out_scales + (sg * a.nhg + hg) * a.ndg + dim_group(a.dim_ranges, a.nhg, a.ndg, sg, hg, i0 + i));
  }
  chunk_dt_cumsum(a, a.dt + row0 * a.nheads + hd, T, A, __ldg(a.dt_bias + hd), dtv, acum, dt_largest);
  // M's entries go to f16 times mscale, a power of two (exact both ways): |Cq Bq^T| <= 128 * 128 * npad and the
  // decay is at most 1, so |M| <= 16384 npad sC sB max dt. The state's part is scaled alike and the sum unscaled.
  const float mscale = m_scale(__fmul_rn(__fmul_rn(16384.0f * static_cast<float>(npad), sCB), *dt_largest));
  const float sCBm = sCB * mscale;
  for (int t = threadIdx.x; t < Q; t += blockDim.x) {
    rC[t] = expf(acum[t]) * sC;
    colw[t] = __expf(acum[t | 15] - acum[t]) * dtv[t] * sCBm;
  }
  load_rows<VEC>(tC, lay.ldn, a.C + row0 * a.gn + sg * n, a.gn, T, Q, n, npad);
  load_rows<VEC>(tB, lay.ldn, a.B + row0 * a.gn + sg * n, a.gn, T, Q, n, npad);
  load_rows<VEC>(tX, lay.ldx, a.x + row0 * d_ssm + hd * p + i0, d_ssm, T, Q, P, P);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  {
    // S'_c's limbs as phase 2 left them (store_limbs): row i's three planes of n4 bytes each to the limb
    // rows as they are, 16 bytes at a time where n4 is a multiple of 16 (else 4), and its unit after them.
    // Columns [n4, npad) are zero.
    const uint32_t* Sc = reinterpret_cast<const uint32_t*>(
        a.states + ((blk.b * a.nchunks + blk.c) * a.nheads + hd) * static_cast<int64_t>(p) * a.n4 +
        static_cast<int64_t>(i0) * a.n4);
    const int q4 = a.n4 / 4;  // words a plane; a row is n4 words apart
    if (q4 % 4 == 0) {
      const int pieces = npad / 16, q16 = q4 / 4;
      for (int e = threadIdx.x; e < 3 * P * pieces; e += blockDim.x) {
        const int li = e / pieces, k = e % pieces, l = li / P, i = li % P;
        const uint4 w = k < q16 ? *reinterpret_cast<const uint4*>(Sc + static_cast<int64_t>(i) * a.n4 + l * q4 + 4 * k)
                                : make_uint4(0u, 0u, 0u, 0u);
        *reinterpret_cast<uint4*>(tL + li * lay.ldn + 16 * k) = w;
      }
    } else {
      const int quads = npad / 4;
      for (int e = threadIdx.x; e < 3 * P * quads; e += blockDim.x) {
        const int li = e / quads, qd = e % quads, l = li / P, i = li % P;
        *reinterpret_cast<uint32_t*>(tL + li * lay.ldn + 4 * qd) =
            qd < q4 ? Sc[static_cast<int64_t>(i) * a.n4 + l * q4 + qd] : 0u;
      }
    }
    for (int i = threadIdx.x; i < P; i += blockDim.x) su[i] = __uint_as_float(Sc[static_cast<int64_t>(i) * a.n4 + 3 * q4]);
  }
  __syncthreads();

  const int g = lane / 4, q = lane % 4;
  // ldmatrix row addresses: lane l names row l % 8 of tile l / 8. As mma_s8's A (16 rows x 32 bytes) the tiles are
  // (rows 0-7, bytes 0-15), (8-15, 0-15), (0-7, 16-31), (8-15, 16-31), and the same rows and halves 0-7, 8-15 of Xq
  // (f16) are, transposed, mma_f16's b of two column tiles; as two column tiles' b of mma_s8 (16 rows of the
  // operand's transpose, 32 bytes) (0-7, 0-15), (0-7, 16-31), (8-15, 0-15), (8-15, 16-31).
  const int a_row = (lane & 7) + (lane & 8), a_col = (lane & 16);           // bytes
  const int b_row = (lane & 7) + ((lane & 16) >> 1), b_col = (lane & 8) * 2;  // bytes
  const int strips = Q / 16, pairs = Q / 32;
  const int pair = warp % pairs, side = warp / pairs;  // side 0 writes y
  float* red = reinterpret_cast<float*>(smem + lay.off_red) + pair * (32 * NT * 4);  // [NT * 4][32 lanes]
  const bool fp16 = a.out_fp16 != 0, vec_y = a.vec_y != 0;
#pragma unroll 1
  for (int half = 0; half < 2; ++half) {
    const int m0 = 16 * (half == 0 ? pair : strips - 1 - pair);
    if (m0 >= T) continue;  // pair-uniform: rows past the sequence
    float acc[NT][4] = {};
    const int8_t* c_rows = tC + (m0 + a_row) * lay.ldn + a_col;  // the strip's Cq as mma_s8's A, k0 = 0

    // The state's part over this warp's 32-wide blocks of d_state (the even ones, or the odd): Cq S'^T by limbs,
    // exact in int32: the top limb's sums alone, the low two's as one integer (the middle limb's sums times 256,
    // then the low limb's added by the mma itself; |lo| <= 2^30 + 2^22); acc = 65536 hi + lo in fp32 (lo rounded
    // once, the sum once). Then each column times its row scale u_i and each row times rC (and mscale, exact).
    const int t_lo = m0 + g, t_hi = m0 + g + 8;
    {
      int hi[NT][4] = {}, lo[NT][4] = {};
      const int8_t* limb_rows = tL + b_row * lay.ldn + b_col;  // limb l at + l * P * ldn
      add_limb_sums(hi, c_rows, limb_rows + 2 * P * lay.ldn, lay.ldn, 32 * side, npad);
      add_limb_sums(lo, c_rows, limb_rows + P * lay.ldn, lay.ldn, 32 * side, npad);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) lo[nt][e] *= 256;
      }
      add_limb_sums(lo, c_rows, limb_rows, lay.ldn, 32 * side, npad);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          // 65536 hi is exact, so the FMA rounds once, as the product and the sum would
          acc[nt][e] = __fmaf_rn(__int2float_rn(hi[nt][e]), 65536.0f, __int2float_rn(lo[nt][e]));
        }
      }
    }
    {
      const float r_lo = rC[t_lo], r_hi = rC[t_hi];
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const float u0 = su[8 * nt + 2 * q], u1 = su[8 * nt + 2 * q + 1];
        acc[nt][0] = acc[nt][0] * u0 * r_lo * mscale;
        acc[nt][1] = acc[nt][1] * u1 * r_lo * mscale;
        acc[nt][2] = acc[nt][2] * u0 * r_hi * mscale;
        acc[nt][3] = acc[nt][3] * u1 * r_hi * mscale;
      }
    }

    // The chunk's own part: M Xq over this warp's 16-wide slabs s0 < min(m0 + 16, T) (M is zero right of
    // the diagonal and Xq past T). Left of the strip (s0 + 16 <= m0, no mask) the decay is taken as three
    // factors, each at most 1 (a_cum does not increase): the row's exp(a_t - a_{m0-1}), once a strip; the
    // slab's exp(a_{m0-1} - a_{s0+15}), one for the warp; the column's colw[s] = exp(a_{s0+15} - a_s) dt[s] sC sB,
    // once a block. An entry is then its int product times two factors instead of an exp of its own.
    const float at_lo = acum[t_lo], at_hi = acum[t_hi];
    const float a_ref = m0 > 0 ? acum[m0 - 1] : 0.0f;
    const float row_lo = __expf(at_lo - a_ref), row_hi = __expf(at_hi - a_ref);
    const int s_end = min(m0 + 16, (T + 15) / 16 * 16);
    for (int s0 = 16 * side; s0 < s_end; s0 += 32) {
      int cb[2][4] = {};  // columns s0 .. s0 + 7, s0 + 8 .. s0 + 15
      const int8_t* b_rows = tB + (s0 + b_row) * lay.ldn + b_col;
      for (int k0 = 0; k0 < npad; k0 += 32) {
        uint32_t ca[4], bb[4];
        ldmatrix_x4(ca, c_rows + k0);
        ldmatrix_x4(bb, b_rows + k0);
        mma_s8(cb[0], ca[0], ca[1], ca[2], ca[3], bb[0], bb[1]);
        mma_s8(cb[1], ca[0], ca[1], ca[2], ca[3], bb[2], bb[3]);
      }
      // cb[h]: (t_lo, s), (t_lo, s + 1), (t_hi, s), (t_hi, s + 1) for s = s0 + 8h + 2q
      float m[2][4];
      if (s0 + 16 <= m0) {  // warp-uniform
        const float slab = __expf(a_ref - acum[s0 + 15]);
        const float r_lo = row_lo * slab, r_hi = row_hi * slab;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const float2 w = *reinterpret_cast<const float2*>(colw + s0 + 8 * h + 2 * q);
          m[h][0] = __int2float_rn(cb[h][0]) * r_lo * w.x;
          m[h][1] = __int2float_rn(cb[h][1]) * r_lo * w.y;
          m[h][2] = __int2float_rn(cb[h][2]) * r_hi * w.x;
          m[h][3] = __int2float_rn(cb[h][3]) * r_hi * w.y;
        }
      } else {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int sa = s0 + 8 * h + 2 * q, sb = sa + 1;
          const float as_a = acum[sa], as_b = acum[sb], dt_a = dtv[sa], dt_b = dtv[sb];
          m[h][0] = sa <= t_lo ? __int2float_rn(cb[h][0]) * sCBm * __expf(at_lo - as_a) * dt_a : 0.0f;
          m[h][1] = sb <= t_lo ? __int2float_rn(cb[h][1]) * sCBm * __expf(at_lo - as_b) * dt_b : 0.0f;
          m[h][2] = sa <= t_hi ? __int2float_rn(cb[h][2]) * sCBm * __expf(at_hi - as_a) * dt_a : 0.0f;
          m[h][3] = sb <= t_hi ? __int2float_rn(cb[h][3]) * sCBm * __expf(at_hi - as_b) * dt_b : 0.0f;
        }
      }
      // The A fragment of the 16 x 16 slab: a0 = (g, 2q..), a1 = (g + 8, 2q..), a2 = (g, 8 + 2q..),
      // a3 = (g + 8, 8 + 2q..).
      const SplitF16x2 e0 = split_f16x2(m[0][0], m[0][1]), e1 = split_f16x2(m[0][2], m[0][3]);
      const SplitF16x2 e2 = split_f16x2(m[1][0], m[1][1]), e3 = split_f16x2(m[1][2], m[1][3]);
      const uint32_t a_big[4] = {e0.big, e1.big, e2.big, e3.big};
      const uint32_t a_small[4] = {e0.small, e1.small, e2.small, e3.small};
      // Xq[s0 .. s0 + 15][i] for the columns i of tiles nt, nt + 1, transposed on the way: tiles (rows s0 + 0-7,
      // columns 8nt + 0-7), (s0 + 8-15, 8nt + 0-7), (s0 + 0-7, 8nt + 8-15), (s0 + 8-15, 8nt + 8-15).
      const uint16_t* x_rows = tX + (s0 + a_row) * lay.ldx + a_col / 2;
#pragma unroll
      for (int nt = 0; nt < NT; nt += 2) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, x_rows + 8 * nt);
        mma_f16(acc[nt], a_small, b[0], b[1]);
        mma_f16(acc[nt + 1], a_small, b[2], b[3]);
        mma_f16(acc[nt], a_big, b[0], b[1]);
        mma_f16(acc[nt + 1], a_big, b[2], b[3]);
      }
    }

    // The second warp's sums to the first (barrier 1 + pair: the pair's two warps only).
    if (side == 1) {
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) red[(nt * 4 + e) * 32 + lane] = acc[nt][e];
      }
    }
    warp_pair_barrier(1 + pair);
    if (side == 0) {
      // y = s_x * acc / mscale + D xh for the strip's rows inside the sequence.
      const float unscale = 1.0f / mscale;  // a power of two: exact
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int t = r == 0 ? t_lo : t_hi;
          if (t >= T) continue;
          const int i = 8 * nt + 2 * q;
          float yv[2];
#pragma unroll
          for (int cc = 0; cc < 2; ++cc) {
            const float sum = (acc[nt][2 * r + cc] + red[(nt * 4 + 2 * r + cc) * 32 + lane]) * unscale;
            const float xh = sx[i + cc] * f16_bits_to_float(tX[t * lay.ldx + i + cc]);
            yv[cc] = sx[i + cc] * sum + Dh * xh;
          }
          store_y2(a.y, (row0 + t) * d_ssm + hd * p + i0 + i, yv[0], yv[1], fp16, vec_y);
        }
      }
    }
    if (half == 0) warp_pair_barrier(1 + pair);  // the first warp has read `red` before it is reused
  }
}

// Chunk length: the requested one rounded down to a multiple of 32 in [32, kMaxChunk] (0: the
// default), halved while phase 1 or 3 (with 32-dim slices) would not fit in `smem_optin` bytes.
// It changes the speed and the workspace, not the math.
int pick_chunk(int requested, int npad, int smem_optin) {
  int Q = requested == 0 ? kDefaultChunk : requested;
  Q = Q < 32 ? 32 : (Q > kMaxChunk ? kMaxChunk : Q / 32 * 32);
  while (Q > 32 && (scan_layout(Q, 32, npad).bytes > smem_optin || state_layout(Q, 32, npad).bytes > smem_optin)) {
    Q /= 2;
  }
  return Q;
}

// The workspace: the chunks' decays, then (aligned) their states.
size_t decays_bytes(int64_t batch, int64_t nchunks, int nheads) {
  const size_t raw = static_cast<size_t>(batch) * nchunks * nheads * sizeof(float);
  return (raw + kStatesAlign - 1) / kStatesAlign * kStatesAlign;
}
size_t workspace_bytes(int64_t batch, int64_t nchunks, int nheads, int headdim, int n4) {
  return decays_bytes(batch, nchunks, nheads) +
         static_cast<size_t>(batch) * nchunks * nheads * headdim * n4 * sizeof(float);
}

// The opt-in shared memory of the current device; without one, the smallest of the supported GPUs
// (a smaller budget picks shorter chunks, so the size asked is then never too small).
int smem_optin_or_smallest() {
  int dev = 0, v = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
    cudaGetLastError();  // clears the error: nothing was launched
    return kSmallestOptin;
  }
  return v;
}

template <typename Kernel>
cudaError_t launch_with_smem(Kernel kernel, int64_t blocks, int threads, size_t smem, cudaStream_t stream,
                             const PrefillArgs& a) {
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (e != cudaSuccess) return e;
  kernel<<<static_cast<unsigned>(blocks), threads, smem, stream>>>(a);
  return cudaSuccess;
}

}  // namespace
}  // namespace qmamba

extern "C" size_t qmamba_quant_ssd_prefill_workspace(const qmamba_ssd_params* params, int64_t batch,
                                                     int64_t seqlen) {
  using namespace qmamba;
  if (params == nullptr || batch < 1 || seqlen < 1 || params->nheads < 1 || params->headdim < 1 ||
      params->d_state < 1 || params->chunk_size < 0) {
    return 0;  // the launcher refuses these with a message
  }
  const int npad = (params->d_state + 31) / 32 * 32, n4 = (params->d_state + 3) / 4 * 4;
  const int Q = pick_chunk(params->chunk_size, npad, smem_optin_or_smallest());
  return workspace_bytes(batch, (seqlen + Q - 1) / Q, params->nheads, params->headdim, n4);
}

extern "C" int qmamba_quant_ssd_prefill(const qmamba_ssd_params* params, const qmamba_ssd_tensors* t,
                                        int64_t batch, int64_t seqlen, void* workspace, size_t workspace_size,
                                        qmamba_stream_t stream) {
  using namespace qmamba;
  const char* where = "qmamba_quant_ssd_prefill";
  QMAMBA_TRY(check_ssd(where, params, t, batch, seqlen));
  if (workspace == nullptr) {
    return fail(QMAMBA_ERR_WORKSPACE,
                "%s: needs a workspace of %zu bytes (qmamba_quant_ssd_prefill_workspace), got none", where,
                qmamba_quant_ssd_prefill_workspace(params, batch, seqlen));
  }
  if (!aligned16(workspace)) {
    return fail(QMAMBA_ERR_WORKSPACE, "%s: the workspace must be 16-byte aligned", where);
  }
  DeviceLimits dev;
  QMAMBA_TRY(device_limits(where, &dev));
  PrefillArgs a;
  a.x = t->x; a.dt = t->dt; a.B = t->B; a.C = t->C;
  a.A_log = t->A_log; a.D = t->D; a.dt_bias = t->dt_bias;
  a.x_out_scales = t->x_out_scales; a.B_out_scales = t->B_out_scales; a.C_out_scales = t->C_out_scales;
  a.head_ranges = t->x_head_group_range; a.dim_ranges = t->x_dim_group_range;
  a.state_scale = t->ssm_state_scale; a.state = t->ssm_state;
  a.y = t->y; a.state_out = t->ssm_state_out;
  a.seqlen = seqlen;
  a.dt_scale = params->dt_scale; a.dt_min = params->dt_min; a.dt_max = params->dt_max;
  a.nheads = params->nheads; a.headdim = params->headdim; a.d_state = params->d_state;
  a.gn = params->ngroups * params->d_state; a.hpg = params->nheads / params->ngroups;
  a.nhg = params->n_head_groups; a.ndg = params->n_dim_groups;
  a.out_fp16 = params->out_fp16;
  a.vec_y = a.out_fp16 ? ((reinterpret_cast<uintptr_t>(a.y) & 3u) == 0) : aligned8(a.y);
  a.npad = (a.d_state + 31) / 32 * 32;
  a.n4 = (a.d_state + 3) / 4 * 4;
  a.Q = pick_chunk(params->chunk_size, a.npad, dev.max_smem_optin);
  const int64_t nchunks = (seqlen + a.Q - 1) / a.Q;
  a.nchunks = static_cast<int>(nchunks);
  if (state_layout(a.Q, 32, a.npad).bytes > dev.max_smem_optin ||
      scan_layout(a.Q, 32, a.npad).bytes > dev.max_smem_optin) {
    return fail(QMAMBA_ERR_BAD_SIZE, "%s: d_state = %d needs %d bytes of shared memory, the device has %d", where,
                a.d_state, scan_layout(a.Q, 32, a.npad).bytes, dev.max_smem_optin);
  }
  const size_t need = workspace_bytes(batch, nchunks, a.nheads, a.headdim, a.n4);
  if (workspace_size < need) {
    return fail(QMAMBA_ERR_WORKSPACE, "%s: needs a workspace of %zu bytes (chunks of %d), got %zu", where, need,
                a.Q, workspace_size);
  }
  a.decays = static_cast<float*>(workspace);
  a.states = reinterpret_cast<float*>(static_cast<char*>(workspace) + decays_bytes(batch, nchunks, a.nheads));
  // 64 dims a block halve the recomputation of Cq Bq^T; 32 where that would leave SMs idle or
  // fit fewer than two blocks of phase 3 on an SM (an SM holds about the opt-in plus 1 KiB).
  const size_t smem64 = static_cast<size_t>(scan_layout(a.Q, 64, a.npad).bytes);
  const bool wide = a.headdim % 64 == 0 && batch * nchunks * a.nheads * (a.headdim / 64) >= 2 * dev.sm_count &&
                    2 * (smem64 + 1024) <= static_cast<size_t>(dev.max_smem_optin) + 1024 &&
                    state_layout(a.Q, 64, a.npad).bytes <= dev.max_smem_optin;
  a.P = wide ? 64 : 32;
  a.pslices = a.headdim / a.P;
  const int64_t chunk_blocks = batch * nchunks * a.nheads * a.pslices;
  const int64_t pass_blocks = batch * a.nheads * (a.headdim / kPassWarps);  // headdim: a multiple of 32
  if (chunk_blocks > 0x7fffffff || pass_blocks > 0x7fffffff) {
    return fail(QMAMBA_ERR_BAD_SIZE, "%s: batch * seqlen * nheads too large for one launch", where);
  }
  const bool vec16 = a.d_state % 16 == 0 && aligned16(a.x) && aligned16(a.B) && aligned16(a.C);
  const size_t smem1 = static_cast<size_t>(state_layout(a.Q, a.P, a.npad).bytes);
  const size_t smem3 = static_cast<size_t>(scan_layout(a.Q, a.P, a.npad).bytes);
  cudaStream_t s = stream;
  cudaError_t e = vec16 ? launch_with_smem(quant_ssd_chunk_state_kernel<16>, chunk_blocks, kStateThreads, smem1, s, a)
                        : launch_with_smem(quant_ssd_chunk_state_kernel<1>, chunk_blocks, kStateThreads, smem1, s, a);
  if (e != cudaSuccess) {
    return fail(QMAMBA_ERR_CUDA, "%s: cannot set %zu bytes of shared memory (chunk states): %s", where, smem1,
                cudaGetErrorString(e));
  }
  QMAMBA_TRY(check_launch(where));
  if (a.n4 <= 128) {
    quant_ssd_state_pass_kernel<1><<<static_cast<unsigned>(pass_blocks), kPassWarps * 32, 0, s>>>(a);
  } else {
    quant_ssd_state_pass_kernel<2><<<static_cast<unsigned>(pass_blocks), kPassWarps * 32, 0, s>>>(a);
  }
  QMAMBA_TRY(check_launch(where));
  if (a.P == 64) {
    e = vec16 ? launch_with_smem(quant_ssd_chunk_scan_kernel<16, 64>, chunk_blocks, 2 * a.Q, smem3, s, a)
              : launch_with_smem(quant_ssd_chunk_scan_kernel<1, 64>, chunk_blocks, 2 * a.Q, smem3, s, a);
  } else {
    e = vec16 ? launch_with_smem(quant_ssd_chunk_scan_kernel<16, 32>, chunk_blocks, 2 * a.Q, smem3, s, a)
              : launch_with_smem(quant_ssd_chunk_scan_kernel<1, 32>, chunk_blocks, 2 * a.Q, smem3, s, a);
  }
  if (e != cudaSuccess) {
    return fail(QMAMBA_ERR_CUDA, "%s: cannot set %zu bytes of shared memory (chunk outputs): %s", where, smem3,
                cudaGetErrorString(e));
  }
  return check_launch(where);
}
