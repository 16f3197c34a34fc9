// QuantSSD decode (docs/ops.md): one token per batch row, the int8 state read, updated in fp32 and
// requantized with its per-group scales. The state update follows the reference's order of
// operations without FMA contraction, so ssm_state_out equals the reference except at ties.
//
// The int8 state is the whole memory traffic at real sizes (1 MiB a batch row at 8b), read and
// written once; the kernel is built so that the state streams at memory speed:
// - Layout: a block owns one head, a range of its dims i and a run of batch rows. TPR threads share a
//   state row (i, 0..n), each taking one VEC-byte piece (16-byte loads when d_state is a multiple of
//   16); everything that depends on (head, i, j) only, the group lookups and the state scales with
//   their reciprocals, is done once per thread.
// - Stages of 4 batch rows: a thread issues the state loads of the next stage before it
//   computes the current one, so 4 * VEC bytes a thread (32 KiB an SM at two 256-thread
//   blocks) are in flight while it computes.
// - What depends on (batch row, SSD group, j) or (batch row, head) only is computed once per block
//   and stage into shared memory (double-buffered, one barrier a stage): Bh = B * sB and Ch = C * sC
//   in fp32, dt and dA = exp(dt * A). A state element then costs its own update and Q alone.
#include <math.h>

#include "checks.h"
#include "common.cuh"
#include "launch.cuh"
#include "ssdChecks.h"

