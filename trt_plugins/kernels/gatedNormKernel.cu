// QmambaGatedNorm: a prefill Mamba2 mixer's gated RMSNorm and the Hadamard rotation after it, from QuantSSD's y
// and in_proj's z to the float input of out_proj's quantization (docs/kernels.md). In the prefill engine that
// region was some ten TensorRT layers a mixer, each a pass over [rows, K] in fp32 (the two rotation MatMuls the
// largest); here a row is read once and written once.
//
// A block of 256 threads takes one row at a time (the grid is the blocks the GPU holds at once, striding over
// the rows):
//  1. g = y * (z' * sigmoid(z')) into shared memory, y and z read in 16-byte chunks (without z, no gate: g = y;
//     with z_col_scale, z times its column's scale first: in_proj's output scale on its unscaled z piece, so
//     that no pass of the graph's own writes the scaled z); the block's next row is then prefetched into L2;
//  2. the RMS of each norm group: fewer groups than warps are summed by the whole block, one group after
//     another (2.7b's one group of 5120), more by a warp each (8b's 8 groups of 1024, or any number of small
//     ones); the row normed in place, (g * (1 / sqrt(sum / G + eps))) * weight;
//  3. V S_f1, the row as an [f0, f1] matrix V: each row of V through a fast Walsh-Hadamard transform
//     (butterflies, sums and differences only), then times fp32(1 / sqrt(f1)) once: S_f1's entries are that
//     value with a sign;
//  4. out = F_0^T Y, Y the row after step 3, F_0 staged in shared memory before the wait for y and z.
// Without a rotation step 2 writes out; a row too large for shared memory is normed in out itself.
//
// Arithmetic: fp32. z * z_col_scale[k]: one IEEE product, the graph's Mul. z' =
// DequantizeLinear(QuantizeLinear(z)): the IEEE division's rounding half to even, saturation, an IEEE product, as
// the graph (with z_scale > 0 the gate's factor z' * sigmoid(z') comes from a table of its 256 values, the index
// found by a reciprocal multiply with the division deciding near ties: the same bits);
// sigmoid = 1 / (1 + expf(-z')) with the accurate expf (TensorRT's Sigmoid differs in the last ulps);
// the gate's two products, the norm's sum of squares, / G, + eps, sqrt, reciprocal and two products each rounded
// on its own as the graph's layers round them. The sums run in another order than the graph's (ReduceMean; the
// MatMuls, whose products of +-fp32(1 / sqrt(f1)) are here sums of +-v scaled once), so values differ from ONNX
// Runtime's by a few ulp.
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include <map>
#include <mutex>
#include <tuple>

#include "checks.h"
#include "common.cuh"
#include "launch.cuh"
#include "normMath.cuh"

