// QmambaW8A8Linear (docs/tensorrt.md): the W8A8 linear of a decode step as one matrix-vector kernel,
// with the activation's quantization (and optionally the RMSNorm before it) done in the kernel.
//
// At decode the few activation rows are tiny and the int8 weight matrix is the whole memory traffic,
// so the kernel is built to stream the weights once at full bandwidth. A warp takes one weight row (or
// a segment of up to 256 16-byte chunks of a long row) at a time, all of its loads issued together
// (CPL chunks per lane), and issues the next row's loads before multiplying the current one (dp4a), so
// that each SM has tens of KB in flight. The grid is one wave of resident blocks whose warps stride over
// the rows, the rows spread evenly over the warps: a second, partial wave of blocks, or blocks that
// each paid the activation's quantization for a few rows, had left the memory idle for much of the
// kernel (the first version read 27 MB at under half the copy bandwidth on the H200).
// The quantized activations sit in shared memory, packed 4 per word like the weights. Each block
// quantizes the activation rows itself (a few KB read from L2) rather than a second kernel doing it
// once: at batch 1 a launch costs more than the repeated work. Before that, each warp issues its first
// row's loads, and the kernel waits for the one that makes x only then (launch.cuh), so memory is busy
// from the kernel's start.
//
// With three or more activation rows a second kernel runs on compute capability 8.0 and later
// (w8a8_linear_mma_kernel, below): tensor cores multiply a tile of weight rows by all the rows at once, where
// the dp4a kernel's per-row multiplications had set its time (the batch-8 step 588 us against 760 with the
// kernel it replaced, which staged each warp's rows in shared memory by bulk copy; docs/kernels.md). At
// batch 1 and 2 the register kernel is the faster one and stays.
//
// With norm_group the RMSNorm is taken over groups of that many channels (the gated norm of out_proj's
// input, whose weight and rms fold in here the same way).
//
// Exactness: the integer sums are exact; float(acc) * out_scale (+ residual) is rounded as ONNX
// Runtime rounds Mul then Add (no FMA). Q is docs/ops.md's (true division, half to even, saturate).
// The RMSNorm sums squares in another order than ONNX Runtime's ReduceMean, so a normed activation
// may land on the other side of a rounding tie (1 LSB, rarely), as with TensorRT's own ReduceMean.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <map>
#include <mutex>
#include <utility>

#include "checks.h"
#include "common.cuh"
#include "launch.cuh"

namespace qmamba {
namespace {

// Warps a block at most. Every block quantizes the whole activation, so the launcher makes one block an
// SM (three blocks of 8 warps had done that pass three times on each SM), with the warps its rows need:
// up to 24 where the kernel fits 80 registers a thread (ptxas -v, sm_90: a row segment of up to 5
// chunks a lane and up to 2 activation rows, or 4 rows at 4 chunks, or 8 at 1), else up to 16 (128).
constexpr int kMaxWarps = 24;
template <int MT, int CPL>
constexpr int max_warps() {
  return (MT <= 2 && CPL <= 5) || (MT == 4 && CPL <= 4) || CPL == 1 ? kMaxWarps : 16;
}
constexpr int kMaxChunksPerLane = 8;            // 16-byte chunks per lane of one row segment (CPL)
constexpr int kMaxRowsPerPass = 8;              // activation rows per pass over the weights
constexpr int kMaxNormGroups = 16;              // RMSNorm groups per row (the gated norm's ngroups)
// Dynamic shared memory for the activation rows: the 48 KB a block gets without opting in to more,
// less room for the kernel's own small arrays.
constexpr size_t kSharedLimit = 46 * 1024;

struct LinearArgs {
  const float* __restrict__ x;
  const int32_t* __restrict__ weight;
  const float* __restrict__ out_scale;
  const float* __restrict__ input_scale;
  const float* __restrict__ norm_weight;
  const float* residual;  // may alias y
  float* y;
  int K, N, words;        // words per weight row: ceil(K / 4)
  int norm;
  float eps;
  int norm_group;         // channels per RMSNorm group: K, or a divisor of K
  int64_t rows;
  int chunks;             // chunks (VEC words) per weight row
  int segs;               // segments of 32 * CPL chunks per row
  int vec_x;              // x rows and norm_weight readable as float4 (K % 4 == 0, aligned)
  int one_row;            // one activation row, one norm group, float4 reads, kQuantBatch words a thread at most
  int block_rows;         // tensor-core kernel: weight rows a block takes at most (its shared sums' stride)
};

template <int VEC>
__device__ __forceinline__ void load_words(const int32_t* __restrict__ p, int* w) {
  if constexpr (VEC == 4) {
    const int4 v = __ldg(reinterpret_cast<const int4*>(p));
    w[0] = v.x;
    w[1] = v.y;
    w[2] = v.z;
    w[3] = v.w;
  } else {
    w[0] = __ldg(p);
  }
}

// VEC words of shared memory (16-byte aligned when VEC == 4).
template <int VEC>
__device__ __forceinline__ void load_words_shared(const int32_t* p, int* w) {
  if constexpr (VEC == 4) {
    const int4 v = *reinterpret_cast<const int4*>(p);
    w[0] = v.x;
    w[1] = v.y;
    w[2] = v.z;
    w[3] = v.w;
  } else {
    w[0] = *p;
  }
}

// The weights of row n, segment seg: chunks seg * 32 * CPL + u * 32 + lane (u < CPL); zeros past the end.
template <int VEC, int CPL>
__device__ __forceinline__ void load_unit(const LinearArgs& a, int n, int seg, int lane, int (&w)[CPL][VEC]) {
  const int32_t* row = a.weight + static_cast<int64_t>(n) * a.words;
#pragma unroll
  for (int u = 0; u < CPL; ++u) {
    const int c = (seg * CPL + u) * 32 + lane;
    if (c < a.chunks) {
      load_words<VEC>(row + c * VEC, w[u]);
    } else {
#pragma unroll
      for (int v = 0; v < VEC; ++v) w[u][v] = 0;
    }
  }
}

// Sum over the block of each row's partial sum (MT rows) into out[0 .. MT-1], visible to all threads.
template <int MT>
__device__ __forceinline__ void block_sums(const float (&part)[MT], float (*scratch)[MT], float* out) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    float v = part[m];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (lane == 0) scratch[warp][m] = v;
  }
  __syncthreads();
  if (threadIdx.x < MT) {
    float s = 0.0f;
    for (int w = 0; w < warps; ++w) s = __fadd_rn(s, scratch[w][threadIdx.x]);
    out[threadIdx.x] = s;
  }
  __syncthreads();
}

