// QuantConv1dSiLU (docs/ops.md): depthwise causal conv over time of int8 xBC, bias, SiLU,
// requantization with the group scales. Prefill and decode share one kernel: decode is a
// sequence of one token whose state may be updated in place.
//
// Layout: a thread owns VEC consecutive channels (8, moved with 8-byte loads and stores; 1 for
// shapes or pointers that do not allow it) and one slice of the flattened (batch row, step)
// sequence; consecutive threads take consecutive channel vectors of the same slice, so each warp
// access is contiguous. The launcher makes about as many threads as the GPU holds at once (one
// wave), so that each thread's per-channel constants (packed taps, bias term, output scale from the
// group lookup, all in registers) serve a long slice. A slice reads the K-1 rows of u before its
// first step (from xBC, or from conv_state before t = 0) and from then on keeps the window in
// registers: one word a channel holds its last four inputs, the newest in the high byte, so a step
// is one byte permute a channel to slide the new row in and one __dp4a against the taps. Four rows'
// loads are in flight while a row computes.
//
// SiLU and the requantization take the estimate of convMath.cuh (two MUFU operations an element);
// a step whose eight estimates are all clear of rounding ties (all but a few in 10^3 steps at
// calibrated scales) stores them, otherwise the exact sequence decides the close ones. Threads whose
// output scales are all at least kNoLowSaturationScale run a step loop without the clamp at -128.
//
// The same kernel, kFloatIn, reads xBC from in_proj's float output instead
// (qmamba_quant_conv1d_silu_prefill_from_float): a row of a thread's 8 channels is 32 bytes, held as
// floats until its step, then multiplied by the columns' output scale and quantized with the segment's
// input scale (x_scale, B_scale or C_scale: quantize4_with_inverse, four channels a word) into the same
// words the int8 path loads, so the window, the steps and the state are the int8 path's. Fewer rows
// ahead (two: 64 bytes a thread in flight against 32) and fewer blocks an SM leave room for the floats.
#include <atomic>
#include <type_traits>

#include <math.h>

#include "checks.h"
#include "common.cuh"
#include "convMath.cuh"

