// QmambaW8A8Linear's tensor-core kernel (sm_80 and later): three or more activation rows.
//
// The dp4a kernels multiply each weight word by every activation row's word, fetched from shared memory one row at
// a time: with 8 rows that work, not the weights' traffic, sets their time (a batch-8 step takes several times a
// batch-1 step for the same bytes). Here one mma.sync m16n8k32 (s8 x s8 -> s32) multiplies 32 k of
// all activation rows at once: the activation rows are A's rows (those past MT zero), a tile of 8 weight rows B's
// columns. Each load of a lane is 16 contiguous bytes of one weight row (4 lanes a row: 64 contiguous bytes; a
// step is two loads a lane, 128 bytes a row), and feeds two k-steps of 32; the activation's words are taken from
// shared memory in the same order of k, and a sum does not depend on its order, so the results are the dp4a
// kernels' bit for bit. A block takes a contiguous range of tiles and its warps an even share of the range's
// (tile, step) pairs, so that a tile's K is split across warps where a block has few tiles (a 2.7b out_proj: 320
// tiles for 132 SMs); each warp adds its partial sums into the block's shared sums (integer atomics: exact in any
// order), and after a barrier the block's threads apply out_scale and the residual.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <map>
#include <mutex>
#include <utility>

#include "checks.h"
#include "common.cuh"
#include "launch.cuh"
#include "tensorCore.cuh"
#include "w8a8Linear.cuh"
#include "w8a8LinearActivation.cuh"

namespace qmamba {
namespace {

constexpr int kTileRows = 8;          // weight rows of a tile: the n of m16n8k32
constexpr int kStepChunks = 8;        // 16-byte chunks of a weight row a step takes (two a lane, 4 lanes a row)
constexpr int kStepsAhead = 4;        // steps a lane has in flight (8 loads of 16 bytes)
constexpr int kMmaWarps = 16;
constexpr int kEpilogueItems = 2;     // outputs a thread's residual is loaded for right after the wait
static_assert(kEpilogueItems == 2, "the epilogue picks res[0] / res[1] by name (no local memory)");

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
      // A: rows 0-7 this lane's activation row (its two k-quarters), rows 8-15 zero; B: the weight words.
      mma_s8(acc, x0.x, 0u, x0.y, 0u, w0.x, w0.y);
      mma_s8(acc, x0.z, 0u, x0.w, 0u, w0.z, w0.w);
      mma_s8(acc, x1.x, 0u, x1.y, 0u, w1.x, w1.y);
      mma_s8(acc, x1.z, 0u, x1.w, 0u, w1.z, w1.w);
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
// capability 8.0 or later, a pass of 4 or 8 activation rows, and QMAMBA_MMA not "0" (QMAMBA_MMA=0 runs the
// register kernel for every pass: the GPU tests cover its many-row passes that way, and it compares the two
// kernels). At 2 rows the register kernel is the faster. One block an SM (or a tile), the tiles spread evenly.
// Returns whether it launched.
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

}  // namespace

bool launch_tensor_core_kernel(const DeviceLimits& dev, const LinearArgs& a, int mt, cudaStream_t stream) {
  switch (mt) {
    case 8: return launch_mma<8>(dev, a, stream);
    case 4: return launch_mma<4>(dev, a, stream);
    default: return false;  // up to two activation rows: the register kernel
  }
}

}  // namespace qmamba
