// QmambaW8A8Linear (docs/tensorrt.md): the W8A8 linear of a decode step as one matrix-vector kernel,
// with the activation's quantization (and optionally the RMSNorm before it) done in the kernel.
//
// At decode the few activation rows are tiny and the int8 weight matrix is the whole memory traffic,
// so the kernel is built to stream the weights once at full bandwidth: each warp owns RPW
// weight rows and walks them with 16-byte loads, the next loads in flight while the current ones are
// multiplied (dp4a); the quantized activations sit in shared memory, packed 4 per word like the
// weights. Each block quantizes the activation rows itself (a few KB read from L2) rather than a
// second kernel doing it once: at batch 1 a launch costs more than the repeated work, at batch 8 it
// does not (measured on the H100: docs/tensorrt.md; `qmamba build` uses the plugin up to batch 4).
// The first weight loads are issued before that quantization so that it hides behind them.
//
// With norm_group the RMSNorm is taken over groups of that many channels (the gated norm of out_proj's
// input, whose weight and rms fold in here the same way).
//
// Exactness: the integer sums are exact; float(acc) * out_scale (+ residual) is rounded as ONNX
// Runtime rounds Mul then Add (no FMA). Q is docs/ops.md's (true division, half to even, saturate).
// The RMSNorm sums squares in another order than ONNX Runtime's ReduceMean, so a normed activation
// may land on the other side of a rounding tie (1 LSB, rarely), as with TensorRT's own ReduceMean.
#include <math.h>

#include "checks.h"
#include "common.cuh"

namespace qmamba {
namespace {

constexpr int kWarps = 8;
// Weight rows per warp (RPW) times loads in flight per row and lane (kUnroll) is 4: 64 bytes per lane
// in flight. RPW = 4 (32 rows per block) when that still gives every SM two blocks, else 2: fewer
// blocks repeat the activation's quantization less, more blocks fill the GPU for short matrices.
constexpr int kRowsPerWarpPair = 4;
__host__ __device__ constexpr int kUnrollFor(int rpw) { return kRowsPerWarpPair / rpw; }
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

// The weights of this warp's rows for chunks base + u * 32 + lane (u < kUnroll); zeros past the end.
template <int RPW, int VEC, int U = kUnrollFor(RPW)>
__device__ __forceinline__ void load_batch(const LinearArgs& a, int n0, int chunks, int base, int lane,
                                           int (&w)[RPW][U][VEC]) {
#pragma unroll
  for (int r = 0; r < RPW; ++r) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = base + u * 32 + lane;
      if (n0 + r < a.N && c < chunks) {
        load_words<VEC>(a.weight + static_cast<int64_t>(n0 + r) * a.words + c * VEC, w[r][u]);
      } else {
#pragma unroll
        for (int v = 0; v < VEC; ++v) w[r][u][v] = 0;
      }
    }
  }
}

// Sum over the block of each row's partial sum (MT rows) into out[0 .. MT-1], visible to all threads.
template <int MT>
__device__ __forceinline__ void block_sums(const float (&part)[MT], float (*scratch)[MT], float* out) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
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
    for (int w = 0; w < kWarps; ++w) s = __fadd_rn(s, scratch[w][threadIdx.x]);
    out[threadIdx.x] = s;
  }
  __syncthreads();
}

// Q(v) of the activation rows m0 .. m0 + MT - 1 into shared memory, 4 int8 per word (zeros past K
// and past the last row); with norm, v is the row's RMSNorm over each norm group of channels in the
// ONNX graph's order: ((x * (1 / sqrt(sum_group(x^2) / group + eps))) * norm_weight).
template <int MT>
__device__ void quantize_rows(const LinearArgs& a, int64_t m0, int32_t* xs) {
  __shared__ float scratch[kWarps][MT];
  __shared__ float inv_rms[kMaxNormGroups * MT];  // [group][row]
  const float s_in = __ldg(a.input_scale);
  const float inv_s = __fdiv_rn(1.0f, s_in);  // quantize_with_inverse: a division only near a tie
  if (a.norm) {
    const int groups = a.K / a.norm_group;
    for (int g = 0; g < groups; ++g) {
      float part[MT];
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        part[m] = 0.0f;
        if (m0 + m < a.rows) {
          const float* xr = a.x + (m0 + m) * a.K;
          for (int k = g * a.norm_group + threadIdx.x; k < (g + 1) * a.norm_group; k += blockDim.x) {
            const float v = __ldg(xr + k);
            part[m] = __fadd_rn(part[m], __fmul_rn(v, v));
          }
        }
      }
      block_sums<MT>(part, scratch, inv_rms + g * MT);  // sums of squares, turned into 1 / rms below
    }
    for (int idx = threadIdx.x; idx < groups * MT; idx += blockDim.x) {
      const float mean = __fdiv_rn(inv_rms[idx], static_cast<float>(a.norm_group));
      inv_rms[idx] = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(mean, a.eps)));
    }
    __syncthreads();
  }
  for (int i = threadIdx.x; i < MT * a.words; i += blockDim.x) {
    const int m = i / a.words, word = i - m * a.words;
    uint32_t packed = 0;
    if (m0 + m < a.rows) {
      const float* xr = a.x + (m0 + m) * a.K;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int k = word * 4 + j;
        if (k < a.K) {
          float v = __ldg(xr + k);
          if (a.norm) v = __fmul_rn(__fmul_rn(v, inv_rms[(k / a.norm_group) * MT + m]), __ldg(a.norm_weight + k));
          packed |= static_cast<uint32_t>(static_cast<uint8_t>(quantize_with_inverse(v, s_in, inv_s))) << (8 * j);
        }
      }
    }
    xs[i] = static_cast<int32_t>(packed);
  }
  __syncthreads();
}

