// Device math of one QuantConv1dSiLU output (docs/ops.md), shared by the conv kernel and the fused
// decode mixer so that both compute the same bits.
#pragma once

#include <math.h>

#include "common.cuh"

namespace qmamba {

// 1.5 * 2^23: a float in [2^23, 2^24) has a unit last place of 1, so adding this constant rounds a
// value of magnitude < 2^22 to an integer (half to even) that sits in the low mantissa bits, and its
// bit pattern 0x4B400000 plus an integer of magnitude < 2^22 is that integer plus the constant.
constexpr float kRoundShift = 12582912.0f;
constexpr int kRoundShiftBits = 0x4B400000;

// The MUFU approximations themselves, with denormal inputs and outputs flushed: one instruction
// each (ex2: relative error of a few ulp, CUDA's __expf bound below; rcp: at most 1 ulp).
__device__ __forceinline__ float ex2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float rcp_approx(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// The contract's sequence for SiLU then Q(., s): sigmoid(v) = 1 / (1 + expf(-v)) with the accurate
// expf, v * sigmoid, true division by s, round half to even, saturate. Out of line: it runs rarely.
static __device__ __noinline__ int8_t silu_quantize_exact(float v, float s) {
  const float sig = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-v)));
  return quantize_rn(__fmul_rn(v, sig), s);
}

// A fast estimate decides SiLU then Q(., s) where it provably gives the exact sequence's integer:
//
//   e = ex2(-v * log2(e)),  y = v * rcp(s + s * e),  yc = clamp(y, -128, 127)
//   r = round_half_even(yc) (by kRoundShift),  w = yc - r  (exact, |w| <= 1/2)
//   accepted when  fma(|yc|, 2^-19, |w|) < thr,  thr = 0.5 - 2^-22 - 0.4 * 2^-22 / s_min
//
// Error of yc against the exact sequence's quotient q (before the clamp, which only shrinks it),
// with Q = v * sigmoid(v) / s the real value and 1 ulp <= 2^-23 relative:
//  - the estimate: __expf's documented bound (2 + 1.173|v|) ulp on e (the product v * log2(e)
//    then ex2, which is what __expf is), scaled by e / (1 + e) = sigmoid(-v) in 1 + e; the fma
//    0.5 ulp, rcp 1 ulp, the product 0.5 ulp: at most 4 ulp + 1.173 |v| sigmoid(-v) ulp of |Q|;
//  - the exact sequence: expf 2 ulp (again scaled by sigmoid(-v)), the add, the two divisions and
//    the product 0.5 ulp each: at most 4 ulp of |Q|;
//  - the |v| term: 1.173 |v| sigmoid(-v) |Q| = 1.173 v^2 sigmoid(v) sigmoid(-v) / s, whose largest
//    value over all v is 0.515 / s (at |v| ~ 2.4): an absolute error of at most 0.26 * 2^-22 / s.
// So |yc - clamp(q)| <= 8 ulp of |Q| + 0.26 * 2^-22 / s; the margin above is twice the relative
// part (16 ulp = 2^-19) and 1.5 times the absolute part, plus 2^-22 for the rounding of the fma
// and for results in the denormal range. If yc lies further than that from a rounding tie, the
// exact quotient rounds (and saturates) to the same integer. Estimates closer to a tie (about one
// in 10^4 at calibrated scales) take the exact sequence.
//
// Range: the caller guarantees |v| < 2^100 (so y is finite: the divisor s * (1 + e) >= s, and a
// threshold for s < 2^-23 is negative, which rejects every estimate). Flushed ex2/rcp results
// (e < 2^-126 with v > 87, or a divisor above 2^126 whose true quotient is below 2^-26) give
// estimates within the same margin. A NaN threshold (a NaN scale) rejects every estimate.
__device__ __forceinline__ float silu_tie_threshold(float s_min) {
  return __fsub_rn(0.5f - 0x1p-22f, __fmul_rn(0x1.99999ap-24f, rcp_approx(s_min)));
}

// Output scales at or above this leave no room for the lower saturation: SiLU is at least
// -0.27846454, so v * sigmoid(v) / s >= -126.8 (the estimate too, within its error) and rounds to
// -127 or more.
constexpr float kNoLowSaturationScale = 0x1.2p-9f;  // 0.0021973

// The estimate of the comment above. Returns true when it must not be used (too close to a tie);
// otherwise the integer is the low byte of *bits. kClampLow = false when s >= kNoLowSaturationScale.
template <bool kClampLow = true>
__device__ __forceinline__ bool silu_quantize_estimate(float v, float s, float thr, uint32_t* bits) {
  const float e = ex2_approx(__fmul_rn(v, -1.44269504f));
  const float r = rcp_approx(__fmaf_rn(s, e, s));
  float y = __fmul_rn(v, r);
  if constexpr (kClampLow) y = fmaxf(y, -128.0f);
  const float yc = fminf(y, 127.0f);
  const float shifted = __fadd_rn(yc, kRoundShift);
  const float w = __fsub_rn(yc, __fsub_rn(shifted, kRoundShift));
  *bits = __float_as_uint(shifted);
  return !(__fmaf_rn(fabsf(yc), 0x1p-19f, fabsf(w)) < thr);
}

// SiLU then Q(., s) of docs/ops.md, bit-exact, for one element (the estimate, or the exact sequence
// near a tie and for |v| >= 2^100).
__device__ __forceinline__ int8_t silu_quantize(float v, float s) {
  uint32_t bits;
  if (fabsf(v) < 0x1p100f && !silu_quantize_estimate(v, s, silu_tie_threshold(s), &bits)) {
    return static_cast<int8_t>(bits & 0xffu);
  }
  return silu_quantize_exact(v, s);
}

// v = float(acc) * fp32(s_in * s_w) + float(bias) * s_b: two roundings, then the add (no FMA).
__device__ __forceinline__ float conv_value(int acc, float acc_scale, float bias_term) {
  return __fadd_rn(__fmul_rn(small_int_to_float(acc), acc_scale), bias_term);  // |acc| <= 2^16
}

// The same from acc + kRoundShiftBits (the __dp4a accumulator's start value): its bits are the float
// kRoundShift + acc, so one subtraction gives float(acc) exactly.
__device__ __forceinline__ float conv_value_shifted(int acc_plus_shift, float acc_scale, float bias_term) {
  const float acc = __fsub_rn(__int_as_float(acc_plus_shift), kRoundShift);
  return __fadd_rn(__fmul_rn(acc, acc_scale), bias_term);
}

}  // namespace qmamba