// x[k .. k+3] of one row (k a multiple of 4): one 16-byte load when the row allows it, zeros past K.
__device__ __forceinline__ float4 load_x4(const LinearArgs& a, const float* p, int k) {
  if (a.vec_x) return __ldg(reinterpret_cast<const float4*>(p + k));
  float v[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) v[j] = k + j < a.K ? __ldg(p + k + j) : 0.0f;
  return make_float4(v[0], v[1], v[2], v[3]);
}

// acc + the squares of v's four values, in order (both activation paths sum squares this way).
__device__ __forceinline__ float add_squares(float acc, float4 v) {
  acc = __fadd_rn(acc, __fmul_rn(v.x, v.x));
  acc = __fadd_rn(acc, __fmul_rn(v.y, v.y));
  acc = __fadd_rn(acc, __fmul_rn(v.z, v.z));
  return __fadd_rn(acc, __fmul_rn(v.w, v.w));
}

// 1 / sqrt(sum / count + eps) in the ONNX graph's order (ReduceMean, Add, Sqrt, Reciprocal).
__device__ __forceinline__ float inv_rms_of(float sum, int count, float eps) {
  return __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(__fdiv_rn(sum, static_cast<float>(count)), eps)));
}

// Q(v) (quantize_with_inverse) as byte j of a word of the packed activation.
__device__ __forceinline__ uint32_t quantized_byte(float v, float s_in, float inv_s, int j) {
  return static_cast<uint32_t>(static_cast<uint8_t>(quantize_with_inverse(v, s_in, inv_s))) << (8 * j);
}

// Loads per thread issued together in each round trip of the activation's two passes: each pass is then a
// few L2 round trips, not one per element or per row (the passes run while the first weight loads are in
// flight). With several rows the rows' loads go out together: a pass over 8 rows of out_proj's 5120
// channels had taken some 20 us of the 28 a batch-8 out_proj took on the H200.
constexpr int kLoadBatch = 4;
constexpr int kQuantBatch = 2;  // the one-row quantizing pass, which holds x and the norm weight

