// QuantConv1dSiLU (docs/ops.md): depthwise causal conv over time of int8 xBC, bias, SiLU,
// requantization with the group scales. Prefill and decode share one kernel: decode is a
// sequence of one token whose state may be updated in place.
//
// Layout: every thread owns VEC consecutive channels (8 with 8-byte loads and stores, or 1 for
// shapes or pointers that do not allow it) of one batch row over a tile of time steps; consecutive
// threads take consecutive channels, so each warp access is contiguous. A tile reads the K-1 steps
// before it (from xBC, or from conv_state before t = 0) as a halo. 8 channels rather than 16: the
// per-channel constants live in registers, and 16 channels needed ~170 of them (3 blocks an SM),
// 8 channels ~105 (4 blocks) with four time steps' loads in flight.
#include <math.h>

#include "checks.h"
#include "common.cuh"
#include "convMath.cuh"

namespace qmamba {
namespace {

struct ConvArgs {
  const int8_t* __restrict__ xBC;
  const int8_t* __restrict__ weight;
  const int8_t* __restrict__ bias;
  const float* __restrict__ x_out_scales;
  const float* __restrict__ B_out_scales;
  const float* __restrict__ C_out_scales;
  const int32_t* __restrict__ head_ranges;
  const int32_t* __restrict__ dim_ranges;
  const int8_t* state;  // may alias state_out in decode: not __restrict__
  int8_t* __restrict__ x;
  int8_t* __restrict__ B;
  int8_t* __restrict__ C;
  int8_t* state_out;
  int64_t batch, seqlen, ntiles;
  int tile;  // time steps per thread
  int nvec;  // channel vectors per time step
  int conv_dim, d_ssm, gn, headdim, hpg, d_state, nhg, ndg;
  float acc_scale[3];   // fp32(s_in * s_w) of the x, B, C segments
  float bias_scale[3];  // s_b of the x, B, C segments
};


// Output scales of channels [c0, c0 + VEC), all in one segment and (for x) one head
// (docs/ops.md, Group lookup): the head group is looked up once, the dim group per channel.
template <int VEC>
__device__ __forceinline__ void out_scales(const ConvArgs& a, int c0, float (&s_out)[VEC]) {
  if (c0 < a.d_ssm) {
    const int hd = c0 / a.headdim, sg = hd / a.hpg;
    const int hg = head_group(a.head_ranges, a.nhg, sg, hd % a.hpg);
    const float* scales = a.x_out_scales + (sg * a.nhg + hg) * a.ndg;
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      s_out[k] = __ldg(scales + dim_group(a.dim_ranges, a.nhg, a.ndg, sg, hg, (c0 + k) % a.headdim));
    }
    return;
  }
  const bool is_B = c0 < a.d_ssm + a.gn;
  const float* scales = is_B ? a.B_out_scales : a.C_out_scales;
  const int first = is_B ? c0 - a.d_ssm : c0 - a.d_ssm - a.gn;
#pragma unroll
  for (int k = 0; k < VEC; ++k) s_out[k] = __ldg(scales + (first + k) / a.d_state);
}

// Row `row` of u = concat(conv_state, xBC) along time for batch b, channels [c0, c0 + VEC).
template <int VEC, int K>
__device__ __forceinline__ Bytes<VEC> load_u(const ConvArgs& a, int64_t b, int64_t row, int c0) {
  Bytes<VEC> r;
  if (row >= K - 1) {
    r = *reinterpret_cast<const Bytes<VEC>*>(a.xBC + (b * a.seqlen + row - (K - 1)) * a.conv_dim + c0);
  } else if (a.state != nullptr) {
    r = *reinterpret_cast<const Bytes<VEC>*>(a.state + (b * (K - 1) + row) * a.conv_dim + c0);
  } else {
#pragma unroll
    for (int k = 0; k < VEC; ++k) r.v[k] = 0;
  }
  return r;
}

// Byte e of each of four words, gathered into one word (r0's byte lowest).
__device__ __forceinline__ void transpose4x4(uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3,
                                             uint32_t (&out)[4]) {
  const uint32_t lo01 = __byte_perm(r0, r1, 0x5140), hi01 = __byte_perm(r0, r1, 0x7362);
  const uint32_t lo23 = __byte_perm(r2, r3, 0x5140), hi23 = __byte_perm(r2, r3, 0x7362);
  out[0] = __byte_perm(lo01, lo23, 0x5410);
  out[1] = __byte_perm(lo01, lo23, 0x7632);
  out[2] = __byte_perm(hi01, hi23, 0x5410);
  out[3] = __byte_perm(hi01, hi23, 0x7632);
}

template <int VEC, int K>
__global__ void __launch_bounds__(128) quant_conv1d_silu_kernel(const ConvArgs a) {
  const int64_t gid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (gid >= a.batch * a.ntiles * a.nvec) return;
  const int c0 = static_cast<int>(gid % a.nvec) * VEC;
  const int64_t rest = gid / a.nvec;
  const int64_t tile = rest % a.ntiles;
  const int64_t b = rest / a.ntiles;

  // The VEC channels lie in one segment (the launcher checks the segment sizes divide VEC).
  const int seg = c0 < a.d_ssm ? 0 : (c0 < a.d_ssm + a.gn ? 1 : 2);
  const float acc_scale = a.acc_scale[seg];
  int8_t* out_base = seg == 0 ? a.x : (seg == 1 ? a.B : a.C);
  const int out_width = seg == 0 ? a.d_ssm : a.gn;
  const int out_c0 = seg == 0 ? c0 : (seg == 1 ? c0 - a.d_ssm : c0 - a.d_ssm - a.gn);

  // Per channel: the K taps packed in one word (tap j in byte j, zero past K) for __dp4a, the
  // bias term float(bias) * s_b (rounded on its own, as the contract orders), the output scale.
  uint32_t w[VEC];
  float bias_term[VEC], s_out[VEC];
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    uint32_t packed = 0;
#pragma unroll
    for (int j = 0; j < K; ++j) {
      packed |= static_cast<uint32_t>(static_cast<uint8_t>(__ldg(a.weight + (c0 + k) * K + j))) << (8 * j);
    }
    w[k] = packed;
    bias_term[k] = __fmul_rn(static_cast<float>(__ldg(a.bias + c0 + k)), a.bias_scale[seg]);
  }
  out_scales<VEC>(a, c0, s_out);

