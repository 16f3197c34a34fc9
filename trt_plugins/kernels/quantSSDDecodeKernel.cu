// QuantSSD decode (docs/ops.md): one token per batch row, the int8 state read, updated in fp32 and
// requantized with its per-group scales. The state update follows the reference's order of
// operations without FMA contraction, so ssm_state_out equals the reference except at ties.
//
// Layout: a block owns one head and a range of its dims i, for a range of batch rows; TPR threads
// share one state row (i, 0..n), each taking VEC consecutive entries (8 with 8-byte accesses: 16
// needed twice the registers for the scales and halved the resident warps).
// The state is read and written once: it is the whole memory traffic at real sizes. The group
// lookups and the state scales depend on (head, i, j) only, so they are done once per thread,
// and the loop over batch rows streams the state with the next row's loads in flight.
#include <math.h>

#include "checks.h"
#include "common.cuh"
#include "ssdDecodeStep.cuh"
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
  int tpr;               // threads per state row (power of two, <= 32)
  int row_blocks;        // blocks per head along headdim
  int64_t batch;
  int64_t batch_per_block;
  int out_fp16;
};

template <int VEC>
__device__ __forceinline__ RowInputs<VEC> load_row(const DecodeArgs& a, int64_t b, int hd, int i,
                                                   int sg, int j0) {
  RowInputs<VEC> r;
  const int64_t head_row = (b * a.nheads + hd) * a.headdim + i;
  r.st = a.state != nullptr ? *reinterpret_cast<const Bytes<VEC>*>(a.state + head_row * a.d_state + j0)
                            : Bytes<VEC>{};
  const int64_t bc = b * a.gn + static_cast<int64_t>(sg) * a.d_state + j0;
  r.bq = *reinterpret_cast<const Bytes<VEC>*>(a.B + bc);
  r.cq = *reinterpret_cast<const Bytes<VEC>*>(a.C + bc);
  r.xq = __ldg(a.x + head_row);
  r.dtq = __ldg(a.dt + b * a.nheads + hd);
  return r;
}

