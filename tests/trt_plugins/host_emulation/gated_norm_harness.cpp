// QmambaGatedNorm's launcher and kernel (a patched copy of gatedNormKernel.cu, see
// test_gated_norm_host_emulation.py) run on the CPU, each CUDA thread a host thread. Reads
// "rows K group_size f0 f1 misalign sms gate col zw" (int32), "eps z_scale" (float32), then y [rows*K] and z
// [rows*(zw or K)] (z only with gate = 1; without it z is NULL; zw > 0: z's rows are zw wide, z_row_width), z_col_scale [K] (only with col = 1; else NULL), weight [K] and F_0
// [f0*f0] (if f0 > 1) as raw float32 from argv[1]; writes
// out [rows*K] as raw float32 to argv[2]. misalign shifts every tensor by one float (the kernel's scalar paths);
// sms is the SM count the launcher sees (one block an SM: fewer SMs than rows make each block take several rows).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "qmamba_kernels.h"

int g_fake_sm_count = 132, g_fake_blocks_per_sm = 1;  // the runtime stand-in's device (cuda_runtime.h)

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  FILE* in = std::fopen(argv[1], "rb");
  if (!in) return 3;
  int32_t head[10];
  float scalars[2];
  if (std::fread(head, 4, 10, in) != 10 || std::fread(scalars, 4, 2, in) != 2) return 4;
  const int rows = head[0], K = head[1], f0 = head[3], f1 = head[4], shift = head[5], gate = head[7], col = head[8];
  const int zw = head[9];
  g_fake_sm_count = head[6];
  auto take = [&](size_t n) {
    std::vector<float> v(n + 1, std::nanf(""));
    if (n && std::fread(v.data() + shift, 4, n, in) != n) std::exit(5);
    return v;
  };
  std::vector<float> y = take(size_t(rows) * K), z = take(gate ? size_t(rows) * (zw > 0 ? zw : K) : 0),
                     z_col = take(col ? size_t(K) : 0), w = take(K),
                     first = take(f0 > 1 ? size_t(f0) * f0 : 0), out(size_t(rows) * K + 1, std::nanf(""));
  std::fclose(in);
  const qmamba_gated_norm_params p{K, head[2], scalars[0], scalars[1], f0, f1, zw};
  const qmamba_gated_norm_tensors t{y.data() + shift, gate ? z.data() + shift : nullptr,
                                    col ? z_col.data() + shift : nullptr, w.data() + shift,
                                    f0 > 1 ? first.data() + shift : nullptr, out.data() + shift};
  const int rc = qmamba_gated_norm(&p, &t, rows, nullptr);
  if (rc != QMAMBA_OK) {
    std::printf("qmamba_gated_norm returned %d: %s\n", rc, qmamba_last_error());
    return 6;
  }
  FILE* o = std::fopen(argv[2], "wb");
  if (!o || std::fwrite(out.data() + shift, 4, size_t(rows) * K, o) != size_t(rows) * K) return 7;
  std::fclose(o);
  std::printf("normed %d rows of %d\n", rows, K);
  return 0;
}