namespace qmamba {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// 4 blocks an SM: 64 registers a thread. The 8b row (32 KiB) and its F_0 (16 KiB) allow 4 blocks on an
// H100's 228 KiB of shared memory; more registers would leave room for fewer blocks than that.
constexpr int kMinBlocks = 4;
constexpr int kUnit = 128;       // floats a warp transforms at once in step 3: 4 consecutive a lane
constexpr int kMaxTile = 6;      // outputs j of F_0^T Y a task takes at most (times 4 columns): more spill
constexpr int kMaxChannels = 65536;
constexpr int kMaxFactor = 128;  // largest order of either rotation factor (export/hadamard.py)
// Without a rotation, rows of more than this many bytes are normed in out (written, then rescaled in place)
// rather than in shared memory, which would leave room for few blocks an SM.
constexpr size_t kRowInSharedLimit = 48 * 1024;
// Room left for the kernel's static shared arrays when checking a block's dynamic shared memory.
constexpr size_t kStaticSharedRoom = 2048;

struct GatedNormArgs {
  const float* __restrict__ y;      // [rows, K]
  const float* __restrict__ z;      // [rows, z_stride] (its first K columns), or NULL: no gate
  const float* __restrict__ z_col;  // [K], or NULL: z as it comes (read only with z)
  const float* __restrict__ weight; // [K]
  const float* __restrict__ first;  // F_0 [f0, f0] when f0 > 1
  float* out;                       // [rows, K]
  int64_t rows;
  int K, group, ngroups;
  int64_t z_stride;                 // floats from one row of z to the next: K, or z_row_width
  int f0, f1;                       // 1 and 1 without a rotation
  int tiles;                        // f0 > 1: tiles of TJ outputs j (ceil(f0 / TJ))
  int row_floats;                   // floats of shared memory the row takes (0: normed in out)
  float eps, z_scale;
  float f1_scale;                   // fp32(1 / sqrt(f1)), the entries of S_f1 as the graph holds them
  int vec;                          // K % 4 == 0, z_stride % 4 == 0 and y, z, z_col (those given), weight, out
                                    // 16-byte aligned
};

__host__ __device__ constexpr int padded4(int n) { return (n + 3) / 4 * 4; }

// The gate of one channel: y * (z' * sigmoid(z')), z' = DequantizeLinear(QuantizeLinear(z, z_scale)) or z itself
// when z_scale is 0. The clamp to [-128, 127] before rounding equals saturating after it; adding and
// subtracting 1.5 * 2^23 rounds half to even (no float-int conversions, which run at a quarter rate).
__device__ __forceinline__ float gate(float y, float z, float z_scale) {
  if (z_scale > 0.0f) {
    const float q = fminf(fmaxf(__fdiv_rn(z, z_scale), -128.0f), 127.0f);
    z = __fmul_rn(__fadd_rn(__fadd_rn(q, 12582912.0f), -12582912.0f), z_scale);
  }
  const float sigmoid = __frcp_rn(__fadd_rn(1.0f, expf(-z)));  // the IEEE 1 / x
  return __fmul_rn(y, __fmul_rn(z, sigmoid));
}

// With z_scale > 0, z' takes one of 256 values, so the gate's factor z' * sigmoid(z') is a table of them (gate()'s
// arithmetic, entry q + 128 for z' = q z_scale), built once a block; a channel then costs its quantization (the
// reciprocal multiply of quantize4_with_inverse, exact: the true division decides near a tie), a shared-memory
// read and the product with y, where it took the division, expf and the reciprocal. Bit for bit gate()'s result.
constexpr int kGateTable = 256;
__device__ __forceinline__ void build_gate_table(float* table, float z_scale) {
  for (int q = static_cast<int>(threadIdx.x); q < kGateTable; q += kThreads) {
    const float zq = __fmul_rn(static_cast<float>(q - 128), z_scale);
    table[q] = __fmul_rn(zq, __frcp_rn(__fadd_rn(1.0f, expf(-zq))));
  }
}

// The table's entry of byte e of a word of quantize4_with_inverse (int8 q at index q + 128).
__device__ __forceinline__ float gate_factor(const float* table, uint32_t qw, int e) {
  return table[((qw >> (8 * e)) & 0xffu) ^ 0x80u];
}

__device__ __forceinline__ float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ void store4(float* p, float4 v) { *reinterpret_cast<float4*>(p) = v; }

// Step 1 without a gate: the row of y into v.
__device__ void copy_row(const GatedNormArgs& a, const float* __restrict__ yr, float* v) {
  if (!a.vec) {
#pragma unroll 1
    for (int k = threadIdx.x; k < a.K; k += kThreads) v[k] = __ldg(yr + k);
    return;
  }
  for (int c = threadIdx.x; c < a.K / 4; c += kThreads) {
    store4(v + 4 * c, __ldg(reinterpret_cast<const float4*>(yr) + c));
  }
}

// Step 1: the row's gated values into v (shared memory, or the row of out); `table` (built where z_scale > 0) the
// gate's factor by quantized z.
__device__ void gate_row(const GatedNormArgs& a, int64_t row, float* v, const float* table) {
  const float* yr = a.y + row * a.K;
  if (!a.z) {
    copy_row(a, yr, v);
    return;
  }
  const float* zr = a.z + row * a.z_stride;
  // The table where 1 / z_scale is finite (z_scale a normal float): below, the reciprocal multiply is no estimate of
  // the quotient, and the gate is computed per channel.
  const float zs = a.z_scale, inv = __frcp_rn(zs);
  const bool by_table = !needs_division(zs);
  if (!a.vec) {
#pragma unroll 1
    for (int k = threadIdx.x; k < a.K; k += kThreads) {
      float z = __ldg(zr + k);
      if (a.z_col) z = __fmul_rn(z, __ldg(a.z_col + k));
      v[k] = by_table ? __fmul_rn(__ldg(yr + k), gate_factor(table, quantize1_with_inverse(z, zs, inv, false) & 0xffu, 0))
                      : gate(__ldg(yr + k), z, zs);
    }
    return;
  }
  const float s4[4] = {zs, zs, zs, zs}, inv4[4] = {inv, inv, inv, inv};
  for (int c = threadIdx.x; c < a.K / 4; c += kThreads) {
    const float4 yv = __ldg(reinterpret_cast<const float4*>(yr) + c);
    float4 zv = __ldg(reinterpret_cast<const float4*>(zr) + c);
    if (a.z_col) {
      const float4 s = __ldg(reinterpret_cast<const float4*>(a.z_col) + c);
      zv = make_float4(__fmul_rn(zv.x, s.x), __fmul_rn(zv.y, s.y), __fmul_rn(zv.z, s.z), __fmul_rn(zv.w, s.w));
    }
    if (by_table) {
      const float zz[4] = {zv.x, zv.y, zv.z, zv.w};
      const uint32_t qw = quantize4_with_inverse(zz, s4, inv4, false);
      store4(v + 4 * c,
             make_float4(__fmul_rn(yv.x, gate_factor(table, qw, 0)), __fmul_rn(yv.y, gate_factor(table, qw, 1)),
                         __fmul_rn(yv.z, gate_factor(table, qw, 2)), __fmul_rn(yv.w, gate_factor(table, qw, 3))));
    } else {
      store4(v + 4 * c, make_float4(gate(yv.x, zv.x, zs), gate(yv.y, zv.y, zs), gate(yv.z, zv.z, zs),
                                    gate(yv.w, zv.w, zs)));
    }
  }
}

__device__ __forceinline__ void prefetch_l2(const void* p) {
#if defined(__CUDA_ARCH__)
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#endif
}

// The block's next row of y and z into L2, a line of 128 bytes a thread at a time, while this row is computed:
// the block's loads of step 1 then wait for L2, not for memory (a thread holds one chunk of y and of z at a
// time: more in flight cost registers that the later steps need).
__device__ __forceinline__ void prefetch_row(const GatedNormArgs& a, int64_t row) {
  if (row >= a.rows) return;
  const int lines = (a.K + 31) / 32;
  const int tensors = a.z ? 2 : 1;
  for (int l = threadIdx.x; l < tensors * lines; l += kThreads) {
    const float* p = (l < lines ? a.y + row * a.K + 32 * l : a.z + row * a.z_stride + 32 * (l - lines));
    prefetch_l2(p);
  }
}

// This thread's part of the sum of squares of v[b .. e): elements t, t + n, ... of the range (16-byte chunks
// when vec4), for the n threads t = 0 .. n-1 that share it.
__device__ float squares(const float* v, int b, int e, int t, int n, bool vec4) {
  float s = 0.0f;
  if (vec4) {
    for (int k = b + 4 * t; k < e; k += 4 * n) s = add_squares(s, load4(v + k));
  } else {
    for (int k = b + t; k < e; k += n) s = __fadd_rn(s, __fmul_rn(v[k], v[k]));
  }
  return s;
}

// dst[k] = (v[k] * inv) * weight[k] over the same elements as squares() (the graph's two Muls); dst may be v.
__device__ void scale(const float* v, float* dst, const float* __restrict__ weight, int b, int e, float inv, int t,
                      int n, bool vec4) {
  if (vec4) {
    for (int k = b + 4 * t; k < e; k += 4 * n) {
      const float4 x = load4(v + k), w = __ldg(reinterpret_cast<const float4*>(weight + k));
      store4(dst + k, make_float4(__fmul_rn(__fmul_rn(x.x, inv), w.x), __fmul_rn(__fmul_rn(x.y, inv), w.y),
                                  __fmul_rn(__fmul_rn(x.z, inv), w.z), __fmul_rn(__fmul_rn(x.w, inv), w.w)));
    }
  } else {
    for (int k = b + t; k < e; k += n) dst[k] = __fmul_rn(__fmul_rn(v[k], inv), __ldg(weight + k));
  }
}

__device__ __forceinline__ float warp_sum(float s) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s = __fadd_rn(s, __shfl_xor_sync(0xffffffffu, s, o));
  return s;
}

