// Device math of one QuantConv1dSiLU output (docs/ops.md), shared by the conv kernel and the fused
// decode mixer so that both compute the same bits.
#pragma once

#include <math.h>

#include "common.cuh"

namespace qmamba {

// SiLU then Q(., s) of docs/ops.md, bit-exact. The exact sequence costs two IEEE divisions and
// the accurate expf per element, which would make this memory-bound kernel compute-bound, so a
// fast estimate (__expf, approximate divisions) decides first. Its error against the exact
// sequence is at most (2 + 1.173|v|) ulp from __expf (CUDA's bound, |v| < 80) plus 2 ulp for each
// approximate division and the exact sequence's own roundings: below (16 + 2|v|) ulp, i.e.
// (16 + 2|v|) * 2^-23 relative. When the estimate lies further than that from a rounding tie,
// rounding it gives the integer the exact quotient rounds to; only estimates that close to a tie
// (a few in 10^4 at real scales) or |v| >= 80 run the exact sequence.
static __device__ __noinline__ int8_t silu_quantize_exact(float v, float s) {
  // The contract's sequence: sigmoid(v) = 1 / (1 + expf(-v)) with the accurate expf, v * sigmoid,
  // true division by s, round half to even, saturate. Out of line: it runs rarely.
  const float sig = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-v)));
  return quantize_rn(__fmul_rn(v, sig), s);
}

__device__ __forceinline__ int8_t silu_quantize(float v, float s) {
  if (fabsf(v) < 80.0f) {
    // Clamping to [-128, 127] before rounding equals saturating after it; adding 1.5 * 2^23
    // rounds half to even into the low mantissa bits (no quarter-rate FRND / F2I).
    const float est = fminf(fmaxf(__fdividef(__fdividef(v, 1.0f + __expf(-v)), s), -128.0f), 127.0f);
    const float shifted = __fadd_rn(est, 12582912.0f);
    const float r = __fadd_rn(shifted, -12582912.0f);
    const float margin = fabsf(est) * fmaf(fabsf(v), 0x1p-22f, 0x1p-19f) + 0x1p-24f;
    if (fabsf(fabsf(est - r) - 0.5f) > margin) return static_cast<int8_t>(__float_as_uint(shifted) & 0xffu);
  }
  return silu_quantize_exact(v, s);
}

// v = float(acc) * fp32(s_in * s_w) + float(bias) * s_b: two roundings, then the add (no FMA).
__device__ __forceinline__ float conv_value(int acc, float acc_scale, float bias_term) {
  return __fadd_rn(__fmul_rn(small_int_to_float(acc), acc_scale), bias_term);  // |acc| <= 2^16
}

}  // namespace qmamba