namespace qmamba {
namespace {

constexpr int kThreads = 128;
// Seven blocks of 128 threads an SM: at most 72 registers a thread (28 warps, 44 % occupancy). The
// step loops need that many without spilling (at 64 they spill inside the loop).
constexpr int kMinBlocks = 7;
// Rows of xBC in flight per thread, and blocks an SM, for int8 and float input: the float path holds 8
// floats a row and the 8 column scales, at most 102 registers at five blocks of 128 threads.
template <bool kFloatIn>
constexpr int kAhead = kFloatIn ? 2 : 4;
template <bool kFloatIn>
constexpr int kMinBlocksFor = kFloatIn ? 5 : kMinBlocks;

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
  int64_t batch, seqlen;
  int64_t nslices;  // time slices per channel vector
  int nvec;         // channel vectors per time step
  int conv_dim, d_ssm, gn, headdim, hpg, d_state, nhg, ndg;
  bool weight_words;    // K = 4 and weight 4-byte aligned: a channel's taps are one aligned word
  float acc_scale[3];   // fp32(s_in * s_w) of the x, B, C segments
  float bias_scale[3];  // s_b of the x, B, C segments
  // The float source (kFloatIn): xBC row r is Q(fp32(xf[r * xf_stride + c] * col_scale[c]), in_scale[seg]).
  const float* __restrict__ xf;         // in_proj's output at xBC's first column
  const float* __restrict__ col_scale;  // [conv_dim], or null (1)
  int64_t xf_stride;                    // floats from one token's row to the next
  float in_scale[3], in_inv[3];         // s_in of the x, B, C segments and its IEEE reciprocal
  bool in_exact[3];                     // needs_division(s_in): Q by the division
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

// One row of VEC channels as loaded: two words for 8 channels (channel k in byte k % 4 of word
// k / 4), one word holding the byte for 1 channel. Words, not bytes, so that the compiler moves them
// whole.
template <int VEC>
struct Row {
  static constexpr int kWords = VEC >= 4 ? VEC / 4 : 1;
  uint32_t w[kWords];
};

// A row of VEC channels of the float source, as loaded (two 16-byte loads for 8 channels).
template <int VEC>
struct FloatRow {
  float v[VEC];
};

// What a step reads from xBC: int8 words, or the floats it quantizes.
template <int VEC, bool kFloatIn>
using InRow = std::conditional_t<kFloatIn, FloatRow<VEC>, Row<VEC>>;

// A row of xBC (read-only for the whole launch: through the read-only data cache) or, with
// kReadOnly = false, of conv_state, which decode may update in place (plain loads).
template <int VEC, bool kReadOnly = true>
__device__ __forceinline__ Row<VEC> load_row(const int8_t* p) {
  Row<VEC> r;
  if constexpr (VEC == 8) {
    const uint2 q = kReadOnly ? __ldg(reinterpret_cast<const uint2*>(p)) : *reinterpret_cast<const uint2*>(p);
    r.w[0] = q.x;
    r.w[1] = q.y;
  } else {
    r.w[0] = static_cast<uint8_t>(kReadOnly ? __ldg(p) : *p);
  }
  return r;
}

// A row of the float source (read-only for the launch).
template <int VEC>
__device__ __forceinline__ FloatRow<VEC> load_row(const float* p) {
  FloatRow<VEC> r;
  if constexpr (VEC == 8) {
    const float4 lo = __ldg(reinterpret_cast<const float4*>(p));
    const float4 hi = __ldg(reinterpret_cast<const float4*>(p) + 1);
    r.v[0] = lo.x; r.v[1] = lo.y; r.v[2] = lo.z; r.v[3] = lo.w;
    r.v[4] = hi.x; r.v[5] = hi.y; r.v[6] = hi.z; r.v[7] = hi.w;
  } else {
    r.v[0] = __ldg(p);
  }
  return r;
}

// The per-thread constants of the float source's quantization: the columns' scales and the segment's input
// scale with its reciprocal (all VEC channels lie in one segment).
template <int VEC>
struct InQuant {
  float col[VEC];
  float s[4], inv[4];  // the segment's s_in and 1 / s_in, four times (quantize4_with_inverse's operands)
  bool exact;
};

// The int8 words of a row: as loaded, or the float row scaled by its columns' scales and quantized, the
// contract's Q (quantize{4,1}_with_inverse: the IEEE division's result, decided by it near a tie).
template <int VEC>
__device__ __forceinline__ Row<VEC> to_words(const Row<VEC>& r, const InQuant<VEC>& /*iq*/) {
  return r;
}

template <int VEC>
__device__ __forceinline__ Row<VEC> to_words(const FloatRow<VEC>& f, const InQuant<VEC>& iq) {
  Row<VEC> r;
  if constexpr (VEC == 8) {
#pragma unroll
    for (int m = 0; m < 2; ++m) {
      const float v[4] = {__fmul_rn(f.v[4 * m], iq.col[4 * m]), __fmul_rn(f.v[4 * m + 1], iq.col[4 * m + 1]),
                          __fmul_rn(f.v[4 * m + 2], iq.col[4 * m + 2]), __fmul_rn(f.v[4 * m + 3], iq.col[4 * m + 3])};
      r.w[m] = quantize4_with_inverse(v, iq.s, iq.inv, iq.exact);
    }
  } else {
    r.w[0] = quantize1_with_inverse(__fmul_rn(f.v[0], iq.col[0]), iq.s[0], iq.inv[0], iq.exact) & 0xffu;
  }
  return r;
}

template <int VEC>
__device__ __forceinline__ Row<VEC> zero_row() {
  Row<VEC> r;
#pragma unroll
  for (int m = 0; m < Row<VEC>::kWords; ++m) r.w[m] = 0;
  return r;
}

// Row `row` of u = concat(conv_state, xBC) along time for batch b, channels [c0, c0 + VEC).
template <int VEC, int K, bool kFloatIn>
__device__ __forceinline__ Row<VEC> load_u(const ConvArgs& a, const InQuant<VEC>& iq, int64_t b, int64_t row, int c0) {
  if (row >= K - 1) {
    const int64_t r = b * a.seqlen + row - (K - 1);
    if constexpr (kFloatIn) return to_words<VEC>(load_row<VEC>(a.xf + r * a.xf_stride + c0), iq);
    return load_row<VEC>(a.xBC + r * a.conv_dim + c0);
  }
  if (a.state != nullptr) return load_row<VEC, false>(a.state + (b * (K - 1) + row) * a.conv_dim + c0);
  return zero_row<VEC>();
}

// Slides one row of u into the windows: the bytes of window k move down one place and channel k of
// the row becomes its byte 3 (one byte permute a channel).
template <int VEC>
__device__ __forceinline__ void slide_in(uint32_t (&win)[VEC], const Row<VEC>& row) {
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    win[k] = __byte_perm(win[k], row.w[k / 4], 0x0321 | ((4 + k % 4) << 12));
  }
}

// Low bytes of four words, packed into one word (a's lowest).
__device__ __forceinline__ uint32_t pack_low_bytes(uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  return __byte_perm(__byte_perm(a, b, 0x0040), __byte_perm(c, d, 0x0040), 0x5410);
}

// The per-thread constants of VEC channels.
template <int VEC>
struct Channels {
  uint32_t taps[VEC];       // tap j in byte j + 4 - K (zero below), to match the window's bytes
  float bias_term[VEC];     // float(bias) * s_b, rounded on its own as the contract orders
  float s_out[VEC];         // output scale (group lookup)
  float acc_scale;          // fp32(s_in * s_w) of the segment
  float thr;                // silu_quantize_estimate's threshold for all VEC channels (convMath.cuh)
};

// One time step of VEC channels from the window (the newest row already slid in): the VEC outputs
// as the low bytes of `bits`.
template <int VEC, bool kClampLow>
__device__ __forceinline__ void conv_step(const Channels<VEC>& ch, const uint32_t (&win)[VEC], uint32_t (&bits)[VEC]) {
  bool near = false;
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    // acc = sum_j w[j] * u[t + j] exactly, started at kRoundShiftBits so that its bits are a float.
    const int acc = __dp4a(static_cast<int>(win[k]), static_cast<int>(ch.taps[k]), kRoundShiftBits);
    near |= silu_quantize_estimate<kClampLow>(conv_value_shifted(acc, ch.acc_scale, ch.bias_term[k]), ch.s_out[k],
                                              ch.thr, &bits[k]);
  }
  if (near) {
    // Rare (an estimate within its error bound of a rounding tie): the exact sequence for those.
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const int acc = __dp4a(static_cast<int>(win[k]), static_cast<int>(ch.taps[k]), kRoundShiftBits);
      const float v = conv_value_shifted(acc, ch.acc_scale, ch.bias_term[k]);
      if (silu_quantize_estimate<kClampLow>(v, ch.s_out[k], ch.thr, &bits[k])) {
        bits[k] = static_cast<uint8_t>(silu_quantize_exact(v, ch.s_out[k]));
      }
    }
  }
}

