// Host stand-in for trt_plugins/kernels/tensorCore.cuh (with thread_shim.h): each mma is a warp-wide
// exchange of the lanes' fragments through memory, then every lane computes its own four results from the
// whole tiles, the products summed exactly (double, or int64 for int8) and rounded once before the fp32
// add, as tests/trt_plugins/ssd_prefill_order.py models a tensor core. A wrong fragment index in the kernel
// gives a wrong product here as on a GPU.
#pragma once
#include <cstdint>

namespace qmamba {

inline uint32_t to_tf32(float v) {  // cvt.rna.tf32.f32: nearest, ties away from zero; inf and nan kept
  const uint32_t b = __float_as_uint(v);
  if ((b & 0x7f800000u) == 0x7f800000u) return b;
  return (b + 0x1000u) & 0xffffe000u;
}

namespace emu_mma {
// Puts this lane's n words where its warp can read them; returns the warp's words ([lane][kLaneWords]).
inline const uint32_t* exchange(const uint32_t* mine, int n) {
  const unsigned t = threadIdx.x;
  uint32_t* slot = emu::lane_words.data() + size_t(t) * emu::kLaneWords;
  for (int i = 0; i < n; ++i) slot[i] = mine[i];
  emu::warp_barriers[t / 32]->arrive_and_wait();
  return emu::lane_words.data() + size_t(t & ~31u) * emu::kLaneWords;
}
inline void done() { emu::warp_barriers[threadIdx.x / 32]->arrive_and_wait(); }
inline double tf32_value(uint32_t r) { return double(__uint_as_float(r & 0xffffe000u)); }  // a TF32 operand's bits
inline int s8_byte(uint32_t w, int k) { return int(int8_t(uint8_t(w >> (8 * k)))); }
}  // namespace emu_mma

inline void mma_tf32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const uint32_t mine[6] = {a[0], a[1], a[2], a[3], b0, b1};
  const uint32_t* w = emu_mma::exchange(mine, 6);
  auto A = [&](int r, int k) {  // lane (r % 8, k % 4): a0 (r < 8, k < 4), a1 (r >= 8), a2 / a3 (k >= 4)
    return emu_mma::tf32_value(w[((r % 8) * 4 + k % 4) * emu::kLaneWords + (r >= 8 ? 1 : 0) + (k >= 4 ? 2 : 0)]);
  };
  auto B = [&](int k, int c) { return emu_mma::tf32_value(w[(c * 4 + k % 4) * emu::kLaneWords + 4 + (k >= 4)]); };
  const int g = int(threadIdx.x % 32) / 4, q = int(threadIdx.x % 4);
  for (int e = 0; e < 4; ++e) {
    const int r = g + 8 * (e / 2), c = 2 * q + e % 2;
    double sum = 0.0;
    for (int k = 0; k < 8; ++k) sum += A(r, k) * B(k, c);
    d[e] = d[e] + float(sum);
  }
  emu_mma::done();
}

inline void mma_s8(int (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  const uint32_t mine[6] = {a0, a1, a2, a3, b0, b1};
  const uint32_t* w = emu_mma::exchange(mine, 6);
  auto A = [&](int r, int k) {  // lane (r % 8, (k % 16) / 4), byte k % 4: a0 / a1 (k < 16), a2 / a3
    return emu_mma::s8_byte(w[((r % 8) * 4 + (k % 16) / 4) * emu::kLaneWords + (r >= 8 ? 1 : 0) + (k >= 16 ? 2 : 0)],
                            k % 4);
  };
  auto B = [&](int k, int c) {
    return emu_mma::s8_byte(w[(c * 4 + (k % 16) / 4) * emu::kLaneWords + 4 + (k >= 16)], k % 4);
  };
  const int g = int(threadIdx.x % 32) / 4, q = int(threadIdx.x % 4);
  for (int e = 0; e < 4; ++e) {
    const int r = g + 8 * (e / 2), c = 2 * q + e % 2;
    int64_t sum = 0;
    for (int k = 0; k < 32; ++k) sum += int64_t(A(r, k)) * B(k, c);
    d[e] = int(int64_t(d[e]) + sum);
  }
  emu_mma::done();
}

inline void warp_pair_barrier(int id) { emu::pair_barriers[id]->arrive_and_wait(); }

}  // namespace qmamba