template <int MT, int VEC, int RPW>
__global__ void __launch_bounds__(kWarps * 32) w8a8_linear_kernel(LinearArgs a) {
  constexpr int kUnroll = kUnrollFor(RPW);
  extern __shared__ __align__(16) int32_t xs[];  // [MT][words]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * MT;
  const int n0 = (blockIdx.x * kWarps + warp) * RPW;
  const int chunks = a.words / VEC;
  constexpr int kStep = 32 * kUnroll;

  int w[RPW][kUnroll][VEC];
  load_batch<RPW, VEC>(a, n0, chunks, 0, lane, w);
  quantize_rows<MT>(a, m0, xs);

  int acc[RPW][MT];
#pragma unroll
  for (int r = 0; r < RPW; ++r)
#pragma unroll
    for (int m = 0; m < MT; ++m) acc[r][m] = 0;

  for (int base = 0; base < chunks; base += kStep) {
    int next[RPW][kUnroll][VEC];
    if (base + kStep < chunks) load_batch<RPW, VEC>(a, n0, chunks, base + kStep, lane, next);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = base + u * 32 + lane;
      if (c >= chunks) continue;
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        int xw[VEC];
        load_words_shared<VEC>(xs + m * a.words + c * VEC, xw);
#pragma unroll
        for (int r = 0; r < RPW; ++r)
#pragma unroll
          for (int v = 0; v < VEC; ++v) acc[r][m] = __dp4a(w[r][u][v], xw[v], acc[r][m]);
      }
    }
#pragma unroll
    for (int r = 0; r < RPW; ++r)
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
#pragma unroll
        for (int v = 0; v < VEC; ++v) w[r][u][v] = next[r][u][v];
  }

#pragma unroll
  for (int r = 0; r < RPW; ++r) {
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      int s = acc[r][m];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
      const int n = n0 + r;
      const int64_t row = m0 + m;
      if (lane == (r * MT + m) % 32 && n < a.N && row < a.rows) {  // one lane per output (all hold the sum)
        const int64_t idx = row * a.N + n;
        const float v = __fmul_rn(static_cast<float>(s), __ldg(a.out_scale + n));
        a.y[idx] = a.residual ? __fadd_rn(a.residual[idx], v) : v;
      }
    }
  }
}

template <int MT, int VEC, int RPW>
void launch(const LinearArgs& a, cudaStream_t stream) {
  constexpr int rows_per_block = kWarps * RPW;
  const dim3 grid((a.N + rows_per_block - 1) / rows_per_block, static_cast<unsigned>((a.rows + MT - 1) / MT));
  const size_t smem = static_cast<size_t>(MT) * a.words * sizeof(int32_t);
  w8a8_linear_kernel<MT, VEC, RPW><<<grid, kWarps * 32, smem, stream>>>(a);
}

template <int VEC, int RPW>
void launch_rows(const LinearArgs& a, int mt, cudaStream_t stream) {
  switch (mt) {
    case 8: launch<8, VEC, RPW>(a, stream); break;
    case 4: launch<4, VEC, RPW>(a, stream); break;
    case 2: launch<2, VEC, RPW>(a, stream); break;
    default: launch<1, VEC, RPW>(a, stream); break;
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

  LinearArgs a{t->x, t->weight, t->out_scale, t->input_scale, params->norm ? t->norm_weight : nullptr,
               t->residual, t->y, params->in_features, params->out_features,
               (params->in_features + 3) / 4, params->norm, params->eps, norm_group, rows};
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
  const bool four_rows = (a.N + kWarps * 4 - 1) / (kWarps * 4) >= 2 * dev.sm_count;
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  if (vec) {
    four_rows ? launch_rows<4, 4>(a, mt, s) : launch_rows<4, 2>(a, mt, s);
  } else {
    four_rows ? launch_rows<1, 4>(a, mt, s) : launch_rows<1, 2>(a, mt, s);
  }
  return check_launch(where);
}
