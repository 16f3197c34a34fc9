// The RMSNorm arithmetic shared by the kernels that norm rows (QmambaW8A8Linear's activation pass and rotation
// pass, QmambaGatedNorm): the ONNX graph's order of operations, each one rounded on its own (no FMA).
#pragma once

#include <cuda_runtime.h>

namespace qmamba {

// acc + the squares of v's four values, in order.
__device__ __forceinline__ float add_squares(float acc, float4 v) {
  acc = __fadd_rn(acc, __fmul_rn(v.x, v.x));
  acc = __fadd_rn(acc, __fmul_rn(v.y, v.y));
  acc = __fadd_rn(acc, __fmul_rn(v.z, v.z));
  return __fadd_rn(acc, __fmul_rn(v.w, v.w));
}

// 1 / sqrt(sum / count + eps) in the ONNX graph's order (ReduceMean, Add, Sqrt, Reciprocal).
__device__ __forceinline__ float inv_rms_of(float sum, int count, float eps) {
  return __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(__fdiv_rn(sum, static_cast<float>(count)), eps)));
}

}  // namespace qmamba