// Q(v) of the activation rows m0 .. m0 + MT - 1 into shared memory, 4 int8 per word (zeros past K
// and past the last row); with norm, v is the row's RMSNorm over each norm group of channels in the
// ONNX graph's order: ((x * (1 / sqrt(sum_group(x^2) / group + eps))) * norm_weight).
// s_in is input_scale and inv_s = 1 / s_in (quantize_with_inverse: a division only near a tie), taken by the
// caller before it waits for x: a load after the wait, cold in L2, held back every load of x behind it.
template <int MT>
__device__ void quantize_rows(const LinearArgs& a, int64_t m0, int32_t* xs, float s_in, float inv_s) {
  __shared__ float scratch[kMaxWarps][MT];
  __shared__ float inv_rms[kMaxNormGroups * MT];  // [group][row]
  const int step = blockDim.x;
  if (a.norm) {
    // Quads of a row a round trip takes: MT * kSumQuads loads in flight. Each row's squares are summed in
    // the order of its quads (q = threadIdx.x, + step, ...) whatever the batching.
    constexpr int kSumQuads = MT >= kLoadBatch ? 1 : kLoadBatch / MT;
    const int groups = a.K / a.norm_group;
    const int quads = (a.norm_group + 3) / 4;  // per group; a group not a multiple of 4 reads element-wise
    const bool vec = a.vec_x && a.norm_group % 4 == 0;
    for (int g = 0; g < groups; ++g) {
      float part[MT];
#pragma unroll
      for (int m = 0; m < MT; ++m) part[m] = 0.0f;
      for (int q0 = threadIdx.x; q0 < quads; q0 += kSumQuads * step) {
        float4 v[MT][kSumQuads];
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          const float* xr = a.x + (m0 + m) * a.K + g * a.norm_group;
#pragma unroll
          for (int b = 0; b < kSumQuads; ++b) {
            const int q = q0 + b * step;
            v[m][b] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (q >= quads || m0 + m >= a.rows) continue;  // rows past the last sum to 0
            if (vec) {
              v[m][b] = __ldg(reinterpret_cast<const float4*>(xr) + q);
            } else {
              float e[4];
#pragma unroll
              for (int j = 0; j < 4; ++j) e[j] = 4 * q + j < a.norm_group ? __ldg(xr + 4 * q + j) : 0.0f;
              v[m][b] = make_float4(e[0], e[1], e[2], e[3]);
            }
          }
        }
#pragma unroll
        for (int m = 0; m < MT; ++m)
#pragma unroll
          for (int b = 0; b < kSumQuads; ++b) part[m] = add_squares(part[m], v[m][b]);
      }
      block_sums<MT>(part, scratch, inv_rms + g * MT);  // sums of squares, turned into 1 / rms below
    }
    for (int idx = threadIdx.x; idx < groups * MT; idx += step) {
      inv_rms[idx] = inv_rms_of(inv_rms[idx], a.norm_group, a.eps);
    }
    __syncthreads();
  }
  // This thread's words w = threadIdx.x, + step, ... of every row: a word's norm weight is loaded once for
  // all rows, and each element's norm group found by stepping on from the previous word's (w only grows),
  // without integer division, which by a runtime value takes tens of instructions (every block runs this).
  constexpr int kWords = MT >= 4 ? 1 : kQuantBatch;  // words a round trip: MT * kWords loads of x in flight
  int g = 0, g_end = a.norm_group;
  for (int w0 = threadIdx.x; w0 < a.words; w0 += kWords * step) {
    float4 xv[kWords][MT], nv[kWords];
#pragma unroll
    for (int i = 0; i < kWords; ++i) {
      const int w = w0 + i * step;
      nv[i] = w < a.words && a.norm ? load_x4(a, a.norm_weight, w * 4) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        xv[i][m] = w < a.words && m0 + m < a.rows ? load_x4(a, a.x + (m0 + m) * a.K, w * 4)
                                                  : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      }
    }
#pragma unroll
    for (int i = 0; i < kWords; ++i) {
      const int w = w0 + i * step;
      if (w >= a.words) break;
      const float n4[4] = {nv[i].x, nv[i].y, nv[i].z, nv[i].w};
      uint32_t packed[MT];
#pragma unroll
      for (int m = 0; m < MT; ++m) packed[m] = 0;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int k = w * 4 + j;
        if (k >= a.K) break;
        if (a.norm) {
          while (k >= g_end) {
            ++g;
            g_end += a.norm_group;
          }
        }
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          if (m0 + m >= a.rows) continue;  // rows past the last are zeros
          const float x4[4] = {xv[i][m].x, xv[i][m].y, xv[i][m].z, xv[i][m].w};
          const float v = a.norm ? __fmul_rn(__fmul_rn(x4[j], inv_rms[g * MT + m]), n4[j]) : x4[j];
          packed[m] |= quantized_byte(v, s_in, inv_s, j);
        }
      }
#pragma unroll
      for (int m = 0; m < MT; ++m) xs[m * a.words + w] = static_cast<int32_t>(packed[m]);
    }
  }
  __syncthreads();
}

// This thread's words (threadIdx.x + b * blockDim.x) of a row of x or of the norm weight, zeros past the end.
__device__ __forceinline__ void load_share(const LinearArgs& a, const float* row, float4 (&v)[kQuantBatch]) {
#pragma unroll
  for (int b = 0; b < kQuantBatch; ++b) {
    const int w = threadIdx.x + b * blockDim.x;
    v[b] = w < a.words ? __ldg(reinterpret_cast<const float4*>(row) + w) : make_float4(0.f, 0.f, 0.f, 0.f);
  }
}

// One activation row normed over one group (batch 1: in_proj's RMSNorm, out_proj's gated norm at
// ngroups 1, the final norm): each thread keeps its words of x in registers from the sum of squares to
// the quantization (one round trip to L2, not two), and its words of the norm weight `nw`, a constant cold
// in L2, are loaded by the caller before the wait for x, so that no load after the wait goes to DRAM.
__device__ void quantize_one_row(const LinearArgs& a, int64_t m0, int32_t* xs, float s_in, float inv_s,
                                 const float4 (&nw)[kQuantBatch]) {
  __shared__ float scratch[kMaxWarps][1];
  __shared__ float sum_sq;
  float4 xv[kQuantBatch];
  float part[1] = {0.0f};
  load_share(a, a.x + m0 * a.K, xv);
#pragma unroll
  for (int b = 0; b < kQuantBatch; ++b) part[0] = add_squares(part[0], xv[b]);
  block_sums<1>(part, scratch, &sum_sq);
  // Every thread takes 1 / rms itself (the same operations on the same sum): no further barrier.
  const float inv_rms = inv_rms_of(sum_sq, a.K, a.eps);
#pragma unroll
  for (int b = 0; b < kQuantBatch; ++b) {
    const int w = threadIdx.x + b * blockDim.x;
    if (w >= a.words) break;
    const float x4[4] = {xv[b].x, xv[b].y, xv[b].z, xv[b].w};
    const float n4[4] = {nw[b].x, nw[b].y, nw[b].z, nw[b].w};
    uint32_t packed = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float v = __fmul_rn(__fmul_rn(x4[j], inv_rms), n4[j]);
      packed |= quantized_byte(v, s_in, inv_s, j);
    }
    xs[w] = static_cast<int32_t>(packed);
  }
  __syncthreads();
}