template <int VEC>
__device__ __forceinline__ void store_bits(int8_t* p, const uint32_t (&bits)[VEC]) {
  if constexpr (VEC == 8) {
    uint2 q;
    q.x = pack_low_bytes(bits[0], bits[1], bits[2], bits[3]);
    q.y = pack_low_bytes(bits[4], bits[5], bits[6], bits[7]);
    *reinterpret_cast<uint2*>(p) = q;
  } else {
    Bytes<VEC> q;
#pragma unroll
    for (int k = 0; k < VEC; ++k) q.v[k] = static_cast<int8_t>(bits[k] & 0xffu);
    *reinterpret_cast<Bytes<VEC>*>(p) = q;
  }
}

// The steps [pos, end) of the flattened (row, step) sequence for channels [c0, c0 + VEC), cut into
// runs along batch rows; outputs at out_base (rows of out_width, from channel out_c0).
template <int VEC, int K, bool kClampLow, bool kFloatIn>
__device__ __forceinline__ void conv_slice(const ConvArgs& a, const Channels<VEC>& ch, const InQuant<VEC>& iq, int c0,
                                           int8_t* out_base, int out_width, int out_c0, int64_t pos,
                                           const int64_t end) {
  using In = std::conditional_t<kFloatIn, float, int8_t>;
  const uint32_t in_stride = kFloatIn ? static_cast<uint32_t>(a.xf_stride) : static_cast<uint32_t>(a.conv_dim);
  const In* const src = kFloatIn ? reinterpret_cast<const In*>(a.xf) : reinterpret_cast<const In*>(a.xBC);
  constexpr int kAheadRows = kAhead<kFloatIn>;
  while (pos < end) {
    const int64_t b = pos / a.seqlen;
    const int64_t t0 = pos - b * a.seqlen;
    const int n = static_cast<int>(min(end - pos, a.seqlen - t0));

    // The window before step t0: u rows t0 .. t0 + K - 2 (bytes 5 - K .. 3).
    uint32_t win[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) win[k] = 0;
#pragma unroll
    for (int j = 0; j < K - 1; ++j) slide_in<VEC>(win, load_u<VEC, K, kFloatIn>(a, iq, b, t0 + j, c0));

    const In* in = src + (b * a.seqlen + t0) * in_stride + c0;
    int8_t* out = out_base + (b * a.seqlen + t0) * out_width + out_c0;
    // A ring of kAheadRows + 1 rows: step u takes row u of the ring, whose slot then waits for the row
    // kAheadRows + 1 steps on; the load into the slot freed one step earlier goes first.
    constexpr int kRing = kAheadRows + 1;
    InRow<VEC, kFloatIn> ring[kRing];
#pragma unroll
    for (int u = 0; u < kAheadRows; ++u) {
      if (u < n) ring[u] = load_row<VEC>(in + u * in_stride);
    }
    const In* next = in + kAheadRows * in_stride;
    // One step on ring slot u (a constant once the loops below are unrolled): the row in, one output row out.
    auto step = [&](int u) {
      next += in_stride;
      slide_in<VEC>(win, to_words<VEC>(ring[u], iq));
      uint32_t bits[VEC];
      conv_step<VEC, kClampLow>(ch, win, bits);
      store_bits<VEC>(out, bits);
      out += out_width;
    };
    int i = 0;
    // Steady state: every row kAheadRows steps on exists.
    for (; i + kRing + kAheadRows <= n; i += kRing) {
#pragma unroll
      for (int u = 0; u < kRing; ++u) {
        ring[(u + kAheadRows) % kRing] = load_row<VEC>(next);
        step(u);
      }
    }
    // The last (up to kRing + kAheadRows - 1) steps.
    for (; i < n; i += kRing) {
#pragma unroll
      for (int u = 0; u < kRing; ++u) {
        if (i + u < n) {
          if (i + u + kAheadRows < n) ring[(u + kAheadRows) % kRing] = load_row<VEC>(next);
          step(u);
        }
      }
    }

    // At the end of a batch row the window holds the last K-1 rows of u (bytes 5 - K .. 3): the new
    // conv state. In decode the state rows were read above, before this write, by this same thread.
    if (t0 + n == a.seqlen) {
#pragma unroll
      for (int j = 0; j < K - 1; ++j) {
        Bytes<VEC> r;
#pragma unroll
        for (int k = 0; k < VEC; ++k) r.v[k] = static_cast<int8_t>(win[k] >> (8 * (j + 5 - K)));
        *reinterpret_cast<Bytes<VEC>*>(a.state_out + (b * (K - 1) + j) * a.conv_dim + c0) = r;
      }
    }
    pos += n;
  }
}

