// QuantSSD decode's launcher and kernel (a patched copy of quantSSDDecodeKernel.cu, see
// test_ssd_decode_host_emulation.py) run on the CPU, each CUDA thread a host thread, on the case in argv[1]
// (ssd_harness_io.h; seqlen 1); y and ssm_state_out to argv[2].
#include "ssd_harness_io.h"

int g_fake_sm_count = 132, g_fake_blocks_per_sm = 2;  // the runtime stand-in's device (cuda_runtime.h)

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  SsdCase c;
  read_case(argv[1], c);
  if (c.seqlen != 1) return 4;
  g_fake_sm_count = c.sms;
  const int rc = qmamba_quant_ssd_decode(&c.p, &c.t, c.batch, nullptr);
  if (rc != QMAMBA_OK) {
    std::printf("qmamba_quant_ssd_decode returned %d: %s\n", rc, qmamba_last_error());
    return 6;
  }
  std::printf("decode of %lld rows\n", (long long)c.batch);
  return write_outputs(argv[2], c);
}
