// QmambaW8A8Linear (docs/tensorrt.md): the W8A8 linear of a decode step as one matrix-vector kernel,
// with the activation's quantization (and optionally the RMSNorm before it) done in the kernel.
// What the kernels and the launcher share: the kernel arguments, the limits the launcher checks, and the
// two kernels' launchers.
//
// Two kernels compute it: the register kernel (w8a8LinearRegister.cu, dp4a, any GPU) and, for three or
// more activation rows on compute capability 8.0 and later, the tensor-core kernel
// (w8a8LinearTensorCore.cu, mma.sync). Both quantize the activation rows into shared memory the same way
// (w8a8LinearActivation.cuh); w8a8LinearLaunch.cu checks the arguments and picks the kernel.
//
// With norm_group the RMSNorm is taken over groups of that many channels (the gated norm of out_proj's
// input, whose weight and rms fold in here the same way).
//
// Exactness: the integer sums are exact; float(acc) * out_scale (+ residual) is rounded as ONNX
// Runtime rounds Mul then Add (no FMA). Q is docs/ops.md's (true division, half to even, saturate).
// The RMSNorm sums squares in another order than ONNX Runtime's ReduceMean, so a normed activation
// may land on the other side of a rounding tie (1 LSB, rarely), as with TensorRT's own ReduceMean.
#pragma once

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "checks.h"

namespace qmamba {

// Warps a block of either kernel at most (the activation pass keeps a partial sum a warp in shared memory).
constexpr int kMaxWarps = 24;
constexpr int kMaxRowsPerPass = 8;              // activation rows per pass over the weights
constexpr int kMaxNormGroups = 16;              // RMSNorm groups per row (the gated norm's ngroups)
// Dynamic shared memory for the activation rows: the 48 KB a block gets without opting in to more,
// less room for the kernel's own small arrays.
constexpr size_t kSharedLimit = 46 * 1024;

struct LinearArgs {
  const float* __restrict__ x;
  const int32_t* __restrict__ weight;
  const float* __restrict__ out_scale;
  const float* __restrict__ input_scale;
  const float* __restrict__ norm_weight;
  const float* residual;  // may alias y
  float* y;
  int K, N, words;        // words per weight row: ceil(K / 4)
  int norm;
  float eps;
  int norm_group;         // channels per RMSNorm group: K, or a divisor of K
  int64_t rows;
  int chunks;             // chunks (VEC words) per weight row
  int segs;               // segments of 32 * CPL chunks per row
  int vec_x;              // x rows and norm_weight readable as float4 (K % 4 == 0, aligned)
  int one_row;            // one activation row, one norm group, float4 reads, kQuantBatch words a thread at most
  int block_rows;         // tensor-core kernel: weight rows a block takes at most (its shared sums' stride)
};

// The register kernel for passes of `mt` activation rows (1, 2, 4 or 8) over weight rows of 16-byte chunks
// (vec) or of words. Returns QMAMBA_OK or the error code with the message set.
int launch_register_kernel(const char* where, const DeviceLimits& dev, const LinearArgs& a, int mt, bool vec,
                           cudaStream_t stream);
// The tensor-core kernel for passes of `mt` activation rows where it applies (see w8a8LinearTensorCore.cu);
// the caller passes weight rows of whole, aligned 16-byte chunks. Returns whether it launched.
bool launch_tensor_core_kernel(const DeviceLimits& dev, const LinearArgs& a, int mt, cudaStream_t stream);

}  // namespace qmamba