template <int VEC, int K, bool kFloatIn>
__global__ void __launch_bounds__(kThreads, kMinBlocksFor<kFloatIn>) quant_conv1d_silu_kernel(const ConvArgs a) {
  static_assert(VEC == 1 || VEC == 8, "8-byte or bytewise channel vectors");
  const int64_t gid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (gid >= a.nslices * a.nvec) return;
  const int c0 = static_cast<int>(gid % a.nvec) * VEC;
  const int64_t slice = gid / a.nvec;

  // The VEC channels lie in one segment (the launcher checks the segment sizes divide VEC).
  const int seg = c0 < a.d_ssm ? 0 : (c0 < a.d_ssm + a.gn ? 1 : 2);
  int8_t* out_base = seg == 0 ? a.x : (seg == 1 ? a.B : a.C);
  const int out_width = seg == 0 ? a.d_ssm : a.gn;
  const int out_c0 = seg == 0 ? c0 : (seg == 1 ? c0 - a.d_ssm : c0 - a.d_ssm - a.gn);

  Channels<VEC> ch;
  ch.acc_scale = a.acc_scale[seg];
  const float bias_scale = a.bias_scale[seg];
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    uint32_t packed = 0;
    if (K == 4 && a.weight_words) {
      packed = __ldg(reinterpret_cast<const uint32_t*>(a.weight) + c0 + k);  // taps 0..3 in bytes 0..3
    } else {
#pragma unroll
      for (int j = 0; j < K; ++j) {
        packed |= static_cast<uint32_t>(static_cast<uint8_t>(__ldg(a.weight + (c0 + k) * K + j))) << (8 * (j + 4 - K));
      }
    }
    ch.taps[k] = packed;
    ch.bias_term[k] = __fmul_rn(static_cast<float>(__ldg(a.bias + c0 + k)), bias_scale);
  }
  out_scales<VEC>(a, c0, ch.s_out);
  InQuant<VEC> iq;
  if constexpr (kFloatIn) {
#pragma unroll
    for (int k = 0; k < VEC; ++k) iq.col[k] = a.col_scale != nullptr ? __ldg(a.col_scale + c0 + k) : 1.0f;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      iq.s[e] = a.in_scale[seg];
      iq.inv[e] = a.in_inv[seg];
    }
    iq.exact = a.in_exact[seg];
  }
  // The estimate needs |v| < 2^100 (|acc| <= 2^16) and takes the threshold of the smallest scale;
  // NaN fails every comparison here and sends all of this thread's outputs to the exact sequence.
  bool in_range = ch.acc_scale < 0x1p82f;
  float s_min = ch.s_out[0];
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    in_range = in_range && fabsf(ch.bias_term[k]) < 0x1p98f && ch.s_out[k] > 0.0f;
    s_min = fminf(s_min, ch.s_out[k]);
  }
  ch.thr = in_range ? silu_tie_threshold(s_min) : -1.0f;

  // This thread's slice of the flattened (row, step) sequence.
  const int64_t total = a.batch * a.seqlen;
  const int64_t per = total / a.nslices, extra = total % a.nslices;
  const int64_t pos = slice * per + min(slice, extra);
  const int64_t end = pos + per + (slice < extra ? 1 : 0);
  if (s_min >= kNoLowSaturationScale) {
    conv_slice<VEC, K, false, kFloatIn>(a, ch, iq, c0, out_base, out_width, out_c0, pos, end);
  } else {
    conv_slice<VEC, K, true, kFloatIn>(a, ch, iq, c0, out_base, out_width, out_c0, pos, end);
  }
}