// Step 2 with fewer groups than warps: each group summed by the whole block (a partial sum a warp, then the
// warps' partials in order), the row normed into dst.
__device__ void norm_by_block(const GatedNormArgs& a, const float* v, float* dst) {
  __shared__ float partial[kWarps][kWarps];
  __shared__ float inv_rms[kWarps];
  const int warp = threadIdx.x >> 5;
  const bool vec4 = a.vec && a.group % 4 == 0;
  for (int g = 0; g < a.ngroups; ++g) {
    const float s = warp_sum(squares(v, g * a.group, (g + 1) * a.group, threadIdx.x, kThreads, vec4));
    if ((threadIdx.x & 31) == 0) partial[warp][g] = s;
  }
  __syncthreads();
  if (threadIdx.x < a.ngroups) {
    float s = 0.0f;
    for (int w = 0; w < kWarps; ++w) s = __fadd_rn(s, partial[w][threadIdx.x]);
    inv_rms[threadIdx.x] = inv_rms_of(s, a.group, a.eps);
  }
  __syncthreads();
  for (int g = 0; g < a.ngroups; ++g) {
    scale(v, dst, a.weight, g * a.group, (g + 1) * a.group, inv_rms[g], threadIdx.x, kThreads, vec4);
  }
}

// Step 2 with as many groups as warps or more: a warp sums and norms groups warp, warp + 8, ... on its own.
__device__ void norm_by_warp(const GatedNormArgs& a, const float* v, float* dst) {
  const int lane = threadIdx.x & 31;
  const bool vec4 = a.vec && a.group % 4 == 0;
  for (int g = threadIdx.x >> 5; g < a.ngroups; g += kWarps) {
    const int b = g * a.group, e = b + a.group;
    const float inv = inv_rms_of(warp_sum(squares(v, b, e, lane, 32, vec4)), a.group, a.eps);
    scale(v, dst, a.weight, b, e, inv, lane, 32, vec4);
  }
}