  // win[j] holds u row t + j for the step t being computed (u row t + K - 1 is xBC row t).
  const int64_t t_begin = tile * a.tile;
  const int64_t t_end = min(t_begin + a.tile, a.seqlen);
  Bytes<VEC> win[K];
#pragma unroll
  for (int j = 0; j < K - 1; ++j) win[j] = load_u<VEC, K>(a, b, t_begin + j, c0);

  // Software pipeline: the loads of the next kUnroll steps are in flight while this batch computes.
  constexpr int kUnroll = 4;
  Bytes<VEC> cur[kUnroll], nxt[kUnroll];
  const int8_t* row_ptr = a.xBC + b * a.seqlen * a.conv_dim + c0;
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    if (t_begin + u < t_end) cur[u] = *reinterpret_cast<const Bytes<VEC>*>(row_ptr + (t_begin + u) * a.conv_dim);
  }
  for (int64_t t0 = t_begin; t0 < t_end; t0 += kUnroll) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (t0 + kUnroll + u < t_end) nxt[u] = *reinterpret_cast<const Bytes<VEC>*>(row_ptr + (t0 + kUnroll + u) * a.conv_dim);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (t0 + u >= t_end) break;
      win[K - 1] = cur[u];
      Bytes<VEC> q;
      if constexpr (VEC >= 4) {
        // acc = sum_j w[j] * u[t + j] exactly, four taps per __dp4a after a byte transpose.
#pragma unroll
        for (int m = 0; m < VEC / 4; ++m) {
          uint32_t rows[4];
#pragma unroll
          for (int j = 0; j < 4; ++j) rows[j] = j < K ? reinterpret_cast<const uint32_t*>(win[j].v)[m] : 0u;
          uint32_t taps[4];
          transpose4x4(rows[0], rows[1], rows[2], rows[3], taps);
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int k = 4 * m + e;
            const int acc = __dp4a(static_cast<int>(taps[e]), static_cast<int>(w[k]), 0);
            q.v[k] = silu_quantize(conv_value(acc, acc_scale, bias_term[k]), s_out[k]);
          }
        }
      } else {
        int acc = 0;
#pragma unroll
        for (int j = 0; j < K; ++j) acc += static_cast<int8_t>(w[0] >> (8 * j)) * static_cast<int>(win[j].v[0]);
        q.v[0] = silu_quantize(conv_value(acc, acc_scale, bias_term[0]), s_out[0]);
      }
      *reinterpret_cast<Bytes<VEC>*>(out_base + (b * a.seqlen + t0 + u) * out_width + out_c0) = q;