// residual[row m0 + lane, n] for the lane that writes that output (lane m writes row m0 + m), else 0.
// The residual may alias y: each output is read and written by its one lane, the read first.
template <int MT>
__device__ __forceinline__ float residual_of(const LinearArgs& a, int64_t m0, int lane, int n) {
  return a.residual && lane < MT && m0 + lane < a.rows ? a.residual[(m0 + lane) * a.N + n] : 0.0f;
}

// Output row n of each activation row m0 + m from the warp's partial sums acc[m]: the warp's sum, times
// out_scale (+ the residual), stored by lane m (all lanes hold the sum).
template <int MT>
__device__ __forceinline__ void store_outputs(const LinearArgs& a, const int (&acc)[MT], int64_t m0, int lane, int n,
                                              float scale, float res) {
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    int s = acc[m];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    const int64_t row = m0 + m;
    if (lane == m && row < a.rows) {
      const float v = __fmul_rn(static_cast<float>(s), scale);
      a.y[row * a.N + n] = a.residual ? __fadd_rn(res, v) : v;
    }
  }
}

template <int MT, int VEC, int CPL>
__global__ void __launch_bounds__(max_warps<MT, CPL>() * 32, 1) w8a8_linear_kernel(LinearArgs a) {
  extern __shared__ __align__(16) int32_t xs[];  // [MT][words]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * MT;
  const int warps = blockDim.x >> 5;
  const int first = blockIdx.x * warps + warp;  // this warp's rows: first, first + stride, ...
  const int stride = gridDim.x * warps;
  const int units = (first < a.N ? (a.N - 1 - first) / stride + 1 : 0) * a.segs;

  // Before waiting for the kernel that makes x, what depends on no earlier kernel, in the order the work
  // after the wait needs it: input_scale and the norm weight (the activation pass), then this warp's first
  // row (its out_scale and first loads). A small load issued behind the weights waits for them: on the
  // H200 the blocks left the wait up to 3.3 us apart when input_scale (whose reciprocal is taken before
  // the wait) came after the weights and their prefetch into L2. Without that prefetch (each warp's rows
  // requested into L2 at its start) the linears are faster still: in_proj alone 9.4 us against 10.6
  // (docs/kernels.md).
  const float s_in = __ldg(a.input_scale);
  float4 nw[kQuantBatch];  // this thread's words of the norm weight (the one-row path)
  if (MT == 1 && a.one_row) load_share(a, a.norm_weight, nw);
  int w[CPL][VEC];
  float scale = 0.0f;  // out_scale of the row in progress: a constant, loaded with the row's first unit
  if (units > 0) {
    scale = __ldg(a.out_scale + first);
    load_unit<VEC, CPL>(a, first, 0, lane, w);
  }
  const float inv_s = __fdiv_rn(1.0f, s_in);
  pdl_launch_dependents();
  pdl_wait();
  // The residual (an earlier kernel's output) of the first row, before the activation pass: no row's
  // tail then waits on memory between its reduction and its store.
  float res = units > 0 ? residual_of<MT>(a, m0, lane, first) : 0.0f;
  if (MT == 1 && a.one_row) {
    quantize_one_row(a, m0, xs, s_in, inv_s, nw);
  } else {
    quantize_rows<MT>(a, m0, xs, s_in, inv_s);
  }

  int acc[MT];
#pragma unroll
  for (int m = 0; m < MT; ++m) acc[m] = 0;
  for (int k = 0; k < units; ++k) {
    const int row_k = a.segs == 1 ? k : k / a.segs;
    const int seg = k - row_k * a.segs;
    const int n = first + row_k * stride;
    int next[CPL][VEC];
    float scale_next = scale, res_next = res;
    if (k + 1 < units) {
      const int row_next = a.segs == 1 ? k + 1 : (k + 1) / a.segs;
      const int seg_next = k + 1 - row_next * a.segs;
      load_unit<VEC, CPL>(a, first + row_next * stride, seg_next, lane, next);
      if (seg_next == 0) {  // a new row: its scale and residual go out with its first weights
        scale_next = __ldg(a.out_scale + first + row_next * stride);
        res_next = residual_of<MT>(a, m0, lane, first + row_next * stride);
      }
    }
#pragma unroll
    for (int u = 0; u < CPL; ++u) {
      const int c = (seg * CPL + u) * 32 + lane;
      if (c >= a.chunks) break;
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        int xw[VEC];
        load_words_shared<VEC>(xs + m * a.words + c * VEC, xw);
#pragma unroll
        for (int v = 0; v < VEC; ++v) acc[m] = __dp4a(w[u][v], xw[v], acc[m]);
      }
    }
    if (seg == a.segs - 1) {
      store_outputs<MT>(a, acc, m0, lane, n, scale, res);
#pragma unroll
      for (int m = 0; m < MT; ++m) acc[m] = 0;
      scale = scale_next;
      res = res_next;
    }
#pragma unroll
    for (int u = 0; u < CPL; ++u)
#pragma unroll
      for (int v = 0; v < VEC; ++v) w[u][v] = next[u][v];
  }
}