// Step 2: the row v normed into dst.
__device__ __forceinline__ void norm_row(const GatedNormArgs& a, const float* v, float* dst) {
  if (a.ngroups < kWarps) {
    norm_by_block(a, v, dst);
  } else {
    norm_by_warp(a, v, dst);
  }
}

// (p, q) -> (p + q, p - q).
__device__ __forceinline__ void butterfly(float& p, float& q) {
  const float sum = __fadd_rn(p, q);
  q = __fsub_rn(p, q);
  p = sum;
}

// Step 3: each row of V (f1 >= 2 floats; the row padded to whole units of 128) times the Sylvester matrix of
// order f1, by butterflies, then times fp32(1 / sqrt(f1)). A warp takes a unit of 128 floats, 4 consecutive a
// lane (one 16-byte load): the butterflies of strides 1 and 2 are in registers, those of 4 to f1 / 2 between
// lanes by warp shuffles, so no block barrier separates the stages. Rows (f1 divides 128) never straddle a unit.
// Writes dst[0 .. K): v itself, or the row of out when V S_f1 is the whole rotation.
__device__ void sylvester_rows(const GatedNormArgs& a, float* v, float* dst) {
  const int lane = threadIdx.x & 31;
  const int units = (a.K + kUnit - 1) / kUnit;
  for (int u = threadIdx.x >> 5; u < units; u += kWarps) {
    const int k = u * kUnit + 4 * lane;
    const float4 q = load4(v + k);
    float x[4] = {q.x, q.y, q.z, q.w};
    butterfly(x[0], x[1]);
    butterfly(x[2], x[3]);
    if (a.f1 >= 4) {
      butterfly(x[0], x[2]);
      butterfly(x[1], x[3]);
    }
#pragma unroll
    for (int m = 1; m < kUnit / 4; m <<= 1) {
      if (4 * m >= a.f1) break;
      // The lane of p takes p + q, the lane of q takes -q + p: one rounding either way.
      const float sign = (lane & m) ? -1.0f : 1.0f;
#pragma unroll
      for (int e = 0; e < 4; ++e) x[e] = __fmaf_rn(sign, x[e], __shfl_xor_sync(0xffffffffu, x[e], m));
    }
#pragma unroll
    for (int e = 0; e < 4; ++e) x[e] = __fmul_rn(x[e], a.f1_scale);
    if (dst == v || (a.vec && k < a.K)) {  // v: the whole unit, padding included
      store4(dst + k, make_float4(x[0], x[1], x[2], x[3]));
    } else {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if (k + e < a.K) dst[k + e] = x[e];
      }
    }
  }
}

