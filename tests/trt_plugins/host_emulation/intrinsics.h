// CUDA device keywords and arithmetic intrinsics for host emulation (device_shim.h, thread_shim.h): IEEE
// float operations rounded to nearest as the _rn intrinsics are, integer helpers bit for bit.
#pragma once
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
template <class T> inline T __ldg(const T* p) { return *p; }
template <class T> inline T __ldcs(const T* p) { return *p; }  // streaming load: a plain one here
inline int __ffs(int v) { return __builtin_ffs(v); }
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
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline int __float2int_rn(float f) {  // cvt.rni.s32.f32: NaN -> 0, saturating
  if (std::isnan(f)) return 0;
  float r = std::nearbyint(f);
  if (r >= 2147483648.0f) return INT_MAX;
  if (r < -2147483648.0f) return INT_MIN;
  return int(r);
}
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __int2float_rn(int v) { return static_cast<float>(v); }
// __expf: ex2.approx of x * log2(e), modelled as the exact exp2 of the fp32 product (ssd_prefill_order.py's fast_exp).
inline float __expf(float x) { return std::exp2(x * 1.4426950408889634f); }
