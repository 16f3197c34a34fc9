// Device math of one QuantSSD decode step on a piece of a state row (docs/ops.md), for the fused decode
// mixer. The QuantSSD decode kernel (quantSSDDecodeKernel.cu) computes the same products in the same
// order, with Bh and Ch staged in shared memory, and its Q (quantize4_with_inverse) returns what
// quantize_with_inverse does, so both compute the same state bits.
#pragma once

#include "common.cuh"

namespace qmamba {

// What one batch row needs from memory: its state piece, B and C pieces, x and dt of this head.
template <int VEC>
struct RowInputs {
  Bytes<VEC> st, bq, cq;
  int8_t xq, dtq;
};

// One state piece: S = dA * S0 + (dt * xh) * Bh in the reference's order (no FMA), requantized
// (inv_sc = 1 / scale for the fast rounding path, the division where needs_division(scale));
// returns this piece's share of y = sum_j S * Ch.
template <int VEC>
__device__ __forceinline__ float update_piece(const RowInputs<VEC>& r, const Floats<VEC>& sc,
                                              const Floats<VEC>& inv_sc, float dA, float dtx,
                                              float sB, float sC, int8_t* __restrict__ out) {
  float st[VEC], bq[VEC], cq[VEC];
  if constexpr (VEC % 4 == 0) {  // exact int8 -> float without the quarter-rate I2F
#pragma unroll
    for (int m = 0; m < VEC / 4; ++m) {
      biased_word_to_floats(reinterpret_cast<const uint32_t*>(r.st.v)[m] ^ 0x80808080u, st + 4 * m);
      biased_word_to_floats(reinterpret_cast<const uint32_t*>(r.bq.v)[m] ^ 0x80808080u, bq + 4 * m);
      biased_word_to_floats(reinterpret_cast<const uint32_t*>(r.cq.v)[m] ^ 0x80808080u, cq + 4 * m);
    }
  } else {
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      st[e] = static_cast<float>(r.st.v[e]);
      bq[e] = static_cast<float>(r.bq.v[e]);
      cq[e] = static_cast<float>(r.cq.v[e]);
    }
  }
  Bytes<VEC> q;
  float y = 0.0f;
#pragma unroll
  for (int e = 0; e < VEC; ++e) {
    const float s0 = __fmul_rn(st[e], sc.v[e]);
    const float bh = __fmul_rn(bq[e], sB);
    const float s1 = __fadd_rn(__fmul_rn(dA, s0), __fmul_rn(dtx, bh));
    y += s1 * __fmul_rn(cq[e], sC);
    q.v[e] = quantize_with_inverse(s1, sc.v[e], inv_sc.v[e], needs_division(sc.v[e]));
  }
  *reinterpret_cast<Bytes<VEC>*>(out) = q;
  return y;
}

}  // namespace qmamba