namespace qmamba {
namespace {

constexpr int kMaxThreads = 256;
// Batch rows a stage: 4, or 2 for bytewise pieces (eight of them a thread).
template <int VEC>
__host__ __device__ constexpr int stage_rows() { return VEC == 1 ? 2 : 4; }

struct DecodeArgs {
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
  const int8_t* state;  // may alias state_out: not __restrict__
  void* __restrict__ y;
  int8_t* state_out;
  float dt_scale, dt_min, dt_max;
  int nheads, headdim, d_state, gn, hpg, nhg, ndg;
  int tpr;          // threads per state row (power of two, <= 32)
  int pieces;       // VEC-byte pieces of a state row (d_state / VEC, rounded up)
  int rows;         // state rows (dims) of a block; divides headdim
  int row_blocks;   // blocks per head along headdim
  int64_t batch;
  int64_t batch_per_block;
  int out_fp16;
  uint32_t exp23;  // 0x4B000000, the bits of 2^23: a kernel argument, so that it sits in a register
};

// common.cuh's group_of with its (at most 8, checked by the launcher) loads issued together: a block's
// lookups are two dependent round trips instead of one a group.
__device__ __forceinline__ int group_of8(const int32_t* __restrict__ ends, int count, int v) {
  int32_t e[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) e[k] = k < count ? __ldg(ends + k) : 0x7fffffff;
  int g = 0;
#pragma unroll
  for (int k = 0; k < 8; ++k) g += e[k] <= v ? 1 : 0;
  return g < count ? g : count - 1;
}

// One VEC-byte piece of a state row as loaded: VEC / 4 words, or one sign-extended byte.
template <int VEC>
struct StatePiece {
  uint32_t w[VEC >= 4 ? VEC / 4 : 1];
};

template <int VEC>
__device__ __forceinline__ StatePiece<VEC> load_piece(const int8_t* p) {
  StatePiece<VEC> s;
  if constexpr (VEC == 16) {
    const uint4 v = __ldcs(reinterpret_cast<const uint4*>(p));
    s.w[0] = v.x; s.w[1] = v.y; s.w[2] = v.z; s.w[3] = v.w;
  } else if constexpr (VEC == 8) {
    const uint2 v = __ldcs(reinterpret_cast<const uint2*>(p));
    s.w[0] = v.x; s.w[1] = v.y;
  } else if constexpr (VEC == 4) {
    s.w[0] = __ldcs(reinterpret_cast<const unsigned int*>(p));
  } else {
    s.w[0] = static_cast<uint32_t>(static_cast<int>(__ldcs(reinterpret_cast<const signed char*>(p))));
  }
  return s;
}

template <int VEC>
__device__ __forceinline__ void store_piece(int8_t* p, const StatePiece<VEC>& s) {
  if constexpr (VEC == 16) {
    *reinterpret_cast<uint4*>(p) = make_uint4(s.w[0], s.w[1], s.w[2], s.w[3]);
  } else if constexpr (VEC == 8) {
    *reinterpret_cast<uint2*>(p) = make_uint2(s.w[0], s.w[1]);
  } else if constexpr (VEC == 4) {
    *reinterpret_cast<uint32_t*>(p) = s.w[0];
  } else {
    *p = static_cast<int8_t>(s.w[0]);
  }
}

// Shared memory of a block, in floats: [2 buffers][stage rows][Bh, Ch][row], then dt and dA
// [2 buffers][stage rows] each. With VEC >= 8 a row of Bh (Ch) holds 256 floats, the four-float chunk k of
// piece l at float4 index k * chunk_stride + l (chunk_stride: the most pieces a row can have), so the TPR
// threads of a state row read consecutive float4s (no bank conflicts) at offsets known at compile time;
// with VEC = 4 or 1 a row is d_state floats in plain order.
template <int VEC>
__host__ __device__ constexpr int chunk_stride() { return VEC == 16 ? 16 : 32; }
template <int VEC>
__host__ __device__ constexpr int smem_row(int n) { return VEC >= 8 ? 256 : n; }
template <int VEC>
__host__ __device__ constexpr int decode_smem_floats(int n) {
  return 2 * stage_rows<VEC>() * 2 * smem_row<VEC>(n) + 4 * stage_rows<VEC>();
}

template <int VEC>
__device__ __forceinline__ int smem_pos(int j) {
  if constexpr (VEC >= 8) {
    return 4 * ((j % VEC) / 4 * chunk_stride<VEC>() + j / VEC) + j % 4;
  } else {
    return j;
  }
}

// The four int8 of a word whose bytes were XORed with 0x80 as exact floats (common.cuh's
// biased_word_to_floats, with 2^23's bits in a register so that the byte selectors are immediates).
__device__ __forceinline__ void biased_to_floats(uint32_t biased, uint32_t exp23, float* f) {
  f[0] = __fadd_rn(__uint_as_float(__byte_perm(biased, exp23, 0x7540)), -8388736.0f);
  f[1] = __fadd_rn(__uint_as_float(__byte_perm(biased, exp23, 0x7541)), -8388736.0f);
  f[2] = __fadd_rn(__uint_as_float(__byte_perm(biased, exp23, 0x7542)), -8388736.0f);
  f[3] = __fadd_rn(__uint_as_float(__byte_perm(biased, exp23, 0x7543)), -8388736.0f);
}

// One piece of a state row: S = dA * S0 + (dt * xh) * Bh in the reference's order (no FMA),
// Q(S, scale) into q (by the division throughout where `exact`); returns the piece's share of y = sum_j S * Ch.
// bh/ch: the piece's first four-float chunk in shared memory, chunk k at float4 [k * chunk_stride].
template <int VEC>
__device__ __forceinline__ float step_piece(const StatePiece<VEC>& s, const float (&sc)[VEC], const float (&inv)[VEC],
                                            bool exact, const float* bh, const float* ch, float dA, float dtx,
                                            uint32_t exp23, StatePiece<VEC>& q) {
  float y = 0.0f;
  if constexpr (VEC >= 4) {
#pragma unroll
    for (int k = 0; k < VEC / 4; ++k) {
      float st[4];
      biased_to_floats(s.w[k] ^ 0x80808080u, exp23, st);
      const float4 b4 = reinterpret_cast<const float4*>(bh)[k * chunk_stride<VEC>()];
      const float4 c4 = reinterpret_cast<const float4*>(ch)[k * chunk_stride<VEC>()];
      const float bv[4] = {b4.x, b4.y, b4.z, b4.w};
      const float cv[4] = {c4.x, c4.y, c4.z, c4.w};
      float s1[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float s0 = __fmul_rn(st[e], sc[4 * k + e]);
        s1[e] = __fadd_rn(__fmul_rn(dA, s0), __fmul_rn(dtx, bv[e]));
        y = __fmaf_rn(s1[e], cv[e], y);
      }
      q.w[k] = quantize4_with_inverse(s1, sc + 4 * k, inv + 4 * k, exact);
    }
  } else {
    const float s0 = __fmul_rn(static_cast<float>(static_cast<int>(s.w[0])), sc[0]);
    const float s1 = __fadd_rn(__fmul_rn(dA, s0), __fmul_rn(dtx, *bh));
    y = __fmaf_rn(s1, *ch, y);
    q.w[0] = quantize1_with_inverse(s1, sc[0], inv[0], exact);
  }
  return y;
}

// The Bh/Ch items of a stage a thread fills: with VEC >= 4 four bytes of B or C an item (at most two a
// thread), else one byte (at most four). Which items a thread takes is fixed for the block, so where
// they come from and go is worked out once: src, the item's bytes at the current stage's first batch
// row (null: no item); dst, the float index in a buffer (bits 0..11), 1 << 12 for an item of C, and the
// item's batch row in the stage << 16.
template <int VEC>
struct FillPlan {
  static constexpr int kBytes = VEC >= 4 ? 4 : 1;
  static constexpr int kMax = VEC >= 4 ? 2 : 4;
  static constexpr int kIsC = 1 << 12;
  const int8_t* src[kMax];
  int dst[kMax];
};

template <int VEC>
__device__ __forceinline__ FillPlan<VEC> plan_fill(const DecodeArgs& a, int sg, int64_t b_begin) {
  FillPlan<VEC> f;
  const int n = a.d_state;
  const int per_row = n / FillPlan<VEC>::kBytes;  // items of Bh (or Ch) of one batch row
#pragma unroll
  for (int q = 0; q < FillPlan<VEC>::kMax; ++q) {
    const int item = threadIdx.x + q * blockDim.x;
    f.src[q] = nullptr;
    f.dst[q] = 0;
    if (item < stage_rows<VEC>() * 2 * per_row) {
      const int r = item / (2 * per_row), rem = item % (2 * per_row);
      const bool is_c = rem >= per_row;
      const int j = (rem - (is_c ? per_row : 0)) * FillPlan<VEC>::kBytes;
      f.src[q] = (is_c ? a.C : a.B) + (b_begin + r) * a.gn + sg * n + j;
      f.dst[q] = ((r * 2 + (is_c ? 1 : 0)) * smem_row<VEC>(n) + smem_pos<VEC>(j)) | (is_c ? FillPlan<VEC>::kIsC : 0) |
                 (r << 16);
    }
  }
  return f;
}

// The bytes of B and C a thread converts for a stage of nrows batch rows (loaded early, stored later).
template <int VEC>
struct FillBytes {
  uint32_t v[FillPlan<VEC>::kMax];
};

template <int VEC>
__device__ __forceinline__ FillBytes<VEC> load_fill(const FillPlan<VEC>& f, int nrows) {
  FillBytes<VEC> v;
#pragma unroll
  for (int q = 0; q < FillPlan<VEC>::kMax; ++q) {
    v.v[q] = 0;
    if (f.src[q] != nullptr && (f.dst[q] >> 16) < nrows) {
      if constexpr (VEC >= 4) {
        v.v[q] = __ldg(reinterpret_cast<const uint32_t*>(f.src[q]));
      } else {
        v.v[q] = static_cast<uint32_t>(static_cast<int>(__ldg(f.src[q])));
      }
    }
  }
  return v;
}

// Bh = B * sB, Ch = C * sC of docs/ops.md into a buffer.
template <int VEC>
__device__ __forceinline__ void store_fill(float* buf, const FillPlan<VEC>& f, const FillBytes<VEC>& v, float sB,
                                           float sC, uint32_t exp23) {
#pragma unroll
  for (int q = 0; q < FillPlan<VEC>::kMax; ++q) {
    if (f.src[q] != nullptr) {
      const float s = (f.dst[q] & FillPlan<VEC>::kIsC) ? sC : sB;
      float* d = buf + (f.dst[q] & 0xfff);
      if constexpr (VEC >= 4) {
        float e[4];
        biased_to_floats(v.v[q] ^ 0x80808080u, exp23, e);
        *reinterpret_cast<float4*>(d) =
            make_float4(__fmul_rn(e[0], s), __fmul_rn(e[1], s), __fmul_rn(e[2], s), __fmul_rn(e[3], s));
      } else {
        *d = __fmul_rn(static_cast<float>(static_cast<int>(v.v[q])), s);
      }
    }
  }
}

// What a thread loads for a stage besides the fill: its state pieces and x of its row, per batch row.
template <int VEC, int MAXP>
struct StageLoads {
  StatePiece<VEC> st[stage_rows<VEC>()][MAXP];
  int xq[stage_rows<VEC>()];
  int dtq;  // the thread's dt row of the stage (dt_row >= 0): its dt
};

// STATE: an initial state is given (else it is zeros).
template <int VEC, int MAXP, bool STATE>
__global__ void __launch_bounds__(kMaxThreads, 2) quant_ssd_decode_kernel(const DecodeArgs a) {
  constexpr int kRows = stage_rows<VEC>();
  extern __shared__ __align__(16) float smem[];
  const int n = a.d_state;
  const int rb = blockIdx.x % a.row_blocks;
  const int64_t rest = blockIdx.x / a.row_blocks;
  const int hd = static_cast<int>(rest % a.nheads);
  const int64_t b_begin = (rest / a.nheads) * a.batch_per_block;
  const int64_t b_end = min(b_begin + a.batch_per_block, a.batch);
  const int i = rb * a.rows + static_cast<int>(threadIdx.x) / a.tpr;  // rows divides headdim: always < headdim
  const int lane = static_cast<int>(threadIdx.x) % a.tpr;
  const int sg = hd / a.hpg;
  const int64_t d_ssm = int64_t(a.nheads) * a.headdim;
  const int64_t state_stride = d_ssm * n;  // bytes between batch rows of the state

  // Pieces of this thread: piece p starts at j = (p * tpr + lane) * VEC; piece 0's Bh and Ch sit at
  // my_pos in a row of a buffer.
  bool has[MAXP];
#pragma unroll
  for (int p = 0; p < MAXP; ++p) has[p] = p * a.tpr + lane < a.pieces;
  const int my_pos = smem_pos<VEC>(lane * VEC);
  const int row_len = smem_row<VEC>(n);

  // dt and dA of the stage's batch row r are computed by thread r * blockDim.x / kRows (dt_row = r), one
  // in each of kRows warps when the block has that many.
  const int dt_step = static_cast<int>(blockDim.x) / kRows;
  const int dt_row = static_cast<int>(threadIdx.x) % dt_step == 0 ? static_cast<int>(threadIdx.x) / dt_step : -1;

  // Per thread, at the current stage's first batch row: its (head, dim) row of x and y, its state piece 0,
  // and the dt of its dt row.
  int64_t row = b_begin * d_ssm + int64_t(hd) * a.headdim + i;
  const int8_t* st_src = STATE ? a.state + row * n + lane * VEC : nullptr;
  int8_t* st_dst = a.state_out + row * n + lane * VEC;
  const int8_t* x_src = a.x + row;
  const int8_t* dt_src = a.dt + (b_begin + (dt_row > 0 ? dt_row : 0)) * a.nheads + hd;
  FillPlan<VEC> plan = plan_fill<VEC>(a, sg, b_begin);

  auto load_stage = [&](int nrows, StageLoads<VEC, MAXP>& s) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (r < nrows) {
        if constexpr (STATE) {
#pragma unroll
          for (int p = 0; p < MAXP; ++p) {
            if (has[p]) s.st[r][p] = load_piece<VEC>(st_src + r * state_stride + p * a.tpr * VEC);
          }
        }
        s.xq[r] = __ldg(x_src + r * d_ssm);
      }
    }
    if (dt_row >= 0 && dt_row < nrows) s.dtq = __ldg(dt_src);
  };