// ---- The tensor-core kernel (sm_80 and later): three or more activation rows ----
//
// The dp4a kernels multiply each weight word by every activation row's word, fetched from shared memory one row at
// a time: with 8 rows that work, not the weights' traffic, sets their time (the batch-8 2.7b step took 4.3 times
// the batch-1 step on the H200 for the same bytes). Here one mma.sync m16n8k32 (s8 x s8 -> s32) multiplies 32 k of
// all activation rows at once: the activation rows are A's rows (those past MT zero), a tile of 8 weight rows B's
// columns. Each load of a lane is 16 contiguous bytes of one weight row (4 lanes a row: 64 contiguous bytes; a
// step is two loads a lane, 128 bytes a row), and feeds two k-steps of 32; the activation's words are taken from
// shared memory in the same order of k, and a sum does not depend on its order, so the results are the dp4a
// kernels' bit for bit. A block takes a contiguous range of tiles and its warps an even share of the range's
// (tile, step) pairs, so that a tile's K is split across warps where a block has few tiles (a 2.7b out_proj: 320
// tiles for 132 SMs); each warp adds its partial sums into the block's shared sums (integer atomics: exact in any
// order), and after a barrier the block's threads apply out_scale and the residual.
constexpr int kTileRows = 8;          // weight rows of a tile: the n of m16n8k32
constexpr int kStepChunks = 8;        // 16-byte chunks of a weight row a step takes (two a lane, 4 lanes a row)
constexpr int kStepsAhead = 4;        // steps a lane has in flight (8 loads of 16 bytes)
constexpr int kMmaWarps = 16;
constexpr int kEpilogueItems = 2;     // outputs a thread's residual is loaded for right after the wait
static_assert(kEpilogueItems == 2, "the epilogue picks res[0] / res[1] by name (no local memory)");

// c += A (rows: this lane's activation row, a0 / a2 its two k-quarters; rows 8-15 zero) x B (b0 / b1).
__device__ __forceinline__ void mma_s8(int (&c)[4], int a0, int a2, int b0, int b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
               "{%0, %1, %2, %3};"
               : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
               : "r"(a0), "r"(0), "r"(a2), "r"(0), "r"(b0), "r"(b1));
#endif
}

// Chunk `chunk` (16 bytes) of weight row `row`, zeros past the matrix.
__device__ __forceinline__ int4 weight_chunk(const LinearArgs& a, int row, int chunk) {
  if (row < a.N && chunk < a.chunks) {
    return __ldg(reinterpret_cast<const int4*>(a.weight + static_cast<int64_t>(row) * a.words) + chunk);
  }
  return make_int4(0, 0, 0, 0);
}

// A (tile, step) cursor over a block's range, advanced without division.
struct TileCursor {
  int tile, step;
  __device__ __forceinline__ bool advance(int steps_per_tile) {  // true where a tile ended
    if (++step < steps_per_tile) return false;
    step = 0;
    ++tile;
    return true;
  }
};

