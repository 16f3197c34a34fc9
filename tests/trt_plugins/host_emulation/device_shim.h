// CUDA device keywords and intrinsics for host emulation of the kernels (single-threaded, one
// thread after another). MUFU approximations are modelled at their documented error bounds.
#pragma once
#include <algorithm>
#include "intrinsics.h"
struct Dim3 { unsigned x = 0, y = 0, z = 0; };
extern Dim3 blockIdx, threadIdx, blockDim, gridDim;
using std::min; using std::max;
struct uint2 { unsigned x, y; };
struct uint4 { unsigned x, y, z, w; };
struct float4 { float x, y, z, w; };
// Emulated error models (conv_harness.cpp): MUFU.EX2 / MUFU.RCP with flushed denormals, and the
// accurate expf at CUDA's documented 2 ulp.
float emu_ex2(float x);
float emu_rcp(float x);
float emu_expf(float x);
#define expf emu_expf
template <class Kern, class A>
inline void emulate_launch(Kern kernel, int blocks, int threads, int /*smem*/, void* /*stream*/, const A& a) {
  blockDim.x = threads; gridDim.x = blocks;
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < threads; ++t) { blockIdx.x = b; threadIdx.x = t; kernel(a); }
}
extern long long g_steps, g_slow_steps, g_exact_calls;
