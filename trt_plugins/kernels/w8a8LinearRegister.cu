// QmambaW8A8Linear's register kernel (dp4a): any compute capability, any number of activation rows.
//
// At decode the few activation rows are tiny and the int8 weight matrix is the whole memory traffic,
// so the kernel is built to stream the weights once at full bandwidth. A warp takes one weight row (or
// a segment of up to 256 16-byte chunks of a long row) at a time, all of its loads issued together
// (CPL chunks per lane), and issues the next row's loads before multiplying the current one (dp4a), so
// that each SM has tens of KB in flight. The grid is one wave of resident blocks whose warps stride over
// the rows, the rows spread evenly over the warps: a second, partial wave of blocks, or blocks that
// each paid the activation's quantization for a few rows, would leave the memory idle for much of the
// kernel.
// The quantized activations sit in shared memory, packed 4 per word like the weights. Each block
// quantizes the activation rows itself (a few KB read from L2) rather than a second kernel doing it
// once: at batch 1 a launch costs more than the repeated work. Before that, each warp issues its first
// row's loads, and the kernel waits for the one that makes x only then (launch.cuh), so memory is busy
// from the kernel's start.
#include <map>
#include <mutex>
#include <utility>

#include "checks.h"
#include "common.cuh"
#include "launch.cuh"
#include "w8a8Linear.cuh"
#include "w8a8LinearActivation.cuh"

namespace qmamba {
namespace {

// Warps a block at most. Every block quantizes the whole activation, so the launcher makes one block an
// SM (three blocks of 8 warps would do that pass three times on each SM), with the warps its rows need:
// up to kMaxWarps (24) where the kernel fits 80 registers a thread (ptxas -v, sm_90: a row segment of up
// to 5 chunks a lane and up to 2 activation rows, or 4 rows at 4 chunks, or 8 at 1), else up to 16 (128).
template <int MT, int CPL>
constexpr int max_warps() {
  return (MT <= 2 && CPL <= 5) || (MT == 4 && CPL <= 4) || CPL == 1 ? kMaxWarps : 16;
}
constexpr int kMaxChunksPerLane = 8;            // 16-byte chunks per lane of one row segment (CPL)

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
  // row (its out_scale and first loads). A small load issued behind the weights waits for them: with
  // input_scale (whose reciprocal is taken before the wait) after the weights, the blocks leave the wait
  // microseconds apart. The weights are not prefetched into L2 as well: requesting each warp's rows into
  // L2 at its start makes the linears slower (docs/kernels.md).
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
  switch (mt) {
    case 8: return launch_chunks<8, VEC>(where, dev, a, stream);
    case 4: return launch_chunks<4, VEC>(where, dev, a, stream);
    case 2: return launch_chunks<2, VEC>(where, dev, a, stream);
    default: return launch_chunks<1, VEC>(where, dev, a, stream);
  }
}

}  // namespace

int launch_register_kernel(const char* where, const DeviceLimits& dev, const LinearArgs& a, int mt, bool vec,
                           cudaStream_t stream) {
  return vec ? launch_rows<4>(where, dev, a, mt, stream) : launch_rows<1>(where, dev, a, mt, stream);
}

}  // namespace qmamba