  // Stage 0's loads (the state, x, dt, B and C: earlier kernels' outputs) and what no kernel writes (the group
  // lookups, scales, A, D, dt_bias, below) overlap: without programmatic dependent launch stage 0's loads go
  // first; with it (sm_90) the lookups go first, before pdl_wait(), while the kernel before still runs.
  const int nrows0 = b_end - b_begin < kRows ? static_cast<int>(b_end - b_begin) : kRows;
  StageLoads<VEC, MAXP> cur;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int p = 0; p < MAXP; ++p) cur.st[r][p] = StatePiece<VEC>{};  // zeros without a state
    cur.xq[r] = 0;
  }
  cur.dtq = 0;
  FillBytes<VEC> fill;
  auto stage0_loads = [&] {
    load_stage(nrows0, cur);
    fill = load_fill<VEC>(plan, nrows0);
  };
  if constexpr (!kPdlDevice) stage0_loads();

  // Per thread, for all its batch rows: group lookups, the x scale, the state scales and reciprocals (and
  // whether one of them cannot serve: then this thread's Q divides, needs_division in common.cuh).
  const int hg = group_of8(a.head_ranges + sg * a.nhg, a.nhg, hd % a.hpg);
  const int dg = group_of8(a.dim_ranges + (sg * a.nhg + hg) * a.ndg, a.ndg, i);
  const float s_x = __ldg(a.x_out_scales + (sg * a.nhg + hg) * a.ndg + dg);
  const float* sscale = a.state_scale + static_cast<int64_t>((sg * a.nhg + hg) * a.ndg + dg) * n;
  float sc[MAXP][VEC], inv[MAXP][VEC];
  bool exact = false;
