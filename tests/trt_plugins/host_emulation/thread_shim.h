// CUDA device keywords and intrinsics for host emulation of kernels whose threads talk to each other
// (barriers, warp shuffles, warp-wide tensor-core products): each CUDA thread of a block is a host thread
// (std::thread), __syncthreads a std::barrier of the block, a named barrier of two warps one of 64 threads,
// __shfl_xor_sync / __shfl_up_sync and the mma of tensor_core_shim.h exchanges through memory between two
// barriers of the warp.
// Blocks run one after another; __shared__ arrays are function statics (one block at a time uses them).
#pragma once
#include <algorithm>
#include <barrier>
#include <memory>
#include <thread>
#include <vector>
#include "intrinsics.h"
#define __shared__ static
#define __restrict__
struct dim3 {
  unsigned x, y, z;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
using std::min; using std::max;
struct float4 { float x, y, z, w; };
struct float2 { float x, y; };
struct int4 { int x, y, z, w; };
struct uint2 { uint32_t x, y; };
struct uint4 { uint32_t x, y, z, w; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline float2 make_float2(float a, float b) { return {a, b}; }
inline uint2 make_uint2(uint32_t a, uint32_t b) { return {a, b}; }
inline uint4 make_uint4(uint32_t a, uint32_t b, uint32_t c, uint32_t d) { return {a, b, c, d}; }

namespace emu {
inline std::unique_ptr<std::barrier<>> block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
inline std::vector<float> shuffle;
inline std::vector<uint32_t> lane_words;  // kLaneWords a thread: what a warp-wide product exchanges
inline std::vector<std::unique_ptr<std::barrier<>>> pair_barriers;  // named barriers 0..15 of 64 threads
constexpr int kLaneWords = 8;
inline std::vector<float> dynamic_shared;
}  // namespace emu

inline void __syncthreads() { emu::block_barrier->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_barriers[threadIdx.x / 32]->arrive_and_wait(); }
// v of lane `src` of this thread's warp, exchanged through memory between two barriers of the warp.
inline float emu_shuffle(float v, unsigned src) {
  const unsigned t = threadIdx.x;
  auto& bar = *emu::warp_barriers[t / 32];
  emu::shuffle[t] = v;
  bar.arrive_and_wait();
  const float r = emu::shuffle[(t & ~31u) | src];
  bar.arrive_and_wait();
  return r;
}
inline float __shfl_xor_sync(unsigned, float v, int offset) { return emu_shuffle(v, (threadIdx.x & 31u) ^ unsigned(offset)); }
inline float __shfl_up_sync(unsigned, float v, unsigned delta) {
  const unsigned lane = threadIdx.x & 31u;
  return emu_shuffle(v, lane >= delta ? lane - delta : lane);  // lanes below delta keep their own v
}

// kernel(args) over grid x block threads, a block at a time, each thread a host thread.
template <class Kern, class A>
inline void emulate_threads(Kern kernel, dim3 grid, unsigned threads, size_t smem_bytes, const A& a) {
  gridDim = grid;
  blockDim = dim3(threads);
  emu::dynamic_shared.assign(smem_bytes / sizeof(float) + 1, std::nanf(""));
  emu::shuffle.assign(threads, 0.0f);
  emu::lane_words.assign(size_t(threads) * emu::kLaneWords, 0u);
  emu::warp_barriers.clear();
  for (unsigned w = 0; w < (threads + 31) / 32; ++w) emu::warp_barriers.emplace_back(new std::barrier<>(32));
  for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      emu::block_barrier.reset(new std::barrier<>(threads));
      emu::pair_barriers.clear();
      for (int id = 0; id < 16; ++id) emu::pair_barriers.emplace_back(new std::barrier<>(64));
      std::vector<std::thread> pool;
      for (unsigned t = 0; t < threads; ++t)
        pool.emplace_back([=] { threadIdx = dim3(t); blockIdx = dim3(bx, by); kernel(a); });
      for (auto& th : pool) th.join();
    }
}
