// QuantSSD prefill (docs/ops.md): the chunked SSD scan, fused into one kernel on tensor cores.
//
// A block owns one (batch row, head, slice of P dims) and walks its chunks of Q tokens in order,
// carrying the state in shared memory, so nothing but the inputs, y and the final state touches
// device memory (no workspace). Per chunk, with a_cum the inclusive cumulative sum of dt * A:
//   M    = mask_{s<=t}( (Cq Bq^T) * sC sB * exp(a_cum[t] - a_cum[s]) * dt[s] )      [Q x Q]
//   y    = s_x(i) * ( M Xq + diag(sC exp(a_cum)) Cq S'^T ) + D xh                  [Q x P]
//   S'  <- exp(a_cum[Q-1]) S' + Xq^T diag(w) Bq,  w[s] = exp(a_cum[Q-1] - a_cum[s]) dt[s] sB
// where Xq, Bq, Cq are the int8 inputs (held as exact floats) and S' = S / s_x(i) is the state with
// each row divided by its x scale, so the per-dim scale factors out of every product.
//
// Products run as mma.sync m16n8k8 TF32 with fp32 accumulation. int8 operands are exact in TF32 and
// Cq Bq^T sums stay below 2^24, so that product is exact. An operand that carries a float factor
// (M, the scaled Cq, S', the weighted Bq) is split into two TF32 parts, v = big + small (3xTF32:
// big * b + small * b, and for two split operands big * big + big * small + small * big), so the
// products keep about fp32's precision: TF32 alone (unit roundoff 2^-11) moved int8 states and the
// next layers' rounding far more often than an fp32 sum does (docs/kernels.md). Inside an 8-wide k slab, thread q of a quad
// takes k = 2q and 2q+1 (a permutation of the sum), so most fragments are single 8-byte loads.
#include <math.h>

#include "checks.h"
#include "common.cuh"
#include "ssdChecks.h"

namespace qmamba {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kDefaultChunk = 32;  // the fastest chunk length (docs/kernels.md): 2 blocks an SM

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
  const int8_t* state;  // may alias state_out: each block reads its slice before writing it
  void* __restrict__ y;
  int8_t* state_out;
  int64_t seqlen;
  float dt_scale, dt_min, dt_max;
  int nheads, headdim, d_state, gn, hpg, nhg, ndg;
  int out_fp16;
  int Q;        // chunk length, a multiple of 32, <= 128
  int P;        // dims per block, 32 or 64
  int npad;     // d_state rounded up to a multiple of 32 (zero columns)
  int pslices;  // headdim / P
};

// Shared-memory layout, in floats. Strides: tiles read as [row g][col 2q] (8-byte loads) use a
// stride = 8 (mod 32) and X, read as [row 2q][col g], a stride = 4 (mod 32): no bank conflicts.
struct Layout {
  int ldc, ldx, ldm;
  int off_B, off_X, off_M, off_S, off_vec, off_stage;
  int floats;
};

__host__ __device__ inline Layout make_layout(int Q, int P, int npad) {
  Layout l;
  l.ldc = npad + 8;
  l.ldx = P + 4;
  l.ldm = Q + 8;
  l.off_B = Q * l.ldc;              // C tile first, at 0
  l.off_X = l.off_B + Q * l.ldc;
  l.off_M = l.off_X + Q * l.ldx;
  l.off_S = l.off_M + Q * l.ldm;
  l.off_vec = l.off_S + P * l.ldc;  // dtv, a_cum, rC, w (Q each), s_x (P), dim group (P)
  l.off_stage = l.off_vec + 4 * Q + 2 * P;
  l.off_stage = (l.off_stage + 3) / 4 * 4;  // 16-byte aligned: the raw int8 C, B, X of the next chunk
  l.floats = l.off_stage + Q * (2 * npad + P) / 4;
  return l;
}

__device__ __forceinline__ uint32_t to_tf32(float v) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
  return r;
}
// Integer-valued floats (int8 data) are exact in TF32: no conversion needed.
__device__ __forceinline__ uint32_t exact_tf32(float v) { return __float_as_uint(v); }
// v = big + small, both TF32: what TF32 rounding leaves of v is carried by a second product.
struct SplitTf32 {
  uint32_t big, small;
};
__device__ __forceinline__ SplitTf32 split_tf32(float v) {
  const uint32_t big = to_tf32(v);
  return {big, to_tf32(v - __uint_as_float(big))};
}

