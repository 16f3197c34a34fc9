// QmambaW8A8Linear's rotation pass (a patched copy of w8a8LinearRotate.cu, see test_rotate_host_emulation.py)
// run on the CPU, each CUDA thread a host thread. Reads "rows K f0 f1 norm_group eps has_norm" and then
// x [rows*K], norm_weight [K] (if has_norm), F_0 [f0*f0] (if f0 > 1), F_1 [f1*f1] as raw float32 from argv[1];
// writes the rotated rows [rows*K] as raw float32 to argv[2].
#include <cstdio>
#include <vector>

#include "w8a8Linear.cuh"

int g_fake_sm_count = 132, g_fake_blocks_per_sm = 1;  // the runtime stand-in's device (cuda_runtime.h)

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  FILE* in = std::fopen(argv[1], "rb");
  if (!in) return 3;
  int32_t head[6];
  float eps;
  if (std::fread(head, 4, 6, in) != 6 || std::fread(&eps, 4, 1, in) != 1) return 4;
  const int rows = head[0], K = head[1], f0 = head[2], f1 = head[3], group = head[4], has_norm = head[5];
  auto take = [&](size_t n) {
    std::vector<float> v(n);
    if (n && std::fread(v.data(), 4, n, in) != n) std::exit(5);
    return v;
  };
  std::vector<float> x = take(size_t(rows) * K), w = take(has_norm ? K : 0), first = take(f0 > 1 ? f0 * f0 : 0),
                     last = take(size_t(f1) * f1), out(size_t(rows) * K, std::nanf(""));
  std::fclose(in);
  qmamba::DeviceLimits dev{};
  qmamba::launch_rotation(dev, x.data(), has_norm ? w.data() : nullptr, group ? group : K, eps, f0 > 1 ? first.data() : nullptr,
                          last.data(), K, f0, f1, rows, out.data(), nullptr);
  FILE* o = std::fopen(argv[2], "wb");
  if (!o || std::fwrite(out.data(), 4, out.size(), o) != out.size()) return 6;
  std::fclose(o);
  std::printf("rotated %d rows of %d\n", rows, K);
  return 0;
}