#pragma unroll
  for (int p = 0; p < MAXP; ++p) {
    const int j0 = (p * a.tpr + lane) * VEC;
#pragma unroll
    for (int e = 0; e < VEC; e += (VEC >= 4 ? 4 : 1)) {
      if constexpr (VEC >= 4) {
        const float4 v = has[p] ? __ldg(reinterpret_cast<const float4*>(sscale + j0 + e)) : make_float4(1, 1, 1, 1);
        sc[p][e] = v.x; sc[p][e + 1] = v.y; sc[p][e + 2] = v.z; sc[p][e + 3] = v.w;
      } else {
        sc[p][e] = has[p] ? __ldg(sscale + j0 + e) : 1.0f;
      }
    }
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      inv[p][e] = __frcp_rn(sc[p][e]);
      exact |= needs_division(sc[p][e]);
    }
  }
  const float A = -expf(__ldg(a.A_log + hd));
  const float Dh = __ldg(a.D + hd), dt_b = __ldg(a.dt_bias + hd);
  const float sB = __ldg(a.B_out_scales + sg), sC = __ldg(a.C_out_scales + sg);
  pdl_wait();
  if constexpr (kPdlDevice) stage0_loads();
  pdl_launch_dependents();  // the next kernel's blocks may be placed as ours end

  float* const s_dt = smem + 2 * kRows * 2 * row_len;  // [2][kRows]
  float* const s_dA = s_dt + 2 * kRows;                // [2][kRows]
  // Reference order: dt, then dA = exp(dt * A).
  auto store_stage_scalars = [&](int buf, int dtq) {
    if (dt_row >= 0) {
      const float dtv = dt_value(static_cast<int8_t>(dtq), a.dt_scale, dt_b, a.dt_min, a.dt_max);
      s_dt[buf * kRows + dt_row] = dtv;
      s_dA[buf * kRows + dt_row] = expf(__fmul_rn(dtv, A));
    }
  };
  store_fill<VEC>(smem, plan, fill, sB, sC, a.exp23);
  store_stage_scalars(0, cur.dtq);
  __syncthreads();

  int buf = 0;
  for (int64_t b0 = b_begin; b0 < b_end; b0 += kRows, buf ^= 1) {
    // Rows of this stage and the next (the same for the whole block).
    const int nrows = b_end - b0 < kRows ? static_cast<int>(b_end - b0) : kRows;
    const int nrows_next = b_end - b0 - kRows < kRows ? static_cast<int>(b_end - b0 - kRows) : kRows;
    // The next stage's loads, issued before this stage computes.
    int8_t* const dst_cur = st_dst;
    const int64_t row_cur = row;
    row += kRows * d_ssm;
    if constexpr (STATE) st_src += kRows * state_stride;
    st_dst += kRows * state_stride;
    x_src += kRows * d_ssm;
    dt_src += kRows * a.nheads;
#pragma unroll
    for (int q = 0; q < FillPlan<VEC>::kMax; ++q) {
      if (plan.src[q] != nullptr) plan.src[q] += kRows * a.gn;
    }
    StageLoads<VEC, MAXP> nxt = cur;  // (without a state its pieces stay zeros)
    if (nrows_next > 0) {
      load_stage(nrows_next, nxt);
      fill = load_fill<VEC>(plan, nrows_next);
    }

    const float* const bc = smem + buf * kRows * 2 * row_len + my_pos;  // this thread's piece 0 in Bh of row 0
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (r < nrows) {
        // Reference order: xh = s_x * x, dtx = dt * xh.
        const float dtv = s_dt[buf * kRows + r], dA = s_dA[buf * kRows + r];
        const float xh = __fmul_rn(s_x, static_cast<float>(cur.xq[r]));
        const float dtx = __fmul_rn(dtv, xh);
        float y = 0.0f;
#pragma unroll
        for (int p = 0; p < MAXP; ++p) {
          if (has[p]) {
            // Piece p's chunks: VEC >= 4 pieces are consecutive float4s, bytewise ones consecutive floats.
            const float* bh = bc + r * 2 * row_len + p * a.tpr * (VEC >= 4 ? 4 : 1);
            StatePiece<VEC> q;
            const float yp = step_piece<VEC>(cur.st[r][p], sc[p], inv[p], exact, bh, bh + row_len, dA, dtx, a.exp23, q);
            y = p == 0 ? yp : y + yp;
            store_piece<VEC>(dst_cur + r * state_stride + p * a.tpr * VEC, q);
          }
        }
#pragma unroll
        for (int off = 16; off > 0; off /= 2) {
          if (off < a.tpr) y += __shfl_xor_sync(0xffffffffu, y, off);
        }
        if (lane == 0) store_y(a.y, row_cur + r * d_ssm, y + Dh * xh, a.out_fp16 != 0);
      }
    }

    if (nrows_next > 0) {
      store_fill<VEC>(smem + (buf ^ 1) * kRows * 2 * row_len, plan, fill, sB, sC, a.exp23);
      store_stage_scalars(buf ^ 1, nxt.dtq);
    }
    __syncthreads();
    cur = nxt;
  }
}

