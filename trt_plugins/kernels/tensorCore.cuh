// Warp-level tensor-core products, their fragment loads and f16 pairs, and the barrier of a warp pair, as the
// QuantSSD prefill and the W8A8 linear use them (sm_80 and later). Host emulation
// (tests/trt_plugins/host_emulation/tensor_core_shim.h) stands in for this header with the same functions, so the
// fragment layouts below are checked on a CPU too.
#pragma once

#include <stdint.h>

namespace qmamba {

// d += a (16 x 32, s8) * b (32 x 8, s8), exact int32 accumulation. Lane g * 4 + q holds a0 / a1: rows g / g + 8,
// bytes 4q..4q+3 of k; a2 / a3: the same rows, bytes 16 + 4q..; b0 / b1: column g, the same k; d = (g, 2q),
// (g, 2q + 1), (g + 8, 2q), (g + 8, 2q + 1).
__device__ __forceinline__ void mma_s8(int (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                       uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// d += a (16 x 16, f16) * b (16 x 8, f16), fp32 accumulation. Each register holds two f16, the lower
// column (a) or row (b) in the low half: a0 / a1 = rows g / g + 8, columns 2q, 2q + 1; a2 / a3 the same rows,
// columns 8 + 2q, 9 + 2q; b0 / b1 = rows 2q, 2q + 1 / 8 + 2q, 9 + 2q of column g; d as mma_s8's. The
// accumulator of two 16 x 8 products side by side is, packed to f16 pairs, the next product's a.
__device__ __forceinline__ void mma_f16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8 x 16-byte tiles of shared memory, one instruction: lanes 8j .. 8j + 7 give the row addresses of tile j
// (16-byte aligned), and r[j] is word q of row g of tile j. A 16 x 32 int8 tile [rows][k] taken as the tiles (rows
// 0-7, k 0-15), (8-15, 0-15), (0-7, 16-31), (8-15, 16-31) gives mma_s8's a0..a3; a 16 x 16 f16 tile likewise
// mma_f16's a, and two 8-row tiles of b's columns its b0, b1 for two column tiles.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// The same four tiles transposed: r[j] holds rows 2q and 2q + 1 of column g of tile j (the lower row in the low
// half). Tiles of a row-major f16 [k][n] operand so taken are mma_f16's b for k = 2q.. of column g.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// The four int8 of a word as f16 (exact), bytes 0, 1 in lo and 2, 3 in hi: each biased byte b = v + 128 set in
// the f16 1024 + b (0x6400 | b), then 1152 taken off both halves at once.
__device__ __forceinline__ void int8x4_to_f16x2(uint32_t w, uint32_t& lo, uint32_t& hi) {
  const uint32_t biased = w ^ 0x80808080u;
  const uint32_t a = __byte_perm(biased, 0x64646464u, 0x4140), b = __byte_perm(biased, 0x64646464u, 0x4342);
  asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(lo) : "r"(a), "r"(0x64806480u));
  asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(hi) : "r"(b), "r"(0x64806480u));
}

// lo and hi rounded to f16 (nearest even), lo in the low half.
__device__ __forceinline__ uint32_t pack_f16x2(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

// The two f16 of a register as floats (exact): x the low half.
__device__ __forceinline__ float2 unpack_f16x2(uint32_t v) {
  float lo, hi;
  asm("{.reg .f16 l, h;\n mov.b32 {l, h}, %2;\n cvt.f32.f16 %0, l;\n cvt.f32.f16 %1, h;\n}"
      : "=f"(lo), "=f"(hi)
      : "r"(v));
  return make_float2(lo, hi);
}

// The float of one f16 (its bits).
__device__ __forceinline__ float f16_bits_to_float(uint16_t h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}

// The 64 threads of two warps meet at hardware barrier `id` (1..15; 0 is __syncthreads'), with the
// ordering of shared memory that __syncthreads gives; the block's other warps run on.
__device__ __forceinline__ void warp_pair_barrier(int id) { asm volatile("bar.sync %0, 64;" ::"r"(id) : "memory"); }

}  // namespace qmamba
