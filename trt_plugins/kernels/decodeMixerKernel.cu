// QmambaDecodeMixer (docs/tensorrt.md): one decode step of a Mamba2 mixer, from in_proj's float
// output to the gated norm's input, in one launch: the segments' quantization, the QuantConv1dSiLU
// step, the QuantSSD step and the gate. As separate ops a decode step ran some forty small kernels
// per layer on TensorRT 8.6 (the ops, the splits and concatenations, and the Q/DQ pairs TensorRT needs
// around int8 plugin edges); their launches, not their bytes, were the step's time.
//
// Layout: a block owns one head, a range of its dims i and one batch row, like the QuantSSD decode
// kernel (TPR threads share one state row, VEC entries each). Before the state update every block
// computes what its rows need: the conv outputs of B and C of its SSD group (2 * d_state channels,
// recomputed by each block of the group: a few hundred channels read from L2, cheaper than a second
// launch) into shared memory, x of its rows, dt of its head. The state piece is loaded first, since
// it does not depend on any of that. The arithmetic is the two ops' kernels' own (convMath.cuh,
// ssdDecodeStep.cuh), so the outputs are theirs bit for bit.
#include <math.h>

#include "checks.h"
#include "common.cuh"
#include "convMath.cuh"
#include "launch.cuh"
#include "ssdDecodeStep.cuh"