__device__ __forceinline__ void mma_tf32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Copies a rows x cols_pad int8 tile into shared memory as floats, zero outside rows_valid x
// cols_valid. VEC = 16 moves 16 bytes per thread (cols_valid and the strides divisible by 16).
template <int VEC>
__device__ __forceinline__ void load_tile(float* dst, int ld, const int8_t* __restrict__ src,
                                          int64_t src_stride, int rows_valid, int rows,
                                          int cols_valid, int cols_pad) {
  const int vecs_per_row = cols_pad / VEC;
  for (int e = threadIdx.x; e < rows * vecs_per_row; e += kThreads) {
    const int r = e / vecs_per_row, c = (e % vecs_per_row) * VEC;
    const bool inside = r < rows_valid && c < cols_valid;
    if constexpr (VEC == 16) {
      Int8x16 v = {};
      if (inside) v = *reinterpret_cast<const Int8x16*>(src + r * src_stride + c);
#pragma unroll
      for (int k = 0; k < 16; k += 4) {
        *reinterpret_cast<float4*>(dst + r * ld + c + k) =
            make_float4(v.v[k], v.v[k + 1], v.v[k + 2], v.v[k + 3]);
      }
    } else {
      dst[r * ld + c] = inside ? static_cast<float>(src[r * src_stride + c]) : 0.0f;
    }
  }
}

// Starts copying rows [0, rows) x cols (16-byte pieces) of an int8 tile from global into shared
// memory without going through registers (cp.async, sm_80+): the copy runs under the compute of
// the current chunk.
__device__ __forceinline__ void copy_tile_async(int8_t* dst, int dst_ld, const int8_t* src,
                                                int64_t src_ld, int rows, int cols) {
  const int vecs = cols / 16;
  for (int e = threadIdx.x; e < rows * vecs; e += kThreads) {
    const int r = e / vecs, c = (e % vecs) * 16;
    const uint32_t d = static_cast<uint32_t>(__cvta_generic_to_shared(dst + r * dst_ld + c));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src + r * src_ld + c));
  }
}

