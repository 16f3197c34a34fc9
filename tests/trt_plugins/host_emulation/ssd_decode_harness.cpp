// QuantSSD decode's launcher and kernel (a patched copy of quantSSDDecodeKernel.cu, see
// test_ssd_decode_host_emulation.py) run on the CPU, each CUDA thread a host thread. Reads from argv[1]: int32
// "batch ngroups nheads headdim d_state nhg ndg has_state out_fp16 sms", float32 "dt_scale dt_min dt_max", then
// x, dt, B, C (int8), A_log, D, dt_bias, x_out_scales, B_out_scales, C_out_scales (float32), the head and dim
// ranges (int32), ssm_state_scale (float32) and, with has_state, ssm_state (int8). Writes y (float32, or
// float16 bits) then ssm_state_out (int8) to argv[2].
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "qmamba_kernels.h"

int g_fake_sm_count = 132, g_fake_blocks_per_sm = 2;  // the runtime stand-in's device (cuda_runtime.h)

template <class T>
static std::vector<T> take(FILE* in, size_t n) {
  std::vector<T> v(n);
  if (n && std::fread(v.data(), sizeof(T), n, in) != n) std::exit(5);
  return v;
}

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  FILE* in = std::fopen(argv[1], "rb");
  if (!in) return 3;
  const std::vector<int32_t> h = take<int32_t>(in, 10);
  const std::vector<float> f = take<float>(in, 3);
  const int64_t bt = h[0];
  const int g = h[1], nh = h[2], hp = h[3], n = h[4], nhg = h[5], ndg = h[6];
  g_fake_sm_count = h[9];
  const size_t d_ssm = size_t(nh) * hp, gn = size_t(g) * n;
  auto x = take<int8_t>(in, bt * d_ssm), dt = take<int8_t>(in, bt * nh), B = take<int8_t>(in, bt * gn),
       C = take<int8_t>(in, bt * gn);
  auto A_log = take<float>(in, nh), D = take<float>(in, nh), dt_bias = take<float>(in, nh),
       xs = take<float>(in, size_t(g) * nhg * ndg), Bs = take<float>(in, g), Cs = take<float>(in, g);
  auto hr = take<int32_t>(in, size_t(g) * nhg), dr = take<int32_t>(in, size_t(g) * nhg * ndg);
  auto ss = take<float>(in, size_t(g) * nhg * ndg * n);
  auto state = take<int8_t>(in, h[7] ? bt * d_ssm * n : 0);
  std::fclose(in);
  const size_t ybytes = bt * d_ssm * (h[8] ? 2 : 4);
  std::vector<unsigned char> y(ybytes, 0xff);  // NaN poison in either dtype
  std::vector<int8_t> state_out(bt * d_ssm * n, -77);
  const qmamba_ssd_params p{f[0], f[1], f[2], g, nh, hp, n, nhg, ndg, h[8], 128};
  const qmamba_ssd_tensors t{x.data(), dt.data(), B.data(), C.data(), A_log.data(), D.data(), dt_bias.data(),
                             xs.data(), Bs.data(), Cs.data(), hr.data(), dr.data(), ss.data(),
                             h[7] ? state.data() : nullptr, y.data(), state_out.data()};
  const int rc = qmamba_quant_ssd_decode(&p, &t, bt, nullptr);
  if (rc != QMAMBA_OK) {
    std::printf("qmamba_quant_ssd_decode returned %d: %s\n", rc, qmamba_last_error());
    return 6;
  }
  FILE* o = std::fopen(argv[2], "wb");
  if (!o || std::fwrite(y.data(), 1, ybytes, o) != ybytes ||
      std::fwrite(state_out.data(), 1, state_out.size(), o) != state_out.size()) {
    return 7;
  }
  std::fclose(o);
  std::printf("decode of %lld rows\n", (long long)bt);
  return 0;
}