namespace qmamba {
namespace {

// Threads a block. Every block recomputes its SSD group's B and C conv outputs, so fewer, larger blocks do
// that less often: 256 threads (16 state rows at d_state 128). At batch 1, 512 (at most two blocks an SM):
// the blocks fill the SMs in_proj frees first, up to what an SM holds, and fewer blocks an SM share each
// scheduler among fewer warps, which makes the batch-1 step faster than four 256-thread blocks an SM or
// one 1024-thread block a head (docs/kernels.md). At batch 8 four 256-thread blocks an SM keep the mixer
// fastest.
constexpr int threads_for_batch(int64_t batch) { return batch == 1 ? 512 : 256; }

struct MixerArgs {
  const float* __restrict__ zxbcdt;
  const int8_t* __restrict__ weight;
  const int8_t* __restrict__ bias;
  const float* __restrict__ x_out_scales;
  const float* __restrict__ B_out_scales;
  const float* __restrict__ C_out_scales;
  const int32_t* __restrict__ head_ranges;
  const int32_t* __restrict__ dim_ranges;
  const float* __restrict__ A_log;
  const float* __restrict__ D;
  const float* __restrict__ dt_bias;
  const float* __restrict__ state_scale;
  const int8_t* __restrict__ conv_state;
  const int8_t* __restrict__ ssm_state;
  float* __restrict__ gated;
  int8_t* __restrict__ conv_state_out;
  int8_t* __restrict__ ssm_state_out;
  float in_scale[3];    // Q scales of the x, B, C segments (QuantConv1dSiLU's x_scale, B_scale, C_scale)
  float acc_scale[3];   // fp32(s_in * s_w) of the x, B, C segments
  float bias_scale[3];  // s_b of the x, B, C segments
  float z_scale, dt_scale, dt_min, dt_max;
  int nheads, headdim, d_state, gn, hpg, nhg, ndg, d_ssm, conv_dim, width;
  int tpr;              // threads per state row (power of two, <= 32)
  int row_blocks;       // blocks per head along headdim
};

// B and C channels of a thread: 2 * d_state / THREADS, d_state <= 256.
template <int THREADS>
__host__ __device__ constexpr int max_bc_per_thread() { return 2 * 256 / THREADS; }

// What one conv channel needs besides in_proj's output: its taps, bias term and state rows (none of
// them made by a kernel of this step, so they are loaded before pdl_wait()).
template <int K>
struct ConvChannel {
  int8_t w[K];
  int8_t u[K];  // u[0 .. K-2]: the state rows; u[K-1]: the new input
  float bias_term;
};

template <int K>
__device__ __forceinline__ void load_conv(const MixerArgs& a, int64_t b, int c, int seg, ConvChannel<K>& ch) {
#pragma unroll
  for (int w = 0; w < K; ++w) ch.w[w] = __ldg(a.weight + c * K + w);
#pragma unroll
  for (int w = 0; w < K - 1; ++w) ch.u[w] = __ldg(a.conv_state + (b * (K - 1) + w) * a.conv_dim + c);
  ch.bias_term = __fmul_rn(static_cast<float>(__ldg(a.bias + c)), a.bias_scale[seg]);
}

// Conv output of channel c (segment seg: 0 x, 1 B, 2 C) given its in_proj value v: the new input
// Q(v, s_in), the K taps, bias, SiLU, Q(., s_out); with write_state the channel's new state rows (the
// last K-1 of u) are stored.
template <int K>
__device__ __forceinline__ int8_t finish_conv(const MixerArgs& a, ConvChannel<K>& ch, float v, int seg, float s_out,
                                              int64_t b, int c, bool write_state) {
  ch.u[K - 1] = quantize_rn(v, a.in_scale[seg]);
  int acc = 0;
#pragma unroll
  for (int w = 0; w < K; ++w) acc += static_cast<int>(ch.w[w]) * static_cast<int>(ch.u[w]);
  if (write_state) {
#pragma unroll
    for (int w = 0; w < K - 1; ++w) a.conv_state_out[(b * (K - 1) + w) * a.conv_dim + c] = ch.u[w + 1];
  }
  return silu_quantize(conv_value(acc, a.acc_scale[seg], ch.bias_term), s_out);
}

// Conv channel of the j-th B/C entry of SSD group sg (j < d_state: B, else C).
__device__ __forceinline__ int bc_channel(const MixerArgs& a, int sg, int j) {
  return a.d_ssm + (j < a.d_state ? sg * a.d_state + j : a.gn + sg * a.d_state + j - a.d_state);
}

template <int VEC, int K, int THREADS>
__global__ void __launch_bounds__(THREADS) decode_mixer_kernel(const MixerArgs a) {
  constexpr int kMaxBCPerThread = max_bc_per_thread<THREADS>();
  extern __shared__ __align__(16) int8_t s_bc[];  // [2 * d_state]: B, then C of this head's SSD group
  __shared__ int8_t s_xq[THREADS];                // x of this block's rows
  __shared__ float s_dt;
  const int rows_per_block = THREADS / a.tpr;
  const int rb = blockIdx.x % a.row_blocks;
  const int hd = blockIdx.x / a.row_blocks;
  const int64_t b = blockIdx.y;
  const int n = a.d_state;
  const int row = threadIdx.x / a.tpr;
  const int i_raw = rb * rows_per_block + row;
  const bool active = i_raw < a.headdim;  // rows past headdim only join the shuffles
  const int i = active ? i_raw : 0;
  const int lane_in_row = threadIdx.x % a.tpr;
  const int j_first = lane_in_row * VEC;
  const bool has_piece = active && j_first < n;
  const bool row_leader = active && lane_in_row == 0;
  const int64_t head_row = (b * a.nheads + hd) * a.headdim + i;
  const int c_x = hd * a.headdim + i;
  const float* v_row = a.zxbcdt + b * a.width;

  // Everything that no kernel of this step makes, loaded first: the state piece and its scales, the
  // group scales, the conv taps and state rows of this thread's channels.
  const int sg = hd / a.hpg;
  const int hg = head_group(a.head_ranges, a.nhg, sg, hd % a.hpg);
  const int dg = dim_group(a.dim_ranges, a.nhg, a.ndg, sg, hg, i);
  const float s_x = __ldg(a.x_out_scales + (sg * a.nhg + hg) * a.ndg + dg);
  const float sB = __ldg(a.B_out_scales + sg), sC = __ldg(a.C_out_scales + sg);
  const float* sscale = a.state_scale + static_cast<int64_t>((sg * a.nhg + hg) * a.ndg + dg) * n;
  RowInputs<VEC> r = {};
  Floats<VEC> sc = {}, inv = {};
  if (has_piece) {
    r.st = *reinterpret_cast<const Bytes<VEC>*>(a.ssm_state + head_row * n + j_first);
    sc = *reinterpret_cast<const Floats<VEC>*>(sscale + j_first);
  }
  ConvChannel<K> bc[kMaxBCPerThread], xc;
#pragma unroll
  for (int q = 0; q < kMaxBCPerThread; ++q) {
    const int j = threadIdx.x + q * THREADS;
    if (j < 2 * n) load_conv<K>(a, b, bc_channel(a, sg, j), j < n ? 1 : 2, bc[q]);
  }
  if (row_leader) load_conv<K>(a, b, c_x, 0, xc);
  const float dt_b = __ldg(a.dt_bias + hd);
  const float A = -expf(__ldg(a.A_log + hd)), Dh = __ldg(a.D + hd);
  pdl_launch_dependents();
  pdl_wait();

  // in_proj's values this block needs, loaded together.
  float v_bc[kMaxBCPerThread];
#pragma unroll
  for (int q = 0; q < kMaxBCPerThread; ++q) {
    const int j = threadIdx.x + q * THREADS;
    v_bc[q] = j < 2 * n ? __ldg(v_row + a.d_ssm + bc_channel(a, sg, j)) : 0.0f;
  }
  const float v_x = row_leader ? __ldg(v_row + a.d_ssm + c_x) : 0.0f;
  const float v_z = row_leader ? __ldg(v_row + c_x) : 0.0f;
  const float v_dt = threadIdx.x == 0 ? __ldg(v_row + a.d_ssm + a.conv_dim + hd) : 0.0f;

  // B and C of SSD group sg (the group's first block writes their new conv state), x of this block's
  // rows, dt of its head.
  const bool bc_state_writer = hd % a.hpg == 0 && rb == 0;
#pragma unroll
  for (int q = 0; q < kMaxBCPerThread; ++q) {
    const int j = threadIdx.x + q * THREADS;
    if (j < 2 * n) {
      const bool is_B = j < n;
      s_bc[j] = finish_conv<K>(a, bc[q], v_bc[q], is_B ? 1 : 2, is_B ? sB : sC, b, bc_channel(a, sg, j), bc_state_writer);
    }
  }
  if (row_leader) s_xq[row] = finish_conv<K>(a, xc, v_x, 0, s_x, b, c_x, true);
  if (threadIdx.x == 0) s_dt = dt_value(quantize_rn(v_dt, a.dt_scale), a.dt_scale, dt_b, a.dt_min, a.dt_max);
  __syncthreads();

  // The QuantSSD decode step of this row, in the reference's order: dA = exp(dt * A), xh = s_x * x,
  // dtx = dt * xh; y = sum_j S * Ch + D * xh.
  const float dtv = s_dt;
  const float dA = expf(__fmul_rn(dtv, A));
  const float xh = __fmul_rn(s_x, static_cast<float>(s_xq[row]));
  const float dtx = __fmul_rn(dtv, xh);
  float y = 0.0f;
  if (has_piece) {
    for (int j0 = j_first; j0 < n; j0 += a.tpr * VEC) {
      if (j0 != j_first) {  // further pieces (bytewise path, or d_state > 32 * VEC)
        r.st = *reinterpret_cast<const Bytes<VEC>*>(a.ssm_state + head_row * n + j0);
        sc = *reinterpret_cast<const Floats<VEC>*>(sscale + j0);
      }
      r.bq = *reinterpret_cast<const Bytes<VEC>*>(s_bc + j0);
      r.cq = *reinterpret_cast<const Bytes<VEC>*>(s_bc + n + j0);
#pragma unroll
      for (int e = 0; e < VEC; ++e) inv.v[e] = __frcp_rn(sc.v[e]);
      y += update_piece<VEC>(r, sc, inv, dA, dtx, sB, sC, a.ssm_state_out + head_row * n + j0);
    }
  }
  for (int off = a.tpr / 2; off > 0; off /= 2) y += __shfl_xor_sync(0xffffffffu, y, off);
  if (row_leader) {
    // The gate of the gated norm: y * (z' * sigmoid(z')), z' = DequantizeLinear(Q(z, z_scale)).
    const float yv = __fadd_rn(y, __fmul_rn(Dh, xh));
    const float z = __fmul_rn(static_cast<float>(quantize_rn(v_z, a.z_scale)), a.z_scale);
    const float sig = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-z)));
    a.gated[b * a.d_ssm + c_x] = __fmul_rn(yv, __fmul_rn(z, sig));
  }
}