template <int VEC>
__global__ void __launch_bounds__(kThreads) quant_ssd_prefill_kernel(const PrefillArgs a) {
  extern __shared__ float4 smem_f4[];
  float* smem = reinterpret_cast<float*>(smem_f4);
  const int Q = a.Q, P = a.P, npad = a.npad, n = a.d_state, p = a.headdim;
  const Layout lay = make_layout(Q, P, npad);
  float* tC = smem;
  float* tB = smem + lay.off_B;
  float* tX = smem + lay.off_X;
  float* tM = smem + lay.off_M;
  float* tS = smem + lay.off_S;
  float* dtv = smem + lay.off_vec;
  float* acum = dtv + Q;
  float* rC = acum + Q;
  float* wS = rC + Q;
  float* sx = wS + Q;
  int* dgs = reinterpret_cast<int*>(sx + P);
  int8_t* stage = reinterpret_cast<int8_t*>(smem + lay.off_stage);  // [C | B | X] of the next chunk
  int8_t* stC = stage;
  int8_t* stB = stage + Q * npad;
  int8_t* stX = stage + 2 * Q * npad;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, q = lane % 4;
  const int ps = blockIdx.x % a.pslices;
  const int64_t bh = blockIdx.x / a.pslices;
  const int hd = static_cast<int>(bh % a.nheads);
  const int64_t b = bh / a.nheads;
  const int i0 = ps * P;
  const int sg = hd / a.hpg;
  const int hg = head_group(a.head_ranges, a.nhg, sg, hd % a.hpg);
  const int d_ssm = a.nheads * p;
  const float A = -expf(__ldg(a.A_log + hd));
  const float Dh = __ldg(a.D + hd), dt_b = __ldg(a.dt_bias + hd);
  const float sB = __ldg(a.B_out_scales + sg), sC = __ldg(a.C_out_scales + sg);
  const float sCB = sC * sB;
  const int64_t state_base = ((b * a.nheads + hd) * p + i0) * n;
  const float* sscale_hg = a.state_scale + static_cast<int64_t>((sg * a.nhg + hg) * a.ndg) * n;

  for (int i = threadIdx.x; i < P; i += kThreads) {
    const int dg = dim_group(a.dim_ranges, a.nhg, a.ndg, sg, hg, i0 + i);
    dgs[i] = dg;
    sx[i] = __ldg(a.x_out_scales + (sg * a.nhg + hg) * a.ndg + dg);
  }
  __syncthreads();
  // S' = S0 / s_x(i), S0 = ssm_state_scale * ssm_state; zero columns past d_state.
  for (int e = threadIdx.x; e < P * npad; e += kThreads) {
    const int i = e / npad, j = e % npad;
    float v = 0.0f;
    if (a.state != nullptr && j < n) {
      const float s0 = __fmul_rn(static_cast<float>(a.state[state_base + i * n + j]), __ldg(sscale_hg + dgs[i] * n + j));
      v = __fdiv_rn(s0, sx[i]);
    }
    tS[i * lay.ldc + j] = v;
  }

  // The chunk's int8 inputs: with 16-byte pieces, copied asynchronously one chunk ahead (issued
  // before the previous chunk's products); otherwise loaded when the chunk starts.
  const int8_t* C_row = a.C + b * a.seqlen * a.gn + sg * n;
  const int8_t* B_row = a.B + b * a.seqlen * a.gn + sg * n;
  const int8_t* X_row = a.x + b * a.seqlen * d_ssm + hd * p + i0;
  const int8_t* dt_row = a.dt + b * a.seqlen * a.nheads + hd;
  auto issue_copies = [&](int64_t c0) {
    const int rows = a.seqlen - c0 < Q ? static_cast<int>(a.seqlen - c0) : Q;
    copy_tile_async(stC, npad, C_row + c0 * a.gn, a.gn, rows, n);
    copy_tile_async(stB, npad, B_row + c0 * a.gn, a.gn, rows, n);
    copy_tile_async(stX, P, X_row + c0 * d_ssm, d_ssm, rows, P);
    asm volatile("cp.async.commit_group;\n" ::);
  };
  // Each thread t < Q keeps dt of its row of the next chunk in a register.
  auto load_dt = [&](int64_t c0) -> int8_t {
    const int t = threadIdx.x;
    return (t < Q && c0 + t < a.seqlen) ? dt_row[(c0 + t) * a.nheads] : int8_t(0);
  };
  if constexpr (VEC == 16) issue_copies(0);
  int8_t dt_next = load_dt(0);

  for (int64_t c0 = 0; c0 < a.seqlen; c0 += Q) {
    const int T = a.seqlen - c0 < Q ? static_cast<int>(a.seqlen - c0) : Q;
    const int64_t row0 = b * a.seqlen + c0;  // token row of y
    __syncthreads();  // the previous chunk is done with every tile
    if constexpr (VEC == 16) {
      asm volatile("cp.async.wait_all;\n" ::: "memory");
      __syncthreads();
      load_tile<16>(tC, lay.ldc, stC, npad, T, Q, n, npad);
      load_tile<16>(tB, lay.ldc, stB, npad, T, Q, n, npad);
      load_tile<16>(tX, lay.ldx, stX, P, T, Q, P, P);
    } else {
      load_tile<1>(tC, lay.ldc, C_row + c0 * a.gn, a.gn, T, Q, n, npad);
      load_tile<1>(tB, lay.ldc, B_row + c0 * a.gn, a.gn, T, Q, n, npad);
      load_tile<1>(tX, lay.ldx, X_row + c0 * d_ssm, d_ssm, T, Q, P, P);
    }
    if (threadIdx.x < Q) {
      // Rows past the sequence get dt = 0: no decay, no input.
      const int t = threadIdx.x;
      const float d = t < T ? dt_value(dt_next, a.dt_scale, dt_b, a.dt_min, a.dt_max) : 0.0f;
      dtv[t] = d;
      acum[t] = d * A;
    }
    __syncthreads();  // the staging buffer is read: the next chunk's copies may start
    if (c0 + Q < a.seqlen) {
      if constexpr (VEC == 16) issue_copies(c0 + Q);
      dt_next = load_dt(c0 + Q);
    }
    if (warp == 0) {  // inclusive scan of dt * A over the chunk: Q / 32 consecutive values a lane
      const int per = Q / 32;
      float v[4];
      float run = 0.0f;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (k < per) {
          run += acum[lane * per + k];
          v[k] = run;
        }
      }
      float incl = run;
#pragma unroll
      for (int off = 1; off < 32; off *= 2) {
        const float o = __shfl_up_sync(0xffffffffu, incl, off);
        if (lane >= off) incl += o;
      }
      const float before = incl - run;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (k < per) acum[lane * per + k] = v[k] + before;
      }
    }
    __syncthreads();
    const float a_last = acum[Q - 1];
    for (int t = threadIdx.x; t < Q; t += kThreads) {
      rC[t] = expf(acum[t]) * sC;
      wS[t] = expf(a_last - acum[t]) * dtv[t] * sB;
    }

    // M = masked decay * (Cq Bq^T): 16 x 32 warp tiles; tiles right of the diagonal are skipped
    // (the y product never reads them).
    const int mt_q = Q / 16, nt_q = Q / 32;
    for (int tile = warp; tile < mt_q * nt_q; tile += kWarps) {
      const int m0 = (tile / nt_q) * 16, n0 = (tile % nt_q) * 32;
      if (n0 > m0 + 15) continue;
      float acc[4][4] = {};
      for (int k0 = 0; k0 < npad; k0 += 8) {
        const float2 lo = *reinterpret_cast<const float2*>(tC + (m0 + g) * lay.ldc + k0 + 2 * q);
        const float2 hi = *reinterpret_cast<const float2*>(tC + (m0 + g + 8) * lay.ldc + k0 + 2 * q);
        const uint32_t af[4] = {exact_tf32(lo.x), exact_tf32(hi.x), exact_tf32(lo.y), exact_tf32(hi.y)};
#pragma unroll
        for (int s = 0; s < 4; ++s) {
          const float2 bb = *reinterpret_cast<const float2*>(tB + (n0 + 8 * s + g) * lay.ldc + k0 + 2 * q);
          mma_tf32(acc[s], af, exact_tf32(bb.x), exact_tf32(bb.y));
        }
      }
#pragma unroll
      for (int s = 0; s < 4; ++s) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int t = m0 + g + 8 * r, s0 = n0 + 8 * s + 2 * q;
          float2 m;
          m.x = s0 <= t ? acc[s][2 * r] * sCB * __expf(acum[t] - acum[s0]) * dtv[s0] : 0.0f;
          m.y = s0 + 1 <= t ? acc[s][2 * r + 1] * sCB * __expf(acum[t] - acum[s0 + 1]) * dtv[s0 + 1] : 0.0f;
          *reinterpret_cast<float2*>(tM + t * lay.ldm + s0) = m;
        }
      }
    }
    __syncthreads();

    // y = s_x * (M Xq + diag(rC) Cq S'^T) + D xh, 16 x 32 warp tiles over Q x P.
    const int nt_p = P / 32;
    for (int tile = warp; tile < mt_q * nt_p; tile += kWarps) {
      const int m0 = (tile / nt_p) * 16, n0 = (tile % nt_p) * 32;
      float acc[4][4] = {};
      const float r_lo = rC[m0 + g], r_hi = rC[m0 + g + 8];
      for (int k0 = 0; k0 < npad; k0 += 8) {
        const float2 lo = *reinterpret_cast<const float2*>(tC + (m0 + g) * lay.ldc + k0 + 2 * q);
        const float2 hi = *reinterpret_cast<const float2*>(tC + (m0 + g + 8) * lay.ldc + k0 + 2 * q);
        const SplitTf32 a0 = split_tf32(lo.x * r_lo), a1 = split_tf32(hi.x * r_hi), a2 = split_tf32(lo.y * r_lo),
                        a3 = split_tf32(hi.y * r_hi);
        const uint32_t af[4] = {a0.big, a1.big, a2.big, a3.big};
        const uint32_t af_small[4] = {a0.small, a1.small, a2.small, a3.small};
#pragma unroll
        for (int s = 0; s < 4; ++s) {
          const float2 bb = *reinterpret_cast<const float2*>(tS + (n0 + 8 * s + g) * lay.ldc + k0 + 2 * q);
          const SplitTf32 b0 = split_tf32(bb.x), b1 = split_tf32(bb.y);
          mma_tf32(acc[s], af_small, b0.big, b1.big);  // the small terms first
          mma_tf32(acc[s], af, b0.small, b1.small);
          mma_tf32(acc[s], af, b0.big, b1.big);
        }
      }
      const int k_end = min(Q, m0 + 16);  // causal: M is zero past the diagonal
      for (int k0 = 0; k0 < k_end; k0 += 8) {
        const float2 lo = *reinterpret_cast<const float2*>(tM + (m0 + g) * lay.ldm + k0 + 2 * q);
        const float2 hi = *reinterpret_cast<const float2*>(tM + (m0 + g + 8) * lay.ldm + k0 + 2 * q);
        const SplitTf32 a0 = split_tf32(lo.x), a1 = split_tf32(hi.x), a2 = split_tf32(lo.y), a3 = split_tf32(hi.y);
        const uint32_t af[4] = {a0.big, a1.big, a2.big, a3.big};
        const uint32_t af_small[4] = {a0.small, a1.small, a2.small, a3.small};
#pragma unroll
        for (int s = 0; s < 4; ++s) {
          const float b0 = tX[(k0 + 2 * q) * lay.ldx + n0 + 8 * s + g];
          const float b1 = tX[(k0 + 2 * q + 1) * lay.ldx + n0 + 8 * s + g];
          mma_tf32(acc[s], af_small, exact_tf32(b0), exact_tf32(b1));
          mma_tf32(acc[s], af, exact_tf32(b0), exact_tf32(b1));
        }
      }
#pragma unroll
      for (int s = 0; s < 4; ++s) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int t = m0 + g + 8 * r;
          if (t >= T) continue;
#pragma unroll
          for (int c = 0; c < 2; ++c) {
            const int i = n0 + 8 * s + 2 * q + c;
            const float xh = sx[i] * tX[t * lay.ldx + i];
            const float yv = sx[i] * acc[s][2 * r + c] + Dh * xh;
            store_y(a.y, (row0 + t) * d_ssm + hd * p + i0 + i, yv, a.out_fp16 != 0);
          }
        }
      }
    }
    __syncthreads();  // y has read S'; now it may change

    // S' <- exp(a_last) S' + Xq^T diag(w) Bq: 16 x 32 warp tiles over P x npad.
    const int k_rows = (T + 7) / 8 * 8;  // rows past T are zero
    const float decay = expf(a_last);
    const int nt_n = npad / 32;
    for (int tile = warp; tile < (P / 16) * nt_n; tile += kWarps) {
      const int m0 = (tile / nt_n) * 16, n0 = (tile % nt_n) * 32;
      float acc[4][4];
#pragma unroll
      for (int s = 0; s < 4; ++s) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const float2 v = *reinterpret_cast<const float2*>(tS + (m0 + g + 8 * r) * lay.ldc + n0 + 8 * s + 2 * q);
          acc[s][2 * r] = v.x * decay;
          acc[s][2 * r + 1] = v.y * decay;
        }
      }
      for (int k0 = 0; k0 < k_rows; k0 += 8) {
        const float* x0 = tX + (k0 + 2 * q) * lay.ldx + m0 + g;
        const float* x1 = x0 + lay.ldx;
        const uint32_t af[4] = {exact_tf32(x0[0]), exact_tf32(x0[8]), exact_tf32(x1[0]), exact_tf32(x1[8])};
        const float w0 = wS[k0 + 2 * q], w1 = wS[k0 + 2 * q + 1];
#pragma unroll
        for (int s = 0; s < 4; ++s) {
          const float b0 = tB[(k0 + 2 * q) * lay.ldc + n0 + 8 * s + g];
          const float b1 = tB[(k0 + 2 * q + 1) * lay.ldc + n0 + 8 * s + g];
          const SplitTf32 v0 = split_tf32(b0 * w0), v1 = split_tf32(b1 * w1);
          mma_tf32(acc[s], af, v0.small, v1.small);
          mma_tf32(acc[s], af, v0.big, v1.big);
        }
      }