// F_0 in shared memory as tiles of TJ columns j: tile t holds F_0[r, t * TJ + i] at (t * f0 + r) * padded4(TJ) + i,
// zeros past f0 and in the padding, so that a task's TJ values of one r are whole 16-byte loads. F_0 is a
// constant: staged before the wait for the previous kernel.
template <int TJ>
__device__ void stage_first(const GatedNormArgs& a, float* tiles) {
  constexpr int kPad = padded4(TJ);
  const int per_tile = a.f0 * kPad, n = a.tiles * per_tile;
  for (int idx = threadIdx.x; idx < n; idx += kThreads) {
    const int t = idx / per_tile, rem = idx - t * per_tile, r = rem / kPad, i = rem - r * kPad, j = t * TJ + i;
    tiles[idx] = i < TJ && j < a.f0 ? __ldg(a.first + r * a.f0 + j) : 0.0f;
  }
}

// Step 4: out[j, c] = sum_r F_0[r, j] Y[r, c]. A task is TJ outputs j times 4 columns c (f1 % 4 == 0): per r one
// 16-byte load of Y (consecutive lanes, consecutive columns) and padded4(TJ) / 4 broadcast loads of F_0 feed
// 4 TJ multiply-adds; the launcher picks TJ so that the tasks fill the block's threads in few rounds. Rows of
// f1 < 4 (one dense factor) take an output a thread.
template <int TJ>
__device__ void first_product(const GatedNormArgs& a, const float* v, const float* tiles, float* out) {
  constexpr int kPad = padded4(TJ);
  constexpr int kUnroll = TJ > 4 ? 2 : 4;  // steps of r in flight: more spill at 64 registers
  if (a.f1 % 4 != 0) {
    for (int t = threadIdx.x; t < a.K; t += kThreads) {
      const int j = t / a.f1, c = t - j * a.f1, tile = j / TJ;
      const float* f = tiles + tile * a.f0 * kPad + (j - tile * TJ);
      float s = 0.0f;
      for (int r = 0; r < a.f0; ++r) s = __fmaf_rn(f[r * kPad], v[r * a.f1 + c], s);
      out[t] = s;
    }
    return;
  }
  const int quads = a.f1 / 4, tasks = a.tiles * quads;
  for (int t = threadIdx.x; t < tasks; t += kThreads) {
    const int tile = t / quads, c = 4 * (t - tile * quads);
    const float* f = tiles + tile * a.f0 * kPad;
    float acc[TJ][4] = {};
#pragma unroll kUnroll
    for (int r = 0; r < a.f0; ++r) {
      const float4 yv = load4(v + r * a.f1 + c);
#pragma unroll
      for (int i0 = 0; i0 < TJ; i0 += 4) {
        const float4 q = load4(f + r * kPad + i0);
        const float fr[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int i = i0; i < TJ && i < i0 + 4; ++i) {
          acc[i][0] = __fmaf_rn(fr[i - i0], yv.x, acc[i][0]);
          acc[i][1] = __fmaf_rn(fr[i - i0], yv.y, acc[i][1]);
          acc[i][2] = __fmaf_rn(fr[i - i0], yv.z, acc[i][2]);
          acc[i][3] = __fmaf_rn(fr[i - i0], yv.w, acc[i][3]);
        }
      }
    }
    const int rows_left = a.f0 - tile * TJ;
    float* o = out + tile * TJ * a.f1 + c;
#pragma unroll
    for (int i = 0; i < TJ; ++i, o += a.f1) {
      if (i >= rows_left) break;
      if (a.vec) {
        store4(o, make_float4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]));
      } else {
        o[0] = acc[i][0]; o[1] = acc[i][1]; o[2] = acc[i][2]; o[3] = acc[i][3];
      }
    }
  }
}