template <int VEC, int THREADS>
void launch_for_width(const DeviceLimits& dev, const MixerArgs& a, int K, dim3 grid, size_t smem,
                      cudaStream_t stream) {
  const dim3 block(THREADS);
  switch (K) {
    case 2: launch_dependent(dev, decode_mixer_kernel<VEC, 2, THREADS>, grid, block, smem, stream, a); break;
    case 3: launch_dependent(dev, decode_mixer_kernel<VEC, 3, THREADS>, grid, block, smem, stream, a); break;
    default: launch_dependent(dev, decode_mixer_kernel<VEC, 4, THREADS>, grid, block, smem, stream, a); break;
  }
}

template <int VEC>
void launch_for_batch(const DeviceLimits& dev, const MixerArgs& a, int K, dim3 grid, size_t smem,
                      cudaStream_t stream, int threads) {
  if (threads == 512) {
    launch_for_width<VEC, 512>(dev, a, K, grid, smem, stream);
  } else {
    launch_for_width<VEC, 256>(dev, a, K, grid, smem, stream);
  }
}

int check_mixer(const char* where, const qmamba_mixer_params* p, const qmamba_mixer_tensors* t, int64_t batch) {
  QMAMBA_TRY(check_ptr(where, "params", p));
  QMAMBA_TRY(check_ptr(where, "tensors", t));
  const void* required[17] = {t->zxbcdt, t->conv_weight, t->conv_bias, t->x_out_scales, t->B_out_scales,
                              t->C_out_scales, t->x_head_group_range, t->x_dim_group_range, t->A_log, t->D,
                              t->dt_bias, t->ssm_state_scale, t->conv_state, t->ssm_state, t->gated,
                              t->conv_state_out, t->ssm_state_out};
  const char* names[17] = {"zxbcdt", "conv_weight", "conv_bias", "x_out_scales", "B_out_scales",
                           "C_out_scales", "x_head_group_range", "x_dim_group_range", "A_log", "D",
                           "dt_bias", "ssm_state_scale", "conv_state", "ssm_state", "gated",
                           "conv_state_out", "ssm_state_out"};
  for (int k = 0; k < 17; ++k) QMAMBA_TRY(check_ptr(where, names[k], required[k]));
  // Blocks of one SSD group read B's and C's old conv state while its first block writes the new one.
  if (t->conv_state_out == t->conv_state || t->ssm_state_out == t->ssm_state ||
      static_cast<const void*>(t->gated) == static_cast<const void*>(t->zxbcdt)) {
    return fail(QMAMBA_ERR_BAD_VALUE, "%s: outputs must not alias inputs (no in-place update)", where);
  }
  QMAMBA_TRY(check_conv_params(where, &p->conv));
  QMAMBA_TRY(check_scale(where, "z_scale", p->z_scale));
  QMAMBA_TRY(check_dt_params(where, p->dt_scale, p->dt_min, p->dt_max));
  return check_range(where, "batch", batch, 1, 65535);
}

}  // namespace
}  // namespace qmamba

