// QmambaW8A8Linear's activation pass, shared by its two kernels: each block quantizes the activation rows
// of its pass (optionally after their RMSNorm) into shared memory, 4 int8 per word like the weights.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include "common.cuh"
#include "normMath.cuh"
#include "w8a8Linear.cuh"

namespace qmamba {

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

// Q(v) (quantize_with_inverse; the division for a scale under the normal floats) as byte j of a word of the
// packed activation.
__device__ __forceinline__ uint32_t quantized_byte(float v, float s_in, float inv_s, int j) {
  return static_cast<uint32_t>(static_cast<uint8_t>(quantize_with_inverse(v, s_in, inv_s, needs_division(s_in))))
         << (8 * j);
}

// Loads per thread issued together in each round trip of the activation's two passes: each pass is then a
// few L2 round trips, not one per element or per row (the passes run while the first weight loads are in
// flight). With several rows the rows' loads go out together: one row's loads at a time make the pass over
// 8 rows of out_proj's 5120 channels most of a batch-8 out_proj's time.
constexpr int kLoadBatch = 4;
constexpr int kQuantBatch = 2;  // the one-row quantizing pass, which holds x and the norm weight

// Q(v) of the activation rows m0 .. m0 + MT - 1 into shared memory, 4 int8 per word (zeros past K
// and past the last row); with norm, v is the row's RMSNorm over each norm group of channels in the
// ONNX graph's order: ((x * (1 / sqrt(sum_group(x^2) / group + eps))) * norm_weight).
// s_in is input_scale and inv_s = 1 / s_in (quantize_with_inverse: a division only near a tie), taken by the
// caller before it waits for x: a load after the wait, cold in L2, held back every load of x behind it.
template <int MT>
static __device__ void quantize_rows(const LinearArgs& a, int64_t m0, int32_t* xs, float s_in, float inv_s) {
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
static __device__ void quantize_one_row(const LinearArgs& a, int64_t m0, int32_t* xs, float s_in, float inv_s,
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

}  // namespace qmamba
