// Device helpers shared by the qmamba kernels: the exact arithmetic of docs/ops.md and the
// group-scale lookup. No TensorRT here.
#pragma once

#include <cuda_fp16.h>
#include <stdint.h>

namespace qmamba {

// Q(v, s) of docs/ops.md: true fp32 division (not a reciprocal multiply), round half to even,
// saturate to int8. __fdiv_rn and __float2int_rn keep this exact whatever the compiler flags.
__device__ __forceinline__ int8_t quantize_rn(float v, float s) {
  int q = __float2int_rn(__fdiv_rn(v, s));
  q = q < -128 ? -128 : (q > 127 ? 127 : q);
  return static_cast<int8_t>(q);
}

// Number of cumulative group ends <= v, clamped to a valid index: the group that holds v.
// The ranges come from device memory; the clamp keeps an out-of-contract range from reading out
// of bounds (the Python binding and the plugins check the values before launching).
__device__ __forceinline__ int group_of(const int32_t* __restrict__ ends, int count, int v) {
  int k = 0;
  for (int e = 0; e < count; ++e) k += (__ldg(ends + e) <= v) ? 1 : 0;
  return k < count ? k : count - 1;
}

// Head group of the local head h_loc of SSD group sg (x_head_group_range is [g, nhg]).
__device__ __forceinline__ int head_group(const int32_t* __restrict__ head_ranges, int nhg, int sg,
                                          int h_loc) {
  return group_of(head_ranges + sg * nhg, nhg, h_loc);
}

// Dim group of dim `dim` inside head group hg of SSD group sg (x_dim_group_range is [g, nhg, ndg]).
__device__ __forceinline__ int dim_group(const int32_t* __restrict__ dim_ranges, int nhg, int ndg,
                                         int sg, int hg, int dim) {
  return group_of(dim_ranges + (sg * nhg + hg) * ndg, ndg, dim);
}

// dt of docs/ops.md: clamp(softplus(dt_scale * dt_q + dt_bias), dt_min, dt_max), in the
// reference's order (multiply, then add; no FMA), softplus(v) = v if v > 20 else log1p(exp(v)).
__device__ __forceinline__ float dt_value(int8_t dt_q, float dt_scale, float dt_bias, float dt_min,
                                          float dt_max) {
  float v = __fadd_rn(__fmul_rn(static_cast<float>(dt_q), dt_scale), dt_bias);
  float sp = v > 20.0f ? v : log1pf(expf(v));
  return fminf(fmaxf(sp, dt_min), dt_max);
}

// Stores y in the requested dtype (round to nearest even for fp16).
__device__ __forceinline__ void store_y(void* y, int64_t idx, float v, bool fp16) {
  if (fp16) {
    static_cast<__half*>(y)[idx] = __float2half_rn(v);
  } else {
    static_cast<float*>(y)[idx] = v;
  }
}

// 16 int8 values moved as one 16-byte access.
struct alignas(16) Int8x16 {
  int8_t v[16];
};

}  // namespace qmamba