template <int VEC, int K, bool kFloatIn>
int resident_blocks_per_sm(int device) {
  // Occupancy depends on the kernel and the device's architecture only: found once per device.
  static std::atomic<int> cache[64];
  std::atomic<int>* slot = (device >= 0 && device < 64) ? &cache[device] : nullptr;
  int n = slot != nullptr ? slot->load(std::memory_order_relaxed) : 0;
  if (n > 0) return n;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, quant_conv1d_silu_kernel<VEC, K, kFloatIn>, kThreads, 0) !=
          cudaSuccess ||
      n < 1) {
    (void)cudaGetLastError();
    n = 1;
  } else if (slot != nullptr) {
    slot->store(n, std::memory_order_relaxed);
  }
  return n;
}

template <int VEC, int K, bool kFloatIn>
int launch_kernel(ConvArgs& a, const DeviceLimits& dev, cudaStream_t stream) {
  // As many slices per channel vector as keep every resident thread busy (one wave: all threads
  // end together, and each thread's setup serves the longest slice), but slices of at least 4 steps
  // (or the whole row) so that the K-1 rows read before each slice stay a small overhead.
  const int64_t resident = int64_t(dev.sm_count) * resident_blocks_per_sm<VEC, K, kFloatIn>(dev.device) * kThreads;
  const int64_t total = a.batch * a.seqlen;
  const int64_t min_steps = a.seqlen < 4 ? a.seqlen : 4;
  int64_t slices = resident / a.nvec;
  if (slices > (total + min_steps - 1) / min_steps) slices = (total + min_steps - 1) / min_steps;
  a.nslices = slices < 1 ? 1 : slices;
  const int64_t blocks = (a.nslices * a.nvec + kThreads - 1) / kThreads;
  if (blocks > 0x7fffffff) return QMAMBA_ERR_BAD_SIZE;
  quant_conv1d_silu_kernel<VEC, K, kFloatIn><<<static_cast<int>(blocks), kThreads, 0, stream>>>(a);
  return QMAMBA_OK;
}

