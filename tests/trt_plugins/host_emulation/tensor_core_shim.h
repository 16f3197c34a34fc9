// Host stand-in for trt_plugins/kernels/tensorCore.cuh (with thread_shim.h): each mma is a warp-wide
// exchange of the lanes' fragments through memory, then every lane computes its own four results from the
// whole tiles, the products summed exactly (double, or int64 for int8) and rounded once before the fp32
// add, as tests/trt_plugins/ssd_prefill_order.py models a tensor core; ldmatrix exchanges the lanes' row
// addresses likewise. A wrong fragment index in the kernel gives a wrong product here as on a GPU.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace qmamba {

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
inline int s8_byte(uint32_t w, int k) { return int(int8_t(uint8_t(w >> (8 * k)))); }
// ldmatrix's row addresses: each lane's (16-byte aligned, as on a GPU) put where its warp can read them; the
// returned function gives the address of lane l's row.
inline auto exchange_rows(const char* what, const void* row) {
  const uintptr_t p = reinterpret_cast<uintptr_t>(row);
  if (p % 16 != 0) {
    std::fprintf(stderr, "%s: row address %p is not 16-byte aligned\n", what, row);
    std::abort();
  }
  const uint32_t mine[2] = {uint32_t(p), uint32_t(uint64_t(p) >> 32)};
  const uint32_t* w = exchange(mine, 2);
  return [w](int lane) {
    const uint32_t* a = w + lane * emu::kLaneWords;
    return reinterpret_cast<const char*>(uintptr_t(a[0]) | (uintptr_t(uint64_t(a[1]) << 32)));
  };
}
}  // namespace emu_mma

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

inline uint32_t pack_f16x2(float lo, float hi) {  // cvt.rn.f16x2.f32: nearest even, lo in the low half
  const _Float16 h[2] = {static_cast<_Float16>(lo), static_cast<_Float16>(hi)};
  uint32_t r;
  std::memcpy(&r, h, 4);
  return r;
}
inline float2 unpack_f16x2(uint32_t v) {
  _Float16 h[2];
  std::memcpy(h, &v, 4);
  return make_float2(float(h[0]), float(h[1]));
}

inline float f16_bits_to_float(uint16_t h) {
  _Float16 v;
  std::memcpy(&v, &h, 2);
  return float(v);
}

inline void mma_f16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const uint32_t mine[6] = {a[0], a[1], a[2], a[3], b0, b1};
  const uint32_t* w = emu_mma::exchange(mine, 6);
  auto half = [](uint32_t word, int hi) { return double(hi ? unpack_f16x2(word).y : unpack_f16x2(word).x); };
  auto A = [&](int r, int k) {  // lane (r % 8, (k % 8) / 2), half k % 2: a0 / a1 (k < 8), a2 / a3
    return half(w[((r % 8) * 4 + (k % 8) / 2) * emu::kLaneWords + (r >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)], k % 2);
  };
  auto B = [&](int k, int c) { return half(w[(c * 4 + (k % 8) / 2) * emu::kLaneWords + 4 + (k >= 8)], k % 2); };
  const int g = int(threadIdx.x % 32) / 4, q = int(threadIdx.x % 4);
  for (int e = 0; e < 4; ++e) {
    const int r = g + 8 * (e / 2), c = 2 * q + e % 2;
    double sum = 0.0;
    for (int k = 0; k < 16; ++k) sum += A(r, k) * B(k, c);
    d[e] = d[e] + float(sum);
  }
  emu_mma::done();
}

// ldmatrix.x4: lane l takes word l % 4 of row l / 4 of each tile j (rows given by lanes 8j .. 8j + 7).
inline void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  const auto row_of = emu_mma::exchange_rows("ldmatrix_x4", row);
  const int lane = int(threadIdx.x % 32);
  for (int j = 0; j < 4; ++j) std::memcpy(&r[j], row_of(8 * j + lane / 4) + 4 * (lane % 4), 4);
  emu_mma::done();
}

// ldmatrix.x4.trans: lane l takes, of each tile j, column l / 4 of rows 2(l % 4) and 2(l % 4) + 1 (lower row in
// the low half).
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
  const auto row_of = emu_mma::exchange_rows("ldmatrix_x4_trans", row);
  const int lane = int(threadIdx.x % 32);
  for (int j = 0; j < 4; ++j) {
    uint16_t h[2];
    for (int k = 0; k < 2; ++k) std::memcpy(&h[k], row_of(8 * j + 2 * (lane % 4) + k) + 2 * (lane / 4), 2);
    r[j] = uint32_t(h[0]) | (uint32_t(h[1]) << 16);
  }
  emu_mma::done();
}

inline void int8x4_to_f16x2(uint32_t w, uint32_t& lo, uint32_t& hi) {
  auto v = [&](int k) { return float(int8_t(uint8_t(w >> (8 * k)))); };
  lo = pack_f16x2(v(0), v(1));
  hi = pack_f16x2(v(2), v(3));
}

inline void warp_pair_barrier(int id) { emu::pair_barriers[id]->arrive_and_wait(); }

}  // namespace qmamba