extern "C" int qmamba_decode_mixer(const qmamba_mixer_params* params, const qmamba_mixer_tensors* t,
                                   int64_t batch, qmamba_stream_t stream) {
  using namespace qmamba;
  const char* where = "qmamba_decode_mixer";
  QMAMBA_TRY(check_mixer(where, params, t, batch));
  const qmamba_conv_params& c = params->conv;
  MixerArgs a;
  a.zxbcdt = t->zxbcdt; a.weight = t->conv_weight; a.bias = t->conv_bias;
  a.x_out_scales = t->x_out_scales; a.B_out_scales = t->B_out_scales; a.C_out_scales = t->C_out_scales;
  a.head_ranges = t->x_head_group_range; a.dim_ranges = t->x_dim_group_range;
  a.A_log = t->A_log; a.D = t->D; a.dt_bias = t->dt_bias; a.state_scale = t->ssm_state_scale;
  a.conv_state = t->conv_state; a.ssm_state = t->ssm_state;
  a.gated = t->gated; a.conv_state_out = t->conv_state_out; a.ssm_state_out = t->ssm_state_out;
  a.in_scale[0] = c.x_scale; a.in_scale[1] = c.B_scale; a.in_scale[2] = c.C_scale;
  // fp32(s_in * s_w): one rounding of the product, as the contract says.
  a.acc_scale[0] = c.x_scale * c.wx_scale;
  a.acc_scale[1] = c.B_scale * c.wB_scale;
  a.acc_scale[2] = c.C_scale * c.wC_scale;
  a.bias_scale[0] = c.bx_scale; a.bias_scale[1] = c.bB_scale; a.bias_scale[2] = c.bC_scale;
  a.z_scale = params->z_scale; a.dt_scale = params->dt_scale;
  a.dt_min = params->dt_min; a.dt_max = params->dt_max;
  a.nheads = c.nheads; a.headdim = c.headdim; a.d_state = c.d_state;
  a.gn = c.ngroups * c.d_state; a.hpg = c.nheads / c.ngroups;
  a.nhg = c.n_head_groups; a.ndg = c.n_dim_groups;
  a.d_ssm = c.nheads * c.headdim; a.conv_dim = a.d_ssm + 2 * a.gn;
  a.width = 2 * a.d_ssm + 2 * a.gn + c.nheads;

  const int n = a.d_state;
  const bool vec8 = n % 8 == 0 && aligned8(a.ssm_state) && aligned8(a.ssm_state_out) && aligned16(a.state_scale);
  const int vec = vec8 ? 8 : 1;
  // Enough threads per row to cover it in one piece each when possible, at most a warp.
  a.tpr = 1;
  while (a.tpr < 32 && a.tpr * vec < n) a.tpr *= 2;
  const int threads = threads_for_batch(batch);
  const int rows_per_block = threads / a.tpr;
  a.row_blocks = (a.headdim + rows_per_block - 1) / rows_per_block;
  const int64_t blocks = int64_t(a.nheads) * a.row_blocks;
  if (blocks > 0x7fffffff) return fail(QMAMBA_ERR_BAD_SIZE, "%s: nheads * headdim too large for one launch", where);
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(batch));
  const size_t smem = static_cast<size_t>(2 * n);
  DeviceLimits dev{};
  QMAMBA_TRY(device_limits(where, &dev));
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  if (vec8) {
    launch_for_batch<8>(dev, a, c.d_conv, grid, smem, s, threads);
  } else {
    launch_for_batch<1>(dev, a, c.d_conv, grid, smem, s, threads);
  }
  return check_launch(where);
}