#pragma unroll
      for (int j = 0; j < K - 1; ++j) win[j] = win[j + 1];
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) cur[u] = nxt[u];
  }

  // The thread of the last tile holds the last K-1 rows of u: they are the new conv state.
  // In decode the state rows were read above, before this write, by this same thread.
  if (tile == a.ntiles - 1) {
#pragma unroll
    for (int j = 0; j < K - 1; ++j) {
      *reinterpret_cast<Bytes<VEC>*>(a.state_out + (b * (K - 1) + j) * a.conv_dim + c0) = win[j];
    }
  }
}

template <int VEC>
void launch_for_width(const ConvArgs& a, int K, int blocks, cudaStream_t stream) {
  switch (K) {
    case 2: quant_conv1d_silu_kernel<VEC, 2><<<blocks, 128, 0, stream>>>(a); break;
    case 3: quant_conv1d_silu_kernel<VEC, 3><<<blocks, 128, 0, stream>>>(a); break;
    default: quant_conv1d_silu_kernel<VEC, 4><<<blocks, 128, 0, stream>>>(a); break;
  }
}

int check_conv(const char* where, const qmamba_conv_params* p, const qmamba_conv_tensors* t,
               int64_t batch, int64_t seqlen, bool decode) {
  QMAMBA_TRY(check_ptr(where, "params", p));
  QMAMBA_TRY(check_ptr(where, "tensors", t));
  QMAMBA_TRY(check_ptr(where, "xBC", t->xBC));
  QMAMBA_TRY(check_ptr(where, "weight", t->weight));
  QMAMBA_TRY(check_ptr(where, "bias", t->bias));
  QMAMBA_TRY(check_ptr(where, "x_out_scales", t->x_out_scales));
  QMAMBA_TRY(check_ptr(where, "B_out_scales", t->B_out_scales));
  QMAMBA_TRY(check_ptr(where, "C_out_scales", t->C_out_scales));
  QMAMBA_TRY(check_ptr(where, "x_head_group_range", t->x_head_group_range));
  QMAMBA_TRY(check_ptr(where, "x_dim_group_range", t->x_dim_group_range));
  QMAMBA_TRY(check_ptr(where, "x", t->x));
  QMAMBA_TRY(check_ptr(where, "B", t->B));
  QMAMBA_TRY(check_ptr(where, "C", t->C));
  QMAMBA_TRY(check_ptr(where, "conv_state_out", t->conv_state_out));
  if (!decode && t->conv_state != nullptr && t->conv_state == t->conv_state_out) {
    // Tiles of a long sequence read the state while the last tile writes the new one.
    return fail(QMAMBA_ERR_BAD_VALUE, "%s: conv_state_out aliases conv_state (only decode updates in place)", where);
  }
  QMAMBA_TRY(check_conv_params(where, p));
  QMAMBA_TRY(check_range(where, "batch", batch, 1, int64_t(1) << 24));
  QMAMBA_TRY(check_range(where, "seqlen", seqlen, 1, 65536));
  return QMAMBA_OK;
}