#pragma unroll
      for (int s = 0; s < 4; ++s) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          *reinterpret_cast<float2*>(tS + (m0 + g + 8 * r) * lay.ldc + n0 + 8 * s + 2 * q) =
              make_float2(acc[s][2 * r], acc[s][2 * r + 1]);
        }
      }
    }
  }
  __syncthreads();

  // ssm_state_out = Q(S' * s_x(i), ssm_state_scale).
  for (int e = threadIdx.x; e < P * n; e += kThreads) {
    const int i = e / n, j = e % n;
    const float s = tS[i * lay.ldc + j] * sx[i];
    a.state_out[state_base + i * n + j] = quantize_rn(s, __ldg(sscale_hg + dgs[i] * n + j));
  }
}

// Chunk length: the requested one rounded down to a multiple of 32 in [32, 128] (0: the default),
// then halved while the tiles do not fit in shared memory. It changes the speed, not the math.
int pick_chunk(int requested, int P, int npad, int max_smem) {
  int Q = requested == 0 ? kDefaultChunk : requested;
  Q = Q < 32 ? 32 : (Q > 128 ? 128 : Q / 32 * 32);
  while (Q > 32 && make_layout(Q, P, npad).floats * 4 > max_smem) Q /= 2;
  return Q;
}

}  // namespace
}  // namespace qmamba

