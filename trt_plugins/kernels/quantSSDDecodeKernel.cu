// QuantSSD decode (docs/ops.md): one token per batch row, the int8 state read, updated in fp32 and
// requantized with its per-group scales. The state update follows the reference's order of
// operations without FMA contraction, so ssm_state_out equals the reference except at ties.
//
// Layout: a block owns one (batch row, head) and a range of dims i; TPR threads share one state
// row (i, 0..n) and each takes VEC consecutive state entries per step (16 with 16-byte accesses).
// The state is read and written once: it is the whole memory traffic at real sizes.
#include <math.h>

#include "checks.h"
#include "common.cuh"
#include "ssdChecks.h"

namespace qmamba {
namespace {

constexpr int kThreads = 128;

struct DecodeArgs {
  const int8_t* __restrict__ x;
  const int8_t* __restrict__ dt;
  const int8_t* __restrict__ B;
  const int8_t* __restrict__ C;
  const float* __restrict__ A_log;
  const float* __restrict__ D;
  const float* __restrict__ dt_bias;
  const float* __restrict__ x_out_scales;
  const float* __restrict__ B_out_scales;
  const float* __restrict__ C_out_scales;
  const int32_t* __restrict__ head_ranges;
  const int32_t* __restrict__ dim_ranges;
  const float* __restrict__ state_scale;
  const int8_t* state;  // may alias state_out: not __restrict__
  void* __restrict__ y;
  int8_t* state_out;
  float dt_scale, dt_min, dt_max;
  int nheads, headdim, d_state, gn, hpg, nhg, ndg;
  int tpr;             // threads per state row (power of two, <= 32)
  int row_blocks;      // blocks per (batch row, head)
  int out_fp16;
};

template <int VEC>
struct alignas(VEC) Bytes {
  int8_t v[VEC];
};
template <int VEC>
struct alignas(VEC * 4) Floats {
  float v[VEC];
};

template <int VEC>
__global__ void __launch_bounds__(kThreads) quant_ssd_decode_kernel(const DecodeArgs a) {
  const int rows_per_block = kThreads / a.tpr;
  const int64_t bh = blockIdx.x / a.row_blocks;
  const int i = (blockIdx.x % a.row_blocks) * rows_per_block + threadIdx.x / a.tpr;
  const int lane_in_row = threadIdx.x % a.tpr;
  const int hd = static_cast<int>(bh % a.nheads);
  const int64_t b = bh / a.nheads;
  const int p = a.headdim, n = a.d_state;
  const bool active = i < p;  // rows past headdim only join the shuffles
  const int dim = active ? i : 0;

  const int sg = hd / a.hpg;
  const int hg = head_group(a.head_ranges, a.nhg, sg, hd % a.hpg);
  const int dg = dim_group(a.dim_ranges, a.nhg, a.ndg, sg, hg, dim);
  const float s_x = __ldg(a.x_out_scales + (sg * a.nhg + hg) * a.ndg + dg);
  const float* sscale = a.state_scale + static_cast<int64_t>((sg * a.nhg + hg) * a.ndg + dg) * n;

  // Reference order: dA = exp(dt * A), dBx = (dt * xh) * Bh, S = dA * S + dBx.
  const float dtv = dt_value(__ldg(a.dt + b * a.nheads + hd), a.dt_scale, __ldg(a.dt_bias + hd),
                             a.dt_min, a.dt_max);
  const float A = -expf(__ldg(a.A_log + hd));
  const float dA = expf(__fmul_rn(dtv, A));
  const int64_t x_idx = (b * a.nheads + hd) * p + dim;
  const float xh = __fmul_rn(s_x, static_cast<float>(__ldg(a.x + x_idx)));
  const float dtx = __fmul_rn(dtv, xh);
  const float sB = __ldg(a.B_out_scales + sg), sC = __ldg(a.C_out_scales + sg);
  const int64_t bc_row = b * a.gn + static_cast<int64_t>(sg) * n;
  const int64_t st_row = x_idx * n;

  float y = 0.0f;
  if (active) {
    for (int j0 = lane_in_row * VEC; j0 < n; j0 += a.tpr * VEC) {
      Bytes<VEC> s = {};
      if (a.state != nullptr) s = *reinterpret_cast<const Bytes<VEC>*>(a.state + st_row + j0);
      const Bytes<VEC> bq = *reinterpret_cast<const Bytes<VEC>*>(a.B + bc_row + j0);
      const Bytes<VEC> cq = *reinterpret_cast<const Bytes<VEC>*>(a.C + bc_row + j0);
      const Floats<VEC> sc = *reinterpret_cast<const Floats<VEC>*>(sscale + j0);
      Bytes<VEC> out;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const float s0 = __fmul_rn(static_cast<float>(s.v[k]), sc.v[k]);
        const float bh_ = __fmul_rn(static_cast<float>(bq.v[k]), sB);
        const float st = __fadd_rn(__fmul_rn(dA, s0), __fmul_rn(dtx, bh_));
        y += st * __fmul_rn(static_cast<float>(cq.v[k]), sC);
        out.v[k] = quantize_rn(st, sc.v[k]);
      }
      *reinterpret_cast<Bytes<VEC>*>(a.state_out + st_row + j0) = out;
    }
  }
  for (int off = a.tpr / 2; off > 0; off /= 2) y += __shfl_xor_sync(0xffffffffu, y, off);
  if (active && lane_in_row == 0) store_y(a.y, x_idx, y + __ldg(a.D + hd) * xh, a.out_fp16 != 0);
}

}  // namespace
}  // namespace qmamba