// TJ: outputs j a task of step 4 takes (0: no F_0). kShared: the row lives in shared memory (always with a
// rotation), else in the row of out.
template <int TJ, bool kShared>
__global__ void __launch_bounds__(kThreads, kMinBlocks) gated_norm_kernel(const GatedNormArgs a) {
  extern __shared__ float4 shared4[];
  __shared__ float gate_table[kGateTable];
  float* const shared = reinterpret_cast<float*>(shared4);
  float* const tiles = shared + a.row_floats;
  if constexpr (TJ > 0) stage_first<TJ>(a, tiles);
  if (a.z && a.z_scale > 0.0f) build_gate_table(gate_table, a.z_scale);  // a constant, as F_0
  pdl_wait();  // y and z are earlier kernels' outputs
  const bool rotate = a.f0 > 1 || a.f1 > 1;
  for (int64_t row = blockIdx.x; row < a.rows; row += gridDim.x) {
    float* const out = a.out + row * a.K;
    float* const v = kShared ? shared : out;
    __syncthreads();  // the previous row's last reads of v done (and F_0 staged)
    gate_row(a, row, v, gate_table);
    prefetch_row(a, row + gridDim.x);
    __syncthreads();
    if (row == blockIdx.x) pdl_launch_dependents();  // every block has read its first row
    // Each call below with its own destination, so that the compiler knows which are shared memory.
    if (!rotate) {
      norm_row(a, v, out);
      continue;
    }
    norm_row(a, v, v);
    __syncthreads();
    if (a.f1 > 1) {
      if (a.f0 == 1) {
        sylvester_rows(a, v, out);
        continue;
      }
      sylvester_rows(a, v, v);
      __syncthreads();
    }
    if constexpr (TJ > 0) first_product<TJ>(a, v, tiles, out);
  }
}

using Kernel = void (*)(GatedNormArgs);

template <int TJ>
Kernel rotation_kernel(int tj) {
  if constexpr (TJ > kMaxTile) {
    return nullptr;
  } else {
    return tj == TJ ? gated_norm_kernel<TJ, true> : rotation_kernel<TJ + 1>(tj);
  }
}

// Outputs j a task of step 4 takes: the fewest rounds of tasks over the block's threads times TJ (the
// multiply-adds a thread does), ties to the larger TJ (fewer loads of Y).
int tile_height(int f0, int f1) {
  if (f1 % 4 != 0) return 1;
  const int quads = f1 / 4;
  int best = 1, best_cost = INT32_MAX;
  for (int tj = 1; tj <= kMaxTile; ++tj) {
    const int tasks = (f0 + tj - 1) / tj * quads;
    const int cost = (tasks + kThreads - 1) / kThreads * tj;
    if (cost <= best_cost) best = tj, best_cost = cost;
  }
  return best;
}