template <int VEC>
__global__ void __launch_bounds__(kThreads) quant_ssd_decode_kernel(const DecodeArgs a) {
  const int rows_per_block = kThreads / a.tpr;
  const int rb = blockIdx.x % a.row_blocks;
  const int64_t rest = blockIdx.x / a.row_blocks;
  const int hd = static_cast<int>(rest % a.nheads);
  const int64_t b_begin = (rest / a.nheads) * a.batch_per_block;
  const int64_t b_end = min(b_begin + a.batch_per_block, a.batch);
  const int i_raw = rb * rows_per_block + threadIdx.x / a.tpr;
  const bool active = i_raw < a.headdim;  // rows past headdim only join the shuffles
  const int i = active ? i_raw : 0;
  const int lane_in_row = threadIdx.x % a.tpr;
  const int n = a.d_state;

  const int sg = hd / a.hpg;
  const int hg = head_group(a.head_ranges, a.nhg, sg, hd % a.hpg);
  const int dg = dim_group(a.dim_ranges, a.nhg, a.ndg, sg, hg, i);
  const float s_x = __ldg(a.x_out_scales + (sg * a.nhg + hg) * a.ndg + dg);
  const float* sscale = a.state_scale + static_cast<int64_t>((sg * a.nhg + hg) * a.ndg + dg) * n;
  const float A = -expf(__ldg(a.A_log + hd));
  const float Dh = __ldg(a.D + hd), dt_b = __ldg(a.dt_bias + hd);
  const float sB = __ldg(a.B_out_scales + sg), sC = __ldg(a.C_out_scales + sg);
  const int j_first = lane_in_row * VEC;
  const bool has_piece = active && j_first < n;

  // With 8-byte pieces and d_state <= 256 each thread has one piece a row: its scales stay in
  // registers, and the next batch row's loads are issued before this one computes.
  Floats<VEC> sc_first = {}, inv_first = {};
  RowInputs<VEC> cur = {};
  if (has_piece) {
    sc_first = *reinterpret_cast<const Floats<VEC>*>(sscale + j_first);
#pragma unroll
    for (int e = 0; e < VEC; ++e) inv_first.v[e] = __frcp_rn(sc_first.v[e]);
    if (b_begin < b_end) cur = load_row<VEC>(a, b_begin, hd, i, sg, j_first);
  }
  for (int64_t b = b_begin; b < b_end; ++b) {
    RowInputs<VEC> nxt = {};
    if (has_piece && b + 1 < b_end) nxt = load_row<VEC>(a, b + 1, hd, i, sg, j_first);
    // Reference order: dA = exp(dt * A), xh = s_x * x, dtx = dt * xh.
    const float dtv = dt_value(cur.dtq, a.dt_scale, dt_b, a.dt_min, a.dt_max);
    const float dA = expf(__fmul_rn(dtv, A));
    const float xh = __fmul_rn(s_x, static_cast<float>(cur.xq));
    const float dtx = __fmul_rn(dtv, xh);
    const int64_t head_row = (b * a.nheads + hd) * a.headdim + i;
    float y = 0.0f;
    if (has_piece) {
      y = update_piece<VEC>(cur, sc_first, inv_first, dA, dtx, sB, sC, a.state_out + head_row * n + j_first);
      // Further pieces of the row (bytewise path, or d_state > 32 * VEC): loaded here.
      for (int j0 = j_first + a.tpr * VEC; j0 < n; j0 += a.tpr * VEC) {
        const RowInputs<VEC> r = load_row<VEC>(a, b, hd, i, sg, j0);
        const Floats<VEC> sc = *reinterpret_cast<const Floats<VEC>*>(sscale + j0);
        Floats<VEC> inv;
#pragma unroll
        for (int e = 0; e < VEC; ++e) inv.v[e] = __frcp_rn(sc.v[e]);
        y += update_piece<VEC>(r, sc, inv, dA, dtx, sB, sC, a.state_out + head_row * n + j0);
      }
    }
    for (int off = a.tpr / 2; off > 0; off /= 2) y += __shfl_xor_sync(0xffffffffu, y, off);
    if (active && lane_in_row == 0) store_y(a.y, head_row, y + Dh * xh, a.out_fp16 != 0);
    cur = nxt;
  }
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
  const bool vec8 = n % 8 == 0 && aligned8(a.state) && aligned8(a.state_out) && aligned8(a.B) &&
                    aligned8(a.C) && aligned16(a.state_scale);
  const int vec = vec8 ? 8 : 1;
  // Enough threads per row to cover it in one piece each when possible, at most a warp.
  a.tpr = 1;
  while (a.tpr < 32 && a.tpr * vec < n) a.tpr *= 2;
  const int rows_per_block = kThreads / a.tpr;
  a.row_blocks = (a.headdim + rows_per_block - 1) / rows_per_block;
  // Batch rows are split over blocks only as far as needed to give every SM a few blocks: the
  // longer a block's run of rows, the more of its loads overlap.
  DeviceLimits dev;
  QMAMBA_TRY(device_limits(where, &dev));
  const int64_t head_blocks = int64_t(a.nheads) * a.row_blocks;
  int64_t splits = (4 * int64_t(dev.sm_count) + head_blocks - 1) / head_blocks;
  splits = splits < 1 ? 1 : (splits > batch ? batch : splits);
  a.batch = batch;
  a.batch_per_block = (batch + splits - 1) / splits;
  splits = (batch + a.batch_per_block - 1) / a.batch_per_block;
  const int64_t blocks = head_blocks * splits;
  if (blocks > 0x7fffffff) return fail(QMAMBA_ERR_BAD_SIZE, "%s: batch * nheads too large for one launch", where);
  if (vec8) {
    quant_ssd_decode_kernel<8><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(a);
  } else {
    quant_ssd_decode_kernel<1><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(a);
  }
  return check_launch(where);
}