extern "C" int qmamba_quant_ssd_decode(const qmamba_ssd_params* params, const qmamba_ssd_tensors* t,
                                       int64_t batch, qmamba_stream_t stream) {
  using namespace qmamba;
  const char* where = "qmamba_quant_ssd_decode";
  QMAMBA_TRY(check_ssd(where, params, t, batch, 1));
  DecodeArgs a;
  a.x = t->x; a.dt = t->dt; a.B = t->B; a.C = t->C;
  a.A_log = t->A_log; a.D = t->D; a.dt_bias = t->dt_bias;
  a.x_out_scales = t->x_out_scales; a.B_out_scales = t->B_out_scales; a.C_out_scales = t->C_out_scales;
  a.head_ranges = t->x_head_group_range; a.dim_ranges = t->x_dim_group_range;
  a.state_scale = t->ssm_state_scale; a.state = t->ssm_state;
  a.y = t->y; a.state_out = t->ssm_state_out;
  a.dt_scale = params->dt_scale; a.dt_min = params->dt_min; a.dt_max = params->dt_max;
  a.nheads = params->nheads; a.headdim = params->headdim; a.d_state = params->d_state;
  a.gn = params->ngroups * params->d_state; a.hpg = params->nheads / params->ngroups;
  a.nhg = params->n_head_groups; a.ndg = params->n_dim_groups;
  a.out_fp16 = params->out_fp16;

  const int n = a.d_state;
  const bool vec16 = n % 16 == 0 && aligned16(a.state) && aligned16(a.state_out) && aligned16(a.B) &&
                     aligned16(a.C) && aligned16(a.state_scale);
  const int vec = vec16 ? 16 : 1;
  // Enough threads per row to cover it in one pass when possible, at most a warp.
  a.tpr = 1;
  while (a.tpr < 32 && a.tpr * vec < n) a.tpr *= 2;
  const int rows_per_block = kThreads / a.tpr;
  a.row_blocks = (a.headdim + rows_per_block - 1) / rows_per_block;
  const int64_t blocks = batch * a.nheads * a.row_blocks;
  if (blocks > 0x7fffffff) return fail(QMAMBA_ERR_BAD_SIZE, "%s: batch * nheads too large for one launch", where);
  if (vec16) {
    quant_ssd_decode_kernel<16><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(a);
  } else {
    quant_ssd_decode_kernel<1><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(a);
  }
  return check_launch(where);
}