template <int VEC, bool kFloatIn>
int launch_for_width(ConvArgs& a, int K, const DeviceLimits& dev, cudaStream_t stream) {
  switch (K) {
    case 2: return launch_kernel<VEC, 2, kFloatIn>(a, dev, stream);
    case 3: return launch_kernel<VEC, 3, kFloatIn>(a, dev, stream);
    default: return launch_kernel<VEC, 4, kFloatIn>(a, dev, stream);
  }
}

// `fin`: the float source of qmamba_quant_conv1d_silu_prefill_from_float (then t->xBC is not read), else null.
int check_conv(const char* where, const qmamba_conv_params* p, const qmamba_conv_tensors* t,
               const qmamba_conv_float_input* fin, int64_t batch, int64_t seqlen, bool decode) {
  QMAMBA_TRY(check_ptr(where, "params", p));
  QMAMBA_TRY(check_ptr(where, "tensors", t));
  if (fin == nullptr) QMAMBA_TRY(check_ptr(where, "xBC", t->xBC));
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
    // Slices of a long sequence read the state while the last slice writes the new one.
    return fail(QMAMBA_ERR_BAD_VALUE, "%s: conv_state_out aliases conv_state (only decode updates in place)", where);
  }
  QMAMBA_TRY(check_conv_params(where, p));
  QMAMBA_TRY(check_range(where, "batch", batch, 1, int64_t(1) << 24));
  QMAMBA_TRY(check_range(where, "seqlen", seqlen, 1, 65536));
  if (fin != nullptr) {
    QMAMBA_TRY(check_ptr(where, "zxbcdt", fin->zxbcdt));
    const int64_t conv_dim = int64_t(p->nheads) * p->headdim + 2 * int64_t(p->ngroups) * p->d_state;
    QMAMBA_TRY(check_range(where, "xbc_offset", fin->xbc_offset, 0, int64_t(1) << 30));
    if (fin->row_width < fin->xbc_offset + conv_dim || fin->row_width > (int64_t(1) << 30)) {
      return fail(QMAMBA_ERR_BAD_SIZE, "%s: row_width = %lld must hold xbc_offset + conv_dim = %lld + %lld columns",
                  where, static_cast<long long>(fin->row_width), static_cast<long long>(fin->xbc_offset),
                  static_cast<long long>(conv_dim));
    }
  }
  return QMAMBA_OK;
}