// Opts the kernel in to `smem` bytes of dynamic shared memory and finds how many blocks of it an SM holds, once
// per device, kernel and size. Without the opt-in a block gets 48 KiB less its static arrays: the 8b row and
// F_0's tiles are 48 KiB themselves. Returns QMAMBA_OK or the error.
int prepare(const char* where, const DeviceLimits& dev, Kernel kernel, size_t smem, int* per_sm) {
  static std::mutex mutex;
  static std::map<std::pair<int, Kernel>, size_t> opted;
  static std::map<std::tuple<int, Kernel, size_t>, int> occupancy;
  std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_pair(dev.device, kernel);
  if (opted[key] < smem) {
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(smem));
    if (e != cudaSuccess) {
      return fail(QMAMBA_ERR_CUDA, "%s: cannot opt in to %zu bytes of shared memory: %s", where, smem,
                  cudaGetErrorString(e));
    }
    opted[key] = smem;
  }
  const auto okey = std::make_tuple(dev.device, kernel, smem);
  const auto it = occupancy.find(okey);
  if (it != occupancy.end()) {
    *per_sm = it->second;
    return QMAMBA_OK;
  }
  const cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(per_sm, kernel, kThreads, smem);
  if (e != cudaSuccess || *per_sm < 1) {
    return fail(QMAMBA_ERR_CUDA, "%s: no occupancy for the kernel: %s", where, cudaGetErrorString(e));
  }
  occupancy.emplace(okey, *per_sm);
  return QMAMBA_OK;
}

// Whether [p, p + n floats) and [q, q + n floats) overlap.
bool overlaps(const float* p, int64_t np, const float* q, int64_t nq) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p), b = reinterpret_cast<uintptr_t>(q);
  return a < b + static_cast<uintptr_t>(nq) * sizeof(float) && b < a + static_cast<uintptr_t>(np) * sizeof(float);
}

// gate: z is given (z_scale is read only then).
int check_params(const char* where, const qmamba_gated_norm_params* p, bool gate) {
  const int K = p->channels, f0 = p->rotation_first, f1 = p->rotation_last;
  QMAMBA_TRY(check_range(where, "channels", K, 1, kMaxChannels));
  QMAMBA_TRY(check_range(where, "group_size", p->group_size, 1, K));
  if (K % p->group_size != 0) {
    return fail(QMAMBA_ERR_BAD_SIZE, "%s: group_size = %d does not divide channels = %d", where, p->group_size, K);
  }
  QMAMBA_TRY(check_range(where, "rotation_first", f0, 1, kMaxFactor));
  QMAMBA_TRY(check_range(where, "rotation_last", f1, 1, kMaxFactor));
  if ((f1 & (f1 - 1)) != 0) {
    return fail(QMAMBA_ERR_BAD_SIZE, "%s: rotation_last = %d is not a power of two", where, f1);
  }
  if ((f0 > 1 || f1 > 1) && f0 * f1 != K) {
    return fail(QMAMBA_ERR_BAD_SIZE, "%s: rotation orders f0 = %d, f1 = %d do not make channels = %d", where, f0,
                f1, K);
  }
  if (!(p->eps >= 0.0f) || !isfinite(p->eps)) {
    return fail(QMAMBA_ERR_BAD_VALUE, "%s: eps must be finite and >= 0, got %g", where, static_cast<double>(p->eps));
  }
  if (gate && (!(p->z_scale >= 0.0f) || !isfinite(p->z_scale))) {
    return fail(QMAMBA_ERR_BAD_VALUE, "%s: z_scale must be finite and >= 0 (0: z as is), got %g", where,
                static_cast<double>(p->z_scale));
  }
  if (p->z_row_width != 0 && (p->z_row_width < K || p->z_row_width > (1 << 30))) {
    return fail(QMAMBA_ERR_BAD_SIZE, "%s: z_row_width = %d must be 0 (z is [rows, K]) or hold channels = %d", where,
                p->z_row_width, K);
  }
  return QMAMBA_OK;
}

}  // namespace
}  // namespace qmamba