template <int MT>
__global__ void __launch_bounds__(kMmaWarps * 32, 1) w8a8_linear_mma_kernel(LinearArgs a) {
  static_assert(MT <= kTileRows, "the activation rows of a pass are A's first 8 rows");
  // [MT][words] the packed activation, [MT][block_rows] the sums, [block_rows] out_scale.
  extern __shared__ __align__(16) int32_t mma_smem[];
  int32_t* xs = mma_smem;
  int32_t* sums = xs + MT * a.words;
  float* scales = reinterpret_cast<float*>(sums + MT * a.block_rows);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int g = lane >> 2, q = lane & 3;  // mma's groupID (A's row, B's column) and thread in group
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * MT;
  const int tiles = (a.N + kTileRows - 1) / kTileRows;
  const int tile0 = static_cast<int>(static_cast<int64_t>(tiles) * blockIdx.x / gridDim.x);
  const int tile1 = static_cast<int>(static_cast<int64_t>(tiles) * (blockIdx.x + 1) / gridDim.x);
  const int n0 = tile0 * kTileRows;
  const int block_n = min(a.N, tile1 * kTileRows) - n0;
  const int steps_per_tile = (a.chunks + kStepChunks - 1) / kStepChunks;
  const int64_t total = static_cast<int64_t>(tile1 - tile0) * steps_per_tile;
  const int begin = static_cast<int>(total * warp / warps);
  const int count = static_cast<int>(total * (warp + 1) / warps) - begin;

  // Before the wait: input_scale, the block's out_scale and zeroed sums, then each lane's first steps.
  const float s_in = __ldg(a.input_scale);
  for (int i = threadIdx.x; i < block_n; i += blockDim.x) scales[i] = __ldg(a.out_scale + n0 + i);
  for (int i = threadIdx.x; i < MT * a.block_rows; i += blockDim.x) sums[i] = 0;
  TileCursor load{tile0 + begin / steps_per_tile, begin % steps_per_tile};
  TileCursor mul = load;
  int4 buf[kStepsAhead][2];
#pragma unroll
  for (int u = 0; u < kStepsAhead; ++u) {
    const int row = load.tile * kTileRows + g, c = load.step * kStepChunks + q;
    buf[u][0] = u < count ? weight_chunk(a, row, c) : make_int4(0, 0, 0, 0);
    buf[u][1] = u < count ? weight_chunk(a, row, c + 4) : make_int4(0, 0, 0, 0);
    if (u < count) load.advance(steps_per_tile);
  }
  const float inv_s = __fdiv_rn(1.0f, s_in);
  pdl_launch_dependents();
  pdl_wait();
  // The residual (an earlier kernel's output) of this thread's first outputs, before the activation pass.
  float res[kEpilogueItems];
#pragma unroll
  for (int e = 0; e < kEpilogueItems; ++e) {
    const int i = threadIdx.x + e * blockDim.x, m = i / block_n, r = i - m * block_n;
    res[e] = a.residual && m < MT && m0 + m < a.rows ? a.residual[(m0 + m) * a.N + n0 + r] : 0.0f;
  }
  quantize_rows<MT>(a, m0, xs, s_in, inv_s);

  int acc[4] = {0, 0, 0, 0};
  for (int j0 = 0; j0 < count; j0 += kStepsAhead) {
#pragma unroll
    for (int u = 0; u < kStepsAhead; ++u) {
      if (j0 + u >= count) break;  // warp-uniform: mma.sync needs the whole warp
      const int4 w0 = buf[u][0], w1 = buf[u][1];
      if (j0 + u + kStepsAhead < count) {
        const int row = load.tile * kTileRows + g, c = load.step * kStepChunks + q;
        buf[u][0] = weight_chunk(a, row, c);
        buf[u][1] = weight_chunk(a, row, c + 4);
        load.advance(steps_per_tile);
      }
      const int c = mul.step * kStepChunks + q;
      int4 x0 = make_int4(0, 0, 0, 0), x1 = x0;
      if (g < MT) {
        const int4* xr = reinterpret_cast<const int4*>(xs + g * a.words);
        if (c < a.chunks) x0 = xr[c];
        if (c + 4 < a.chunks) x1 = xr[c + 4];
      }
      mma_s8(acc, x0.x, x0.y, w0.x, w0.y);
      mma_s8(acc, x0.z, x0.w, w0.z, w0.w);
      mma_s8(acc, x1.x, x1.y, w1.x, w1.y);
      mma_s8(acc, x1.z, x1.w, w1.z, w1.w);
      const int tile = mul.tile;
      if (mul.advance(steps_per_tile) || j0 + u + 1 == count) {
        // acc[0], acc[1]: activation row g, weight rows 2q and 2q + 1 of the tile (acc[2], acc[3]: A's zero rows)
        if (g < MT) {
          const int r = (tile - tile0) * kTileRows + 2 * q;
          atomicAdd(sums + g * a.block_rows + r, acc[0]);
          atomicAdd(sums + g * a.block_rows + r + 1, acc[1]);
        }
        acc[0] = acc[1] = 0;
      }
    }
  }
  __syncthreads();
  // Output (m0 + m, n0 + r) for i = m * block_n + r: neighbouring threads store neighbouring outputs.
  for (int e = 0, i = threadIdx.x; i < MT * block_n; ++e, i += blockDim.x) {
    const int m = i / block_n, r = i - m * block_n;
    const int64_t row = m0 + m;
    if (row >= a.rows) continue;
    const float v = __fmul_rn(static_cast<float>(sums[m * a.block_rows + r]), scales[r]);
    float* out = a.y + row * a.N + n0 + r;
    if (!a.residual) {
      *out = v;
    } else {
      const float rv = e == 0 ? res[0] : e == 1 ? res[1] : a.residual[row * a.N + n0 + r];
      *out = __fadd_rn(rv, v);
    }
  }
}

// One wave: as many warps as `blocks` resident blocks of up to `max_warps` hold, the n rows spread evenly over
// them, in as many blocks as the GPU holds (each SM's memory pipe busy), each with the warps that spread needs.
struct RowSpread {
  int64_t rows_per_warp, blocks;
  int warps_per_block;
};
inline RowSpread spread_rows(int64_t n, int64_t resident_blocks, int max_warps) {
  RowSpread r;
  r.rows_per_warp = (n + resident_blocks * max_warps - 1) / (resident_blocks * max_warps);
  const int64_t warps = (n + r.rows_per_warp - 1) / r.rows_per_warp;
  r.blocks = warps < resident_blocks ? warps : resident_blocks;
  r.warps_per_block = static_cast<int>((warps + r.blocks - 1) / r.blocks);
  return r;
}

