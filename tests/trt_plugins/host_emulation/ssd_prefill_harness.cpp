// QuantSSD prefill's launcher and its three kernels (a patched copy of quantSSDPrefillKernel.cu, see
// test_ssd_prefill_host_emulation.py) run on the CPU, each CUDA thread a host thread and each mma a warp-wide
// exchange (tensor_core_shim.h), on the case in argv[1] (ssd_harness_io.h); y and ssm_state_out to argv[2].
#include "ssd_harness_io.h"

int g_fake_sm_count = 132, g_fake_blocks_per_sm = 1;  // the runtime stand-in's device (cuda_runtime.h)

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  SsdCase c;
  read_case(argv[1], c);
  g_fake_sm_count = c.sms;
  const size_t ws = qmamba_quant_ssd_prefill_workspace(&c.p, c.batch, c.seqlen);
  std::vector<float> workspace(ws / 4 + 4, std::nanf(""));
  const int rc = qmamba_quant_ssd_prefill(&c.p, &c.t, c.batch, c.seqlen, workspace.data(), ws, nullptr);
  if (rc != QMAMBA_OK) {
    std::printf("qmamba_quant_ssd_prefill returned %d: %s\n", rc, qmamba_last_error());
    return 6;
  }
  std::printf("prefill of %lld x %lld tokens, workspace %zu bytes\n", (long long)c.batch, (long long)c.seqlen, ws);
  return write_outputs(argv[2], c);
}
