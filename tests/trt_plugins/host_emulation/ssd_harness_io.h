// The QuantSSD harnesses' file format (ssd_prefill_harness.cpp, ssd_decode_harness.cpp; written and read by
// host_emulation_build.run_ssd_harness). Input: int32 "batch seqlen ngroups nheads headdim d_state nhg ndg chunk
// has_state out_fp16 sms", float32 "dt_scale dt_min dt_max", then x, dt, B, C (int8), A_log, D, dt_bias,
// x_out_scales, B_out_scales, C_out_scales (float32), the head and dim ranges (int32), ssm_state_scale (float32)
// and, with has_state, ssm_state (int8). Output: y (float32, or float16 bits) then ssm_state_out (int8).
#pragma once
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "qmamba_kernels.h"

template <class T>
static std::vector<T> take(FILE* in, size_t n) {
  std::vector<T> v(n);
  if (n && std::fread(v.data(), sizeof(T), n, in) != n) std::exit(5);
  return v;
}

// One case as read, with the op's parameters and tensors pointing into it; y poisoned (NaN in either dtype),
// ssm_state_out filled with -77.
struct SsdCase {
  int64_t batch = 0, seqlen = 0;
  int sms = 0;
  std::vector<int8_t> x, dt, B, C, state, state_out;
  std::vector<float> A_log, D, dt_bias, xs, Bs, Cs, ss;
  std::vector<int32_t> hr, dr;
  std::vector<unsigned char> y;
  qmamba_ssd_params p{};
  qmamba_ssd_tensors t{};
};

// Reads argv[1]'s case; exits with 3 (no file) or 5 (short file).
inline void read_case(const char* path, SsdCase& c) {
  FILE* in = std::fopen(path, "rb");
  if (!in) std::exit(3);
  const std::vector<int32_t> h = take<int32_t>(in, 12);
  const std::vector<float> f = take<float>(in, 3);
  c.batch = h[0];
  c.seqlen = h[1];
  const int g = h[2], nh = h[3], hp = h[4], n = h[5], nhg = h[6], ndg = h[7];
  c.sms = h[11];
  const size_t rows = size_t(c.batch) * c.seqlen, d_ssm = size_t(nh) * hp, gn = size_t(g) * n;
  c.x = take<int8_t>(in, rows * d_ssm);
  c.dt = take<int8_t>(in, rows * nh);
  c.B = take<int8_t>(in, rows * gn);
  c.C = take<int8_t>(in, rows * gn);
  c.A_log = take<float>(in, nh);
  c.D = take<float>(in, nh);
  c.dt_bias = take<float>(in, nh);
  c.xs = take<float>(in, size_t(g) * nhg * ndg);
  c.Bs = take<float>(in, g);
  c.Cs = take<float>(in, g);
  c.hr = take<int32_t>(in, size_t(g) * nhg);
  c.dr = take<int32_t>(in, size_t(g) * nhg * ndg);
  c.ss = take<float>(in, size_t(g) * nhg * ndg * n);
  c.state = take<int8_t>(in, h[9] ? size_t(c.batch) * d_ssm * n : 0);
  std::fclose(in);
  c.y.assign(rows * d_ssm * (h[10] ? 2 : 4), 0xff);
  c.state_out.assign(size_t(c.batch) * d_ssm * n, -77);
  c.p = qmamba_ssd_params{f[0], f[1], f[2], g, nh, hp, n, nhg, ndg, h[10], h[8]};
  c.t = qmamba_ssd_tensors{c.x.data(), c.dt.data(), c.B.data(), c.C.data(), c.A_log.data(), c.D.data(),
                           c.dt_bias.data(), c.xs.data(), c.Bs.data(), c.Cs.data(), c.hr.data(), c.dr.data(),
                           c.ss.data(), h[9] ? c.state.data() : nullptr, c.y.data(), c.state_out.data()};
}

// Writes y then ssm_state_out to path; 0, or 7 when it cannot.
inline int write_outputs(const char* path, const SsdCase& c) {
  FILE* o = std::fopen(path, "wb");
  if (!o || std::fwrite(c.y.data(), 1, c.y.size(), o) != c.y.size() ||
      std::fwrite(c.state_out.data(), 1, c.state_out.size(), o) != c.state_out.size()) {
    return 7;
  }
  std::fclose(o);
  return 0;
}
