// QmambaW8A8Linear's rotation pass: out_proj's input in a model with a Hadamard rotation before it
// (export/hadamard.py). Each activation row, after its RMSNorm (over groups, as the linear's own norm), is
// multiplied by the rotation R = F_0 (x) F_1, the Kronecker product of its two factors, and written in
// fp32 to a workspace row; the linear's kernels then quantize and multiply that row as they do an x
// without a norm. In the decode graph the same work is a ReduceMean, a few elementwise layers and two
// MatMuls a layer, each a launch of a few microseconds at batch 1; here it is one.
//
// The row as a [f0, f1] matrix V (element a * f1 + k), the rotation is Y = V F_1, then out = F_0^T Y: the
// last factor first, as export/hadamard.rotate and the graph's MatMuls apply them. A block takes one row
// and a slice of kColumns columns c: it takes the row's RMS per norm group (reading the whole row, a few
// KB from L2), keeps the normed row in shared memory, computes Y[:, slice] (f0 x kColumns sums of f1
// terms) and then out[:, slice] (the same number of sums of f0 terms). One factor (a rotation of at most
// 128 channels or a base order) is f0 = 1 with no second step.
//
// Arithmetic: fp32, the norm as the graph orders it ((x * (1 / sqrt(sum / group + eps))) * weight), each
// sum over k in order with separate multiply and add. The graph's MatMuls sum in another order, so a
// rotated value may differ by a few ulp and land on the other side of a rounding tie of the Q after it.
#include <stdint.h>

#include "checks.h"
#include "launch.cuh"
#include "w8a8Linear.cuh"
#include "w8a8LinearActivation.cuh"

namespace qmamba {
namespace {

constexpr int kColumns = 16;       // columns of V a block rotates
constexpr int kRotateThreads = 256;

struct RotateArgs {
  const float* __restrict__ x;           // [rows, K]
  const float* __restrict__ norm_weight; // [K] or NULL (no norm)
  const float* __restrict__ first;       // F_0 [f0, f0], or NULL when f0 == 1
  const float* __restrict__ last;        // F_1 [f1, f1]
  float* __restrict__ out;               // [rows, K]
  int K, f0, f1, norm_group;
  float eps;
};

__global__ void __launch_bounds__(kRotateThreads) w8a8_rotate_kernel(const RotateArgs a) {
  extern __shared__ float smem[];
  float* v = smem;                   // [K]: the normed row
  float* y = smem + a.K;             // [f0][kColumns]: V F_1 on this block's columns
  __shared__ float scratch[kRotateThreads / 32][1];
  __shared__ float inv_rms[kMaxNormGroups];
  const int64_t row = blockIdx.y;
  const int c0 = blockIdx.x * kColumns;
  const int width = min(kColumns, a.f1 - c0);
  const float* xr = a.x + row * a.K;
  pdl_wait();  // x is the previous kernel's output
  for (int k = threadIdx.x; k < a.K; k += blockDim.x) v[k] = xr[k];
  if (a.norm_weight) {
    const int groups = a.K / a.norm_group;
    for (int g = 0; g < groups; ++g) {
      __syncthreads();  // v written (first group), inv_rms of the group before read by thread 0
      float part[1] = {0.0f};
      for (int k = g * a.norm_group + threadIdx.x; k < (g + 1) * a.norm_group; k += blockDim.x) {
        part[0] = __fadd_rn(part[0], __fmul_rn(v[k], v[k]));
      }
      block_sums<1>(part, scratch, inv_rms + g);
    }
    for (int g = threadIdx.x; g < groups; g += blockDim.x) inv_rms[g] = inv_rms_of(inv_rms[g], a.norm_group, a.eps);
    __syncthreads();
    for (int k = threadIdx.x; k < a.K; k += blockDim.x) {
      v[k] = __fmul_rn(__fmul_rn(v[k], inv_rms[k / a.norm_group]), __ldg(a.norm_weight + k));
    }
  }
  __syncthreads();
  pdl_launch_dependents();  // the linear may start loading its weights
  // Y[r, c] = sum_k V[r, k] F_1[k, c] for the block's columns.
  for (int i = threadIdx.x; i < a.f0 * width; i += blockDim.x) {
    const int r = i / width, c = c0 + i % width;
    const float* vr = v + r * a.f1;
    float s = 0.0f;
    for (int k = 0; k < a.f1; ++k) s = __fadd_rn(s, __fmul_rn(vr[k], __ldg(a.last + k * a.f1 + c)));
    if (a.first) {
      y[r * kColumns + (c - c0)] = s;
    } else {
      a.out[row * a.K + c] = s;
    }
  }
  if (!a.first) return;
  __syncthreads();
  // out[j, c] = sum_r F_0[r, j] Y[r, c].
  for (int i = threadIdx.x; i < a.f0 * width; i += blockDim.x) {
    const int j = i / width, cc = i % width;
    float s = 0.0f;
    for (int r = 0; r < a.f0; ++r) s = __fadd_rn(s, __fmul_rn(__ldg(a.first + r * a.f0 + j), y[r * kColumns + cc]));
    a.out[row * a.K + j * a.f1 + c0 + cc] = s;
  }
}

}  // namespace

size_t rotation_shared_bytes(int K, int f0) {
  return (static_cast<size_t>(K) + static_cast<size_t>(f0) * kColumns) * sizeof(float);
}

void launch_rotation(const DeviceLimits& dev, const float* x, const float* norm_weight, int norm_group,
                    float eps, const float* first, const float* last, int K, int f0, int f1, int64_t rows,
                    float* out, cudaStream_t stream) {
  RotateArgs a{x, norm_weight, f0 > 1 ? first : nullptr, last, out, K, f0, f1, norm_group, eps};
  const dim3 grid(static_cast<unsigned>((f1 + kColumns - 1) / kColumns), static_cast<unsigned>(rows));
  launch_dependent(dev, w8a8_rotate_kernel, grid, dim3(kRotateThreads), rotation_shared_bytes(K, f0), stream, a);
}

}  // namespace qmamba