using DecodeKernel = void (*)(DecodeArgs);

}  // namespace
}  // namespace qmamba

extern "C" int qmamba_quant_ssd_decode(const qmamba_ssd_params* params, const qmamba_ssd_tensors* t,
                                       int64_t batch, qmamba_stream_t stream) {
  using namespace qmamba;
  const char* where = "qmamba_quant_ssd_decode";
  QMAMBA_TRY(check_ssd(where, params, t, batch, 1));
  DecodeArgs a;
  a.x = t->x; a.dt = t->dt; a.B = t->B; a.C = t->C;
  a.A_log = t->A_log; a.D = t->D; a.dt_bias = t->dt_bias;
  a.x_out_scales = t->x_out_scales; a.B_out_scales = t->B_out_scales; a.C_out_scales = t->C_out_scales;
  a.head_ranges = t->x_head_group_range; a.dim_ranges = t->x_dim_group_range;
  a.state_scale = t->ssm_state_scale; a.state = t->ssm_state;
  a.y = t->y; a.state_out = t->ssm_state_out;
  a.dt_scale = params->dt_scale; a.dt_min = params->dt_min; a.dt_max = params->dt_max;
  a.nheads = params->nheads; a.headdim = params->headdim; a.d_state = params->d_state;
  a.gn = params->ngroups * params->d_state; a.hpg = params->nheads / params->ngroups;
  a.nhg = params->n_head_groups; a.ndg = params->n_dim_groups;
  a.out_fp16 = params->out_fp16;
  a.exp23 = 0x4B000000u;

  // The widest pieces the state row and the pointers allow. Pieces of 4 bytes or more also need B and C
  // word-aligned (the fill reads words) and the state scales 16-byte aligned.
  const int n = a.d_state;
  const bool state_ok16 = (a.state == nullptr || aligned16(a.state)) && aligned16(a.state_out);
  const bool state_ok8 = (a.state == nullptr || aligned8(a.state)) && aligned8(a.state_out);
  const bool state_ok4 = (a.state == nullptr || (reinterpret_cast<uintptr_t>(a.state) & 3u) == 0) &&
                         (reinterpret_cast<uintptr_t>(a.state_out) & 3u) == 0;
  const bool words_ok = (reinterpret_cast<uintptr_t>(a.B) & 3u) == 0 && (reinterpret_cast<uintptr_t>(a.C) & 3u) == 0 &&
                        aligned16(a.state_scale);
  int vec = 1;
  if (words_ok && n % 16 == 0 && state_ok16) {
    vec = 16;
  } else if (words_ok && n % 8 == 0 && state_ok8) {
    vec = 8;
  } else if (words_ok && n % 4 == 0 && state_ok4) {
    vec = 4;
  }
  a.pieces = (n + vec - 1) / vec;
  // Enough threads per row to cover it in one piece each when possible, at most a warp.
  a.tpr = 1;
  while (a.tpr < 32 && a.tpr < a.pieces) a.tpr *= 2;
  a.rows = kMaxThreads / a.tpr < a.headdim ? kMaxThreads / a.tpr : a.headdim;  // headdim: 32, 64 or 128
  a.row_blocks = a.headdim / a.rows;
  const int threads = a.rows * a.tpr;

  // Batch rows are split over blocks so that the SMs get equal shares: the cost of a split is the
  // blocks an SM runs (rounded up) times the stages of a block, plus one stage for a block's start.
  DeviceLimits dev;
  QMAMBA_TRY(device_limits(where, &dev));
  const int64_t head_blocks = int64_t(a.nheads) * a.row_blocks;
  const int64_t sms = dev.sm_count > 0 ? dev.sm_count : 1;
  const int rows_a_stage = vec == 1 ? stage_rows<1>() : stage_rows<16>();
  int64_t best_bpb = batch, best_cost = -1;
  const int64_t max_splits = batch < 64 ? batch : 64;
  for (int64_t splits = 1; splits <= max_splits; ++splits) {
    int64_t bpb = (batch + splits - 1) / splits;
    bpb = (bpb + rows_a_stage - 1) / rows_a_stage * rows_a_stage;
    const int64_t used = (batch + bpb - 1) / bpb;
    const int64_t per_sm = (head_blocks * used + sms - 1) / sms;
    const int64_t cost = per_sm * ((bpb + rows_a_stage - 1) / rows_a_stage + 1);
    if (best_cost < 0 || cost < best_cost) {
      best_cost = cost;
      best_bpb = bpb;
    }
  }
  a.batch = batch;
  a.batch_per_block = best_bpb;
  const int64_t splits = (batch + best_bpb - 1) / best_bpb;
  const int64_t blocks = head_blocks * splits;
  if (blocks > 0x7fffffff) return fail(QMAMBA_ERR_BAD_SIZE, "%s: batch * nheads too large for one launch", where);
  const int smem_floats = vec == 16 ? decode_smem_floats<16>(n)
                          : vec == 8 ? decode_smem_floats<8>(n)
                          : vec == 4 ? decode_smem_floats<4>(n) : decode_smem_floats<1>(n);
  const size_t smem = sizeof(float) * static_cast<size_t>(smem_floats);
  const bool st = a.state != nullptr;
  DecodeKernel kernel = st ? quant_ssd_decode_kernel<1, 8, true> : quant_ssd_decode_kernel<1, 8, false>;
  if (vec == 16) {
    kernel = st ? quant_ssd_decode_kernel<16, 1, true> : quant_ssd_decode_kernel<16, 1, false>;
  } else if (vec == 8) {
    kernel = st ? quant_ssd_decode_kernel<8, 1, true> : quant_ssd_decode_kernel<8, 1, false>;
  } else if (vec == 4) {
    kernel = st ? quant_ssd_decode_kernel<4, 2, true> : quant_ssd_decode_kernel<4, 2, false>;
  }
  launch_dependent(dev, kernel, dim3(static_cast<unsigned>(blocks)), dim3(threads), smem, stream, a);
  return check_launch(where);
}
