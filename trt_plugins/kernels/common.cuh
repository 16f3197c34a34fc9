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

// The conversions below avoid the I2F / F2I / FRND instructions, which run at a quarter of the
// rate of float adds on the SMs these kernels target and bounded the memory-bound kernels.

// Exact float of an int8 that sits in byte K of `biased`, a word whose bytes were XORed with 0x80
// (so they hold value + 128): the byte becomes the low mantissa bits of 2^23, then 2^23 + 128 is
// subtracted. Both steps are exact.
template <int K>
__device__ __forceinline__ float biased_byte_to_float(uint32_t biased) {
  return __fadd_rn(__uint_as_float(__byte_perm(biased, 0x4B000000u, 0x7540 + K)), -8388736.0f);
}

// The four int8 of a biased word (see above) as exact floats.
__device__ __forceinline__ void biased_word_to_floats(uint32_t biased, float* f) {
  f[0] = biased_byte_to_float<0>(biased);
  f[1] = biased_byte_to_float<1>(biased);
  f[2] = biased_byte_to_float<2>(biased);
  f[3] = biased_byte_to_float<3>(biased);
}

// Exact float of an integer with |v| < 2^22 (1.5 * 2^23 in the exponent, then subtracted).
__device__ __forceinline__ float small_int_to_float(int v) {
  return __fadd_rn(__int_as_float(v + 0x4B400000), -12582912.0f);
}

// Whether 1 / s cannot stand in for a division by s in the paths below: under the normal floats 1 / s
// overflows to inf (s < 2^-128) and v * inf is no estimate of v / s (a state of exactly 0 would land on
// -128). Such a scale is within the contract (finite, > 0), so its values take the true division.
__device__ __forceinline__ bool needs_division(float s) { return !(s >= 1.17549435e-38f); }

// Q(v, s) given inv_s = 1/s: v * inv_s is within 1.5 ulp of the true quotient, so unless it lies
// within 2^-20 (relative) of a rounding tie, rounding it gives the contract's result; near a tie
// the true division decides. The clamp to [-128, 127] before rounding equals saturating after it.
// Rounding: adding 1.5 * 2^23 rounds to an integer (half to even) in the low mantissa bits.
// `exact` (needs_division(s), worked out where inv_s is) sends v to the division whatever the estimate.
__device__ __forceinline__ int8_t quantize_with_inverse(float v, float s, float inv_s, bool exact) {
  const float est = fminf(fmaxf(v * inv_s, -128.0f), 127.0f);
  const float shifted = __fadd_rn(est, 12582912.0f);
  const float r = __fadd_rn(shifted, -12582912.0f);
  if (!exact && fabsf(fabsf(est - r) - 0.5f) > fabsf(est) * 0x1p-20f + 0x1p-30f) {
    return static_cast<int8_t>(__float_as_uint(shifted) & 0xffu);
  }
  return quantize_rn(v, s);
}

// Q(v, s) of four values (quantize_with_inverse's results, byte e of the word for v[e]) in fewer
// instructions: g = v * inv_s + 768 in one FMA (the product exact inside it) lands on the 2^-14 grid of
// floats in [512, 1024); it is clamped to 768 + [-128, 127], and adding 1.5 * 2^23 - 768 rounds it to an
// integer (half to even) in the low mantissa bits. g - 768 is within 0.75 * 2^-14 of fp32(v / s)
// (2^-23 relative from the product, 2^-15 from the grid, |v / s| <= 128 where it matters), so both round to
// the same integer unless g - 768 is itself a half-integer (bits 0..13 of g are 0x2000); when one of the
// four is, the true division decides all four. The results equal quantize_with_inverse's for every input,
// NaN (-128) included. `exact` (needs_division of any of the four scales) sends all four to the division.
__device__ __forceinline__ uint32_t quantize4_with_inverse(const float (&v)[4], const float* s, const float* inv_s,
                                                           bool exact) {
  uint32_t r[4];
  bool tie = exact;
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const float g = fminf(fmaxf(__fmaf_rn(v[e], inv_s[e], 768.0f), 640.0f), 895.0f);
    tie |= (__float_as_uint(g) & 0x3fffu) == 0x2000u;
    r[e] = __float_as_uint(__fadd_rn(g, 12582144.0f));
  }
  if (tie) {
#pragma unroll
    for (int e = 0; e < 4; ++e) r[e] = static_cast<uint8_t>(quantize_rn(v[e], s[e]));
  }
  return __byte_perm(__byte_perm(r[0], r[1], 0x0040), __byte_perm(r[2], r[3], 0x0040), 0x5410);
}

// One value of the same (the low byte of the result; the other bits are not defined).
__device__ __forceinline__ uint32_t quantize1_with_inverse(float v, float s, float inv_s, bool exact) {
  const float g = fminf(fmaxf(__fmaf_rn(v, inv_s, 768.0f), 640.0f), 895.0f);
  if (exact || (__float_as_uint(g) & 0x3fffu) == 0x2000u) return static_cast<uint8_t>(quantize_rn(v, s));
  return __float_as_uint(__fadd_rn(g, 12582144.0f));
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

// VEC int8 values moved as one access (VEC bytes, aligned to VEC).
template <int VEC>
struct alignas(VEC) Bytes {
  int8_t v[VEC];
};

// VEC floats moved in accesses of up to 16 bytes.
template <int VEC>
struct alignas(VEC * 4 < 16 ? VEC * 4 : 16) Floats {
  float v[VEC];
};

// 16 int8 values moved as one 16-byte access.
struct alignas(16) Int8x16 {
  int8_t v[16];
};

}  // namespace qmamba
