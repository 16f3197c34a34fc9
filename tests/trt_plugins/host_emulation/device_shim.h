// CUDA device keywords and intrinsics for host emulation of the kernels (single-threaded, one
// thread after another). MUFU approximations are modelled at their documented error bounds.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cfloat>
#include <climits>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
struct Dim3 { unsigned x = 0, y = 0, z = 0; };
extern Dim3 blockIdx, threadIdx, blockDim, gridDim;
using std::min; using std::max;
struct uint2 { unsigned x, y; };
struct uint4 { unsigned x, y, z, w; };
template <class T> inline T __ldg(const T* p) { return *p; }
inline uint32_t __float_as_uint(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
inline int __float_as_int(float f) { int u; memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
inline float __int_as_float(int u) { float f; memcpy(&f, &u, 4); return f; }
inline uint32_t __byte_perm(uint32_t x, uint32_t y, uint32_t s) {
  uint64_t v = (uint64_t(y) << 32) | x; uint32_t r = 0;
  for (int n = 0; n < 4; ++n) { unsigned sel = (s >> (4 * n)) & 7; r |= uint32_t((v >> (8 * sel)) & 0xff) << (8 * n); }
  return r;
}
inline int __dp4a(int a, int b, int c) {
  for (int n = 0; n < 4; ++n) c += int(int8_t(a >> (8 * n))) * int(int8_t(b >> (8 * n)));
  return c;
}
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline int __float2int_rn(float f) {  // cvt.rni.s32.f32: NaN -> 0, saturating
  if (std::isnan(f)) return 0;
  float r = std::nearbyint(f);
  if (r >= 2147483648.0f) return INT_MAX;
  if (r < -2147483648.0f) return INT_MIN;
  return int(r);
}
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
