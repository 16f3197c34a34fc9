// Host stand-in for cuda_fp16.h: what common.cuh and the kernels' y stores name, rounding to nearest even
// as the CUDA conversions do (g++'s _Float16).
#pragma once
#include <cstring>
struct __half { unsigned short x; };
struct __half2 { __half x, y; };
inline __half __float2half_rn(float f) {
  const _Float16 h = static_cast<_Float16>(f);
  __half r;
  std::memcpy(&r.x, &h, 2);
  return r;
}
inline __half2 __floats2half2_rn(float a, float b) { return {__float2half_rn(a), __float2half_rn(b)}; }
