// qmamba_copy_async: a device-to-device copy queued on a stream, for callers that link the kernels
// library and not the CUDA runtime (the plugin cores: QmambaBitsAsFloat moves QuantSSD's y bytes).
#include "checks.h"

extern "C" int qmamba_copy_async(void* dst, const void* src, size_t bytes, qmamba_stream_t stream) {
  const char* where = "qmamba_copy_async";
  if (bytes == 0) return qmamba::ok();
  QMAMBA_TRY(qmamba::check_ptr(where, "dst", dst));
  QMAMBA_TRY(qmamba::check_ptr(where, "src", src));
  cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream);
  if (e != cudaSuccess) {
    return qmamba::fail(QMAMBA_ERR_CUDA, "%s: %s", where, cudaGetErrorString(e));
  }
  return qmamba::ok();
}
