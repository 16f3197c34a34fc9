// Warp-level tensor-core products and the barrier of a warp pair, as the QuantSSD prefill and the W8A8
// linear use them (sm_80 and later). Host emulation (tests/trt_plugins/host_emulation/tensor_core_shim.h) stands in
// for this header with the same functions, so the fragment layouts below are checked on a CPU too.
#pragma once

#include <stdint.h>

namespace qmamba {

// cvt.rna.tf32.f32: v rounded to 10 mantissa bits (nearest, ties away from zero), as a TF32 operand.
__device__ __forceinline__ uint32_t to_tf32(float v) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
  return r;
}

// d += a (16 x 8, TF32) * b (8 x 8, TF32), fp32 accumulation. Lane g * 4 + q holds a = rows g, g + 8
// of columns q then q + 4 ({(g, q), (g + 8, q), (g, q + 4), (g + 8, q + 4)}), b0 / b1 = (k q / q + 4,
// column g), d = (g, 2q), (g, 2q + 1), (g + 8, 2q), (g + 8, 2q + 1).
__device__ __forceinline__ void mma_tf32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// d += a (16 x 32, s8) * b (32 x 8, s8), exact int32 accumulation. a0 / a1: rows g / g + 8, bytes
// 4q..4q+3 of k; a2 / a3: the same rows, bytes 16 + 4q..; b0 / b1: column g, the same k; d as above.
__device__ __forceinline__ void mma_s8(int (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                       uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// The 64 threads of two warps meet at hardware barrier `id` (1..15; 0 is __syncthreads'), with the
// ordering of shared memory that __syncthreads gives; the block's other warps run on.
__device__ __forceinline__ void warp_pair_barrier(int id) { asm volatile("bar.sync %0, 64;" ::"r"(id) : "memory"); }

}  // namespace qmamba
