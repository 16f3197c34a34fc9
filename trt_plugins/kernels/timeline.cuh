// Per-block timestamps of the decode kernels (QmambaW8A8Linear, QmambaDecodeMixer), compiled in only with
// -DQMAMBA_TIMELINE (CMake option QMAMBA_TIMELINE; `scripts/device_kernels.sh timeline`). Each block records
// its SM and the %globaltimer at its first instruction, when it left pdl_wait(), when its last warp
// finished, and up to six marks of its thread 0 in between (TL_MARK_AFTER: when a value that thread waited
// for had arrived): where a decode step's time goes between kernels, which no profiler shows (Nsight Compute
// serializes the kernels; Nsight Systems sees launches, not blocks). qmamba_timeline_linear() and
// qmamba_timeline_mixer() copy a translation unit's records to the host and clear them
// (scripts/step_timeline.py reads them). Without QMAMBA_TIMELINE the macros are empty and the kernels'
// code is the same instruction for instruction.
#pragma once

#ifdef QMAMBA_TIMELINE
#include <cuda_runtime.h>
#include <stdint.h>

namespace qmamba {
constexpr int kTimelineMarks = 6;
struct TimelineRecord {
  uint32_t kind, block, sm, n;
  unsigned long long start, wait, end;
  unsigned long long mark[kTimelineMarks];  // 0: not reached
};
// scripts/step_timeline.py reads the records as numpy's RECORD dtype: the same fields, no padding.
static_assert(sizeof(TimelineRecord) == 88, "TimelineRecord must match step_timeline.py's RECORD");
constexpr unsigned kTimelineCap = 1u << 17;

// The "memory" clobber keeps the read in program order with the loads and stores around it.
__device__ __forceinline__ unsigned long long tl_now() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)::"memory");
  return t;
}
__device__ __forceinline__ uint32_t tl_sm() {
  uint32_t s;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(s));
  return s;
}
}  // namespace qmamba

// qmamba_timeline_<tu>(dst, cap): copies up to `cap` records (and at most kTimelineCap, what the buffer
// holds) to dst, clears them and returns how many were written since the last call (more than were copied
// when the buffer or `cap` overflowed), or -1 on a CUDA error.
#define QMAMBA_TIMELINE_STORAGE(tu)                                                              \
  static __device__ qmamba::TimelineRecord g_tl[qmamba::kTimelineCap];                          \
  static __device__ unsigned g_tl_count;                                                         \
  extern "C" int qmamba_timeline_##tu(void* dst, int cap) {                                      \
    unsigned written = 0;                                                                        \
    if (cudaMemcpyFromSymbol(&written, g_tl_count, sizeof written) != cudaSuccess) return -1;     \
    unsigned n = written < qmamba::kTimelineCap ? written : qmamba::kTimelineCap;                \
    if (cap < 0) cap = 0;                                                                        \
    if (n > static_cast<unsigned>(cap)) n = static_cast<unsigned>(cap);                          \
    if (dst && n && cudaMemcpyFromSymbol(dst, g_tl, n * sizeof(qmamba::TimelineRecord)) != cudaSuccess) \
      return -1;                                                                                 \
    const unsigned zero = 0;                                                                     \
    if (cudaMemcpyToSymbol(g_tl_count, &zero, sizeof zero) != cudaSuccess) return -1;            \
    return static_cast<int>(written);                                                            \
  }

// In a kernel: TL_BEGIN first (before any __syncthreads), TL_WAIT after pdl_wait(), TL_MARK_AFTER(i, v) where
// thread 0 has v, TL_END(kind, n) where each warp finishes (all warps must reach it; the last one writes the
// record).
#define TL_BEGIN                                                                                 \
  __shared__ unsigned long long tl_start_s, tl_wait_s, tl_end_s, tl_mark_s[qmamba::kTimelineMarks]; \
  __shared__ unsigned tl_done_s;                                                                 \
  __shared__ float tl_sink_s;                                                                    \
  if (threadIdx.x == 0) {                                                                        \
    tl_start_s = qmamba::tl_now();                                                               \
    tl_end_s = 0;                                                                                \
    tl_done_s = 0;                                                                               \
    for (int m = 0; m < qmamba::kTimelineMarks; ++m) tl_mark_s[m] = 0;                           \
  }
#define TL_WAIT                                                                                  \
  if (threadIdx.x == 0) tl_wait_s = qmamba::tl_now();
// Mark i of thread 0 once float v (a loaded value or one computed from it) is there: storing v waits for it.
#define TL_MARK_AFTER(i, v)                                                                      \
  if (threadIdx.x == 0) {                                                                        \
    tl_sink_s = (v);                                                                             \
    tl_mark_s[i] = qmamba::tl_now();                                                             \
  }
#define TL_END(kind_, n_)                                                                        \
  __syncwarp();                                                                                  \
  if ((threadIdx.x & 31) == 0) {                                                                 \
    atomicMax(&tl_end_s, qmamba::tl_now());                                                      \
    __threadfence_block();                                                                       \
    if (atomicAdd(&tl_done_s, 1u) == blockDim.x / 32 - 1) {                                      \
      const unsigned i = atomicAdd(&g_tl_count, 1u);                                             \
      if (i < qmamba::kTimelineCap) {                                                            \
        qmamba::TimelineRecord r{(kind_), blockIdx.x + 65536u * blockIdx.y, qmamba::tl_sm(),     \
                                 static_cast<uint32_t>(n_), tl_start_s, tl_wait_s,               \
                                 atomicAdd(&tl_end_s, 0ull), {}};                                \
        for (int m = 0; m < qmamba::kTimelineMarks; ++m) r.mark[m] = tl_mark_s[m];               \
        g_tl[i] = r;                                                                             \
      }                                                                                          \
    }                                                                                            \
  }
#else
#define QMAMBA_TIMELINE_STORAGE(tu)
#define TL_BEGIN
#define TL_WAIT
#define TL_MARK_AFTER(i, v)
#define TL_END(kind_, n_)
#endif