int launch_conv(const char* where, const qmamba_conv_params* p, const qmamba_conv_tensors* t,
                const qmamba_conv_float_input* fin, int64_t batch, int64_t seqlen, cudaStream_t stream) {
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

  a.xf = nullptr; a.col_scale = nullptr; a.xf_stride = 0;
  if (fin != nullptr) {
    a.xBC = nullptr;
    a.xf = fin->zxbcdt + fin->xbc_offset;
    a.col_scale = fin->col_scale;
    a.xf_stride = fin->row_width;
    const float in_scale[3] = {p->x_scale, p->B_scale, p->C_scale};
    for (int seg = 0; seg < 3; ++seg) {
      a.in_scale[seg] = in_scale[seg];
      a.in_inv[seg] = 1.0f / in_scale[seg];
      a.in_exact[seg] = !(in_scale[seg] >= 1.17549435e-38f);  // needs_division (common.cuh)
    }
  }

  a.weight_words = p->d_conv == 4 && (reinterpret_cast<uintptr_t>(a.weight) & 3u) == 0;
  // 8-byte accesses need every segment and row to start on an 8-byte boundary; the float source's rows
  // (8 floats, two 16-byte loads) on a 16-byte one.
  const bool in8 = fin == nullptr ? aligned8(a.xBC) : aligned16(a.xf) && a.xf_stride % 4 == 0;
  const bool vec8 = a.gn % 8 == 0 && a.d_ssm % 8 == 0 && in8 && aligned8(a.x) && aligned8(a.B) && aligned8(a.C) &&
                    aligned8(a.state) && aligned8(a.state_out);
  const int vec = vec8 ? 8 : 1;
  a.nvec = a.conv_dim / vec;
  int rc;
  if (fin != nullptr) {
    rc = vec8 ? launch_for_width<8, true>(a, p->d_conv, dev, stream) : launch_for_width<1, true>(a, p->d_conv, dev, stream);
  } else {
    rc = vec8 ? launch_for_width<8, false>(a, p->d_conv, dev, stream) : launch_for_width<1, false>(a, p->d_conv, dev, stream);
  }
  if (rc == QMAMBA_ERR_BAD_SIZE) return fail(QMAMBA_ERR_BAD_SIZE, "%s: batch * seqlen too large for one launch", where);
  return check_launch(where);
}

}  // namespace
}  // namespace qmamba

extern "C" int qmamba_quant_conv1d_silu_prefill(const qmamba_conv_params* params,
                                                const qmamba_conv_tensors* t, int64_t batch,
                                                int64_t seqlen, qmamba_stream_t stream) {
  const char* where = "qmamba_quant_conv1d_silu_prefill";
  QMAMBA_TRY(qmamba::check_conv(where, params, t, nullptr, batch, seqlen, false));
  return qmamba::launch_conv(where, params, t, nullptr, batch, seqlen, stream);
}

extern "C" int qmamba_quant_conv1d_silu_prefill_from_float(const qmamba_conv_params* params,
                                                           const qmamba_conv_float_input* in,
                                                           const qmamba_conv_tensors* t, int64_t batch,
                                                           int64_t seqlen, qmamba_stream_t stream) {
  const char* where = "qmamba_quant_conv1d_silu_prefill_from_float";
  QMAMBA_TRY(qmamba::check_ptr(where, "in", in));
  QMAMBA_TRY(qmamba::check_conv(where, params, t, in, batch, seqlen, false));
  return qmamba::launch_conv(where, params, t, in, batch, seqlen, stream);
}

extern "C" int qmamba_quant_conv1d_silu_decode(const qmamba_conv_params* params,
                                               const qmamba_conv_tensors* t, int64_t batch,
                                               qmamba_stream_t stream) {
  const char* where = "qmamba_quant_conv1d_silu_decode";
  QMAMBA_TRY(qmamba::check_conv(where, params, t, nullptr, batch, 1, true));
  return qmamba::launch_conv(where, params, t, nullptr, batch, 1, stream);
}