// Dynamic shared memory the tensor-core kernel `kernel` may have a block on this device (the opt-in limit less
// its static arrays), opted in once per device and kernel; 0 where that failed (said once on stderr: the dp4a
// kernel runs).
size_t shared_room(const DeviceLimits& dev, const void* kernel) {
  static std::mutex mutex;
  static std::map<std::pair<int, const void*>, size_t> room;
  std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_pair(dev.device, kernel);
  const auto it = room.find(key);
  if (it != room.end()) return it->second;
  cudaFuncAttributes fa{};
  cudaError_t e = cudaFuncGetAttributes(&fa, kernel);
  size_t r = 0;
  if (e == cudaSuccess) {
    r = static_cast<size_t>(dev.max_smem_optin) - fa.sharedSizeBytes;
    e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(r));
  }
  if (e != cudaSuccess) {
    cudaGetLastError();
    fprintf(stderr, "qmamba: the tensor-core W8A8 linear cannot opt in to shared memory on device %d (%s); the "
            "dp4a kernel runs\n", dev.device, cudaGetErrorString(e));
    r = 0;
  }
  room.emplace(key, r);
  return r;
}

// The tensor-core kernel where it applies (its caller passes rows of whole, aligned 16-byte chunks): compute
// capability 8.0 or later, a pass of 4 or 8 activation rows, and QMAMBA_MMA not "0" (the dp4a kernel then
// runs: for measuring, and the tests of both). Tensor cores from 2 rows were slower on the H200 (the batch-2
// step 311 us against 256). One block an SM (or a tile), the tiles spread evenly. Returns whether it launched.
template <int MT>
bool launch_mma(const DeviceLimits& dev, LinearArgs a, cudaStream_t stream) {
  static_assert(MT >= 4, "up to two activation rows take the register kernel");
  static const bool off = [] {
    const char* v = getenv("QMAMBA_MMA");
    return v != nullptr && strcmp(v, "0") == 0;
  }();
  if (off || dev.cc_major < 8) return false;
  const int64_t tiles = (a.N + kTileRows - 1) / kTileRows;
  const int64_t blocks = tiles < dev.sm_count ? tiles : dev.sm_count;
  a.block_rows = static_cast<int>((tiles + blocks - 1) / blocks) * kTileRows;
  const size_t smem = (static_cast<size_t>(MT) * (a.words + a.block_rows) + a.block_rows) * sizeof(int32_t);
  const auto kernel = w8a8_linear_mma_kernel<MT>;
  if (smem > 48 * 1024) {
    const size_t room = shared_room(dev, reinterpret_cast<const void*>(kernel));
    if (smem > room) {
      static std::once_flag said;
      std::call_once(said, [&] {
        fprintf(stderr, "qmamba: the tensor-core W8A8 linear needs %zu bytes of shared memory a block for K = %d, "
                "N = %d (device %d allows %zu); the dp4a kernel runs\n", smem, a.K, a.N, dev.device, room);
      });
      return false;
    }
  }
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>((a.rows + MT - 1) / MT));
  launch_dependent(dev, kernel, grid, dim3(kMmaWarps * 32), smem, stream, a);
  return true;
}

template <int MT, int VEC, int CPL>
int launch(const char* where, const DeviceLimits& dev, LinearArgs a, cudaStream_t stream) {
  const auto kernel = w8a8_linear_kernel<MT, VEC, CPL>;
  constexpr int kWarps = max_warps<MT, CPL>();
  const size_t smem = static_cast<size_t>(MT) * a.words * sizeof(int32_t);
  // Resident blocks per SM, asked once per device and shared memory size: a direct enqueue (no CUDA
  // graph) pays the query on the host at every call otherwise.
  static std::mutex mutex;
  static std::map<std::pair<int, size_t>, int> occupancy;
  int per_sm = 0;
  {
    std::lock_guard<std::mutex> lock(mutex);
    const auto key = std::make_pair(dev.device, smem);
    const auto it = occupancy.find(key);
    if (it != occupancy.end()) {
      per_sm = it->second;
    } else {
      const cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kWarps * 32, smem);
      if (e != cudaSuccess || per_sm < 1) {
        return fail(QMAMBA_ERR_CUDA, "%s: no occupancy for the kernel: %s", where, cudaGetErrorString(e));
      }
      occupancy.emplace(key, per_sm);
    }
  }
  const RowSpread spread = spread_rows(a.N, int64_t(dev.sm_count) * per_sm, kWarps);
  const int64_t blocks = spread.blocks;
  const int warps_per_block = spread.warps_per_block;
  a.one_row = MT == 1 && a.norm && a.norm_group == a.K && a.vec_x && a.words <= kQuantBatch * warps_per_block * 32;
  a.segs = (a.chunks + 32 * CPL - 1) / (32 * CPL);
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>((a.rows + MT - 1) / MT));
  launch_dependent(dev, kernel, grid, dim3(warps_per_block * 32), smem, stream, a);
  return QMAMBA_OK;
}

