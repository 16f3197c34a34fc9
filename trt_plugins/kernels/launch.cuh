// Kernel launches that let the next kernel of the stream start early (programmatic dependent launch,
// compute capability 9.0): at decode a layer is a few short kernels, and the time between one kernel's
// end and the next one's first loads was a large part of a step. A kernel launched this way may start
// while the kernel before it still runs; it does only what depends on no earlier kernel (loads of
// constant weights and states) before pdl_wait(), which returns once the kernels before it have
// finished and their writes are visible. Each kernel calls pdl_launch_dependents()
// once it no longer needs its SM resources to itself, so that the next one's blocks can be placed.
// Without support (older GPUs, QMAMBA_PDL=0, a refused launch) these are plain launches and no-ops.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "checks.h"

namespace qmamba {

// Whether this compilation targets an SM with programmatic dependent launch (a kernel may order its loads
// differently where pdl_wait() can overlap the kernel before it).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
constexpr bool kPdlDevice = true;
#else
constexpr bool kPdlDevice = false;
#endif

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// kernel<<<grid, block, smem, stream>>>(args...), as a programmatic dependent launch where enabled.
template <typename... Params, typename... Args>
void launch_dependent(const DeviceLimits& dev, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                      cudaStream_t stream, Args&&... args) {
  if (pdl_enabled(dev)) {
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
    if (e == cudaSuccess) return;
    cudaGetLastError();  // clears the refusal; the plain launch below reports its own errors
    pdl_refused(e);
  }
  kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
}

}  // namespace qmamba