int launch_conv(const char* where, const qmamba_conv_params* p, const qmamba_conv_tensors* t,
                int64_t batch, int64_t seqlen, cudaStream_t stream) {
  DeviceLimits dev;
  QMAMBA_TRY(device_limits(where, &dev));
  ConvArgs a;
  a.xBC = t->xBC; a.weight = t->weight; a.bias = t->bias;
  a.x_out_scales = t->x_out_scales; a.B_out_scales = t->B_out_scales; a.C_out_scales = t->C_out_scales;
  a.head_ranges = t->x_head_group_range; a.dim_ranges = t->x_dim_group_range;
  a.state = t->conv_state; a.x = t->x; a.B = t->B; a.C = t->C; a.state_out = t->conv_state_out;
  a.batch = batch; a.seqlen = seqlen;
  a.headdim = p->headdim; a.d_state = p->d_state; a.hpg = p->nheads / p->ngroups;
  a.d_ssm = p->nheads * p->headdim; a.gn = p->ngroups * p->d_state;
  a.conv_dim = a.d_ssm + 2 * a.gn;
  a.nhg = p->n_head_groups; a.ndg = p->n_dim_groups;
  // fp32(s_in * s_w): one rounding of the product, as the contract says.
  a.acc_scale[0] = p->x_scale * p->wx_scale;
  a.acc_scale[1] = p->B_scale * p->wB_scale;
  a.acc_scale[2] = p->C_scale * p->wC_scale;
  a.bias_scale[0] = p->bx_scale; a.bias_scale[1] = p->bB_scale; a.bias_scale[2] = p->bC_scale;

  // 8-byte accesses need every segment and row to start on an 8-byte boundary.
  const bool vec8 = a.gn % 8 == 0 && a.d_ssm % 8 == 0 && aligned8(a.xBC) && aligned8(a.x) &&
                    aligned8(a.B) && aligned8(a.C) && aligned8(a.state) && aligned8(a.state_out);
  const int vec = vec8 ? 8 : 1;
  a.nvec = a.conv_dim / vec;
  // Long tiles amortize the K-1 halo and the per-thread setup (weights, scale lookup); shorter
  // ones when the grid would not give every SM two rounds of resident threads (~512 an SM).
  const int64_t want_threads = int64_t(dev.sm_count) * 1024;
  a.tile = 64;
  while (a.tile > 4 && batch * ((seqlen + a.tile - 1) / a.tile) * a.nvec < want_threads) a.tile /= 2;
  a.ntiles = (seqlen + a.tile - 1) / a.tile;
  const int64_t threads = batch * a.ntiles * a.nvec;
  const int64_t blocks = (threads + 127) / 128;
  if (blocks > 0x7fffffff) return fail(QMAMBA_ERR_BAD_SIZE, "%s: batch * seqlen too large for one launch", where);
  if (vec8) {
    launch_for_width<8>(a, p->d_conv, static_cast<int>(blocks), stream);
  } else {
    launch_for_width<1>(a, p->d_conv, static_cast<int>(blocks), stream);
  }
  return check_launch(where);
}

}  // namespace
}  // namespace qmamba

extern "C" int qmamba_quant_conv1d_silu_prefill(const qmamba_conv_params* params,
                                                const qmamba_conv_tensors* t, int64_t batch,
                                                int64_t seqlen, qmamba_stream_t stream) {
  const char* where = "qmamba_quant_conv1d_silu_prefill";
  QMAMBA_TRY(qmamba::check_conv(where, params, t, batch, seqlen, false));
  return qmamba::launch_conv(where, params, t, batch, seqlen, stream);
}

extern "C" int qmamba_quant_conv1d_silu_decode(const qmamba_conv_params* params,
                                               const qmamba_conv_tensors* t, int64_t batch,
                                               qmamba_stream_t stream) {
  const char* where = "qmamba_quant_conv1d_silu_decode";
  QMAMBA_TRY(qmamba::check_conv(where, params, t, batch, 1, true));
  return qmamba::launch_conv(where, params, t, batch, 1, stream);
}