extern "C" int qmamba_gated_norm(const qmamba_gated_norm_params* params, const qmamba_gated_norm_tensors* t,
                                 int64_t rows, qmamba_stream_t stream) {
  using namespace qmamba;
  const char* where = "qmamba_gated_norm";
  QMAMBA_TRY(check_ptr(where, "params", params));
  QMAMBA_TRY(check_ptr(where, "tensors", t));
  QMAMBA_TRY(check_params(where, params, t->z != nullptr));
  const int K = params->channels, f0 = params->rotation_first, f1 = params->rotation_last;
  QMAMBA_TRY(check_range(where, "rows", rows, 0, INT64_MAX / K));
  if (rows == 0) return ok();
  QMAMBA_TRY(check_ptr(where, "y", t->y));
  QMAMBA_TRY(check_ptr(where, "weight", t->weight));
  QMAMBA_TRY(check_ptr(where, "out", t->out));
  if (f0 > 1) QMAMBA_TRY(check_ptr(where, "rotation_first", t->rotation_first));
  if (overlaps(t->out, rows * K, t->y, rows * K)) return fail(QMAMBA_ERR_BAD_VALUE, "%s: out must not alias y", where);
  const int z_stride = params->z_row_width > 0 ? params->z_row_width : K;
  QMAMBA_TRY(check_range(where, "rows", rows, 0, INT64_MAX / z_stride));
  if (t->z && overlaps(t->out, rows * K, t->z, (rows - 1) * z_stride + K)) {
    return fail(QMAMBA_ERR_BAD_VALUE, "%s: out must not alias z", where);
  }
  const float* z_col = t->z ? t->z_col_scale : nullptr;
  if (z_col && overlaps(t->out, rows * K, z_col, K)) {
    return fail(QMAMBA_ERR_BAD_VALUE, "%s: out must not alias z_col_scale", where);
  }

  GatedNormArgs a{};
  a.y = t->y; a.z = t->z; a.z_col = z_col; a.weight = t->weight; a.out = t->out;
  a.first = f0 > 1 ? t->rotation_first : nullptr;
  a.rows = rows; a.K = K; a.z_stride = z_stride; a.group = params->group_size; a.ngroups = K / params->group_size;
  a.f0 = f0; a.f1 = f1; a.eps = params->eps; a.z_scale = params->z_scale;
  a.f1_scale = static_cast<float>(1.0 / sqrt(static_cast<double>(f1)));
  a.vec = K % 4 == 0 && aligned16(a.y) && (!a.z || (aligned16(a.z) && z_stride % 4 == 0)) &&
          (!z_col || aligned16(z_col)) && aligned16(a.weight) && aligned16(a.out);
  const bool rotate = f0 > 1 || f1 > 1;
  const int tj = f0 > 1 ? tile_height(f0, f1) : 0;
  a.tiles = tj > 0 ? (f0 + tj - 1) / tj : 0;
  const size_t row_bytes = static_cast<size_t>(K) * sizeof(float);
  const bool in_shared = rotate || row_bytes <= kRowInSharedLimit;
  // With a rotation the row is padded to whole units of step 3.
  a.row_floats = !in_shared ? 0 : rotate ? (K + kUnit - 1) / kUnit * kUnit : K;
  const size_t smem = (static_cast<size_t>(a.row_floats) + static_cast<size_t>(a.tiles) * f0 * padded4(tj)) *
                      sizeof(float);
  const Kernel kernel = tj > 0 ? rotation_kernel<1>(tj) : in_shared ? gated_norm_kernel<0, true>
                                                                     : gated_norm_kernel<0, false>;

  DeviceLimits dev{};
  QMAMBA_TRY(device_limits(where, &dev));
  if (smem + kStaticSharedRoom > static_cast<size_t>(dev.max_smem_optin)) {
    return fail(QMAMBA_ERR_BAD_SIZE, "%s: a row of %d channels with f0 = %d needs %zu bytes of shared memory, more "
                "than the device's %d", where, K, f0, smem + kStaticSharedRoom, dev.max_smem_optin);
  }
  int per_sm = 0;
  QMAMBA_TRY(prepare(where, dev, kernel, smem, &per_sm));
  const int64_t resident = static_cast<int64_t>(dev.sm_count) * per_sm;
  const dim3 grid(static_cast<unsigned>(rows < resident ? rows : resident));
  launch_dependent(dev, kernel, grid, dim3(kThreads), smem, reinterpret_cast<cudaStream_t>(stream), a);
  return check_launch(where);
}