extern "C" size_t qmamba_quant_ssd_prefill_workspace(const qmamba_ssd_params*, int64_t, int64_t) {
  return 0;  // the scan is fused: the state lives in shared memory
}

extern "C" int qmamba_quant_ssd_prefill(const qmamba_ssd_params* params, const qmamba_ssd_tensors* t,
                                        int64_t batch, int64_t seqlen, void*, size_t,
                                        qmamba_stream_t stream) {
  using namespace qmamba;
  const char* where = "qmamba_quant_ssd_prefill";
  QMAMBA_TRY(check_ssd(where, params, t, batch, seqlen));
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
  a.npad = (a.d_state + 31) / 32 * 32;
  // 64 dims a block halves the recomputation of Cq Bq^T; 32 when that would leave SMs idle.
  const bool wide = a.headdim % 64 == 0 && batch * a.nheads * (a.headdim / 64) >= 2 * dev.sm_count;
  a.P = wide ? 64 : 32;
  a.pslices = a.headdim / a.P;
  a.Q = pick_chunk(params->chunk_size, a.P, a.npad, dev.max_smem_optin);
  const size_t smem = static_cast<size_t>(make_layout(a.Q, a.P, a.npad).floats) * 4;
  if (smem > static_cast<size_t>(dev.max_smem_optin)) {
    return fail(QMAMBA_ERR_BAD_SIZE, "%s: d_state = %d needs %zu bytes of shared memory, the device has %d",
                where, a.d_state, smem, dev.max_smem_optin);
  }
  const int64_t blocks = batch * a.nheads * a.pslices;
  if (blocks > 0x7fffffff) return fail(QMAMBA_ERR_BAD_SIZE, "%s: batch * nheads too large for one launch", where);
  const bool vec16 = a.d_state % 16 == 0 && aligned16(a.x) && aligned16(a.B) && aligned16(a.C);
  cudaError_t e;
  if (vec16) {
    e = cudaFuncSetAttribute(quant_ssd_prefill_kernel<16>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e == cudaSuccess) quant_ssd_prefill_kernel<16><<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(a);
  } else {
    e = cudaFuncSetAttribute(quant_ssd_prefill_kernel<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e == cudaSuccess) quant_ssd_prefill_kernel<1><<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(a);
  }
  if (e != cudaSuccess) {
    return fail(QMAMBA_ERR_CUDA, "%s: cannot set %zu bytes of shared memory: %s", where, smem, cudaGetErrorString(e));
  }
  return check_launch(where);
}