// Chunks per lane of one row segment: the fewest that cover the row in the fewest segments.
template <int MT, int VEC>
int launch_chunks(const char* where, const DeviceLimits& dev, const LinearArgs& a, cudaStream_t stream) {
  const int segs = (a.chunks + 32 * kMaxChunksPerLane - 1) / (32 * kMaxChunksPerLane);
  const int cpl = (a.chunks + 32 * segs - 1) / (32 * segs);
  if (cpl <= 1) return launch<MT, VEC, 1>(where, dev, a, stream);
  if (cpl <= 2) return launch<MT, VEC, 2>(where, dev, a, stream);
  if (cpl <= 4) return launch<MT, VEC, 4>(where, dev, a, stream);
  if (cpl <= 5) return launch<MT, VEC, 5>(where, dev, a, stream);
  return launch<MT, VEC, kMaxChunksPerLane>(where, dev, a, stream);
}

template <int VEC>
int launch_rows(const char* where, const DeviceLimits& dev, const LinearArgs& a, int mt, cudaStream_t stream) {
  if (VEC == 4) {
    switch (mt) {
      case 8: if (launch_mma<8>(dev, a, stream)) return QMAMBA_OK; break;
      case 4: if (launch_mma<4>(dev, a, stream)) return QMAMBA_OK; break;
      default: break;  // up to two activation rows: the register kernel
    }
  }
  switch (mt) {
    case 8: return launch_chunks<8, VEC>(where, dev, a, stream);
    case 4: return launch_chunks<4, VEC>(where, dev, a, stream);
    case 2: return launch_chunks<2, VEC>(where, dev, a, stream);
    default: return launch_chunks<1, VEC>(where, dev, a, stream);
  }
}

}  // namespace
}  // namespace qmamba

extern "C" int qmamba_w8a8_linear(const qmamba_linear_params* params, const qmamba_linear_tensors* t,
                                  int64_t rows, qmamba_stream_t stream) {
  using namespace qmamba;
  const char* where = "qmamba_w8a8_linear";
  QMAMBA_TRY(check_ptr(where, "params", params));
  QMAMBA_TRY(check_ptr(where, "tensors", t));
  // One activation row, 4 int8 per word, must fit the shared memory: K <= 47104.
  QMAMBA_TRY(check_range(where, "in_features", params->in_features, 1, static_cast<int64_t>(kSharedLimit)));
  QMAMBA_TRY(check_range(where, "out_features", params->out_features, 1, INT32_MAX));
  QMAMBA_TRY(check_range(where, "norm", params->norm, 0, 1));
  QMAMBA_TRY(check_range(where, "rows", rows, 0, int64_t{65535} * kMaxRowsPerPass));
  if (params->norm && !(params->eps >= 0.0f && isfinite(params->eps))) {
    return fail(QMAMBA_ERR_BAD_VALUE, "%s: eps must be finite and >= 0, got %g", where, params->eps);
  }
  const int norm_group = params->norm_group == 0 ? params->in_features : params->norm_group;
  if (params->norm && (norm_group < 1 || params->in_features % norm_group != 0 ||
                       params->in_features / norm_group > kMaxNormGroups)) {
    return fail(QMAMBA_ERR_BAD_VALUE, "%s: norm_group must be 0 or a divisor of in_features = %d giving at most %d "
                "groups, got %d", where, params->in_features, kMaxNormGroups, params->norm_group);
  }
  if (rows == 0) return ok();
  QMAMBA_TRY(check_ptr(where, "x", t->x));
  QMAMBA_TRY(check_ptr(where, "weight", t->weight));
  QMAMBA_TRY(check_ptr(where, "out_scale", t->out_scale));
  QMAMBA_TRY(check_ptr(where, "input_scale", t->input_scale));
  QMAMBA_TRY(check_ptr(where, "y", t->y));
  if (params->norm) QMAMBA_TRY(check_ptr(where, "norm_weight", t->norm_weight));
  if (t->y == t->x) return fail(QMAMBA_ERR_BAD_VALUE, "%s: y must not alias x", where);

  LinearArgs a{};
  a.x = t->x; a.weight = t->weight; a.out_scale = t->out_scale; a.input_scale = t->input_scale;
  a.norm_weight = params->norm ? t->norm_weight : nullptr; a.residual = t->residual; a.y = t->y;
  a.K = params->in_features; a.N = params->out_features; a.words = (params->in_features + 3) / 4;
  a.norm = params->norm; a.eps = params->eps; a.norm_group = norm_group; a.rows = rows;
  a.vec_x = a.K % 4 == 0 && aligned16(a.x) && aligned16(a.norm_weight);
  // Rows per pass: enough for all rows (up to 8), as long as their int8 copy fits in shared memory.
  int mt = 1;
  while (mt < kMaxRowsPerPass && mt < rows &&
         static_cast<size_t>(2 * mt) * a.words * sizeof(int32_t) <= kSharedLimit) {
    mt *= 2;
  }
  if (static_cast<int64_t>((rows + mt - 1) / mt) > 65535) {
    return fail(QMAMBA_ERR_BAD_SIZE, "%s: %lld rows are more than one launch takes", where,
                static_cast<long long>(rows));
  }
  DeviceLimits dev{};
  QMAMBA_TRY(device_limits(where, &dev));
  const bool vec = a.words % 4 == 0 && aligned16(t->weight);
  a.chunks = vec ? a.words / 4 : a.words;
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  QMAMBA_TRY(vec ? launch_rows<4>(where, dev, a, mt, s) : launch_rows<1>(where, dev, a, mt, s));
  return check_launch(where);
}
