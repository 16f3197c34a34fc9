// Argument checks and the thread-local last-error message of the C ABI.
#include "checks.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <atomic>

namespace qmamba {

namespace {
// One message per calling thread, so that concurrent callers (TensorRT enqueues on several
// threads) never read each other's errors.
thread_local char g_last_error[512] = "";
}  // namespace

int fail(int code, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  vsnprintf(g_last_error, sizeof(g_last_error), fmt, args);
  va_end(args);
  return code;
}

int ok() {
  g_last_error[0] = '\0';
  return QMAMBA_OK;
}

int check_ptr(const char* where, const char* name, const void* p) {
  if (p == nullptr) return fail(QMAMBA_ERR_NULL_POINTER, "%s: %s is a null pointer", where, name);
  return QMAMBA_OK;
}

int check_scale(const char* where, const char* name, float v) {
  if (!isfinite(v) || !(v > 0.0f)) {
    return fail(QMAMBA_ERR_BAD_VALUE, "%s: %s must be finite and > 0, got %g", where, name,
                static_cast<double>(v));
  }
  return QMAMBA_OK;
}

int check_range(const char* where, const char* name, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) {
    return fail(QMAMBA_ERR_BAD_SIZE, "%s: %s = %lld is not supported (allowed %lld..%lld)", where,
                name, static_cast<long long>(v), static_cast<long long>(lo),
                static_cast<long long>(hi));
  }
  return QMAMBA_OK;
}

int check_shared_sizes(const char* where, int32_t ngroups, int32_t nheads, int32_t headdim,
                       int32_t d_state, int32_t nhg, int32_t ndg) {
  QMAMBA_TRY(check_range(where, "ngroups", ngroups, 1, 8));
  QMAMBA_TRY(check_range(where, "nheads", nheads, 1, 1 << 16));
  if (nheads % ngroups != 0) {
    return fail(QMAMBA_ERR_BAD_SIZE, "%s: ngroups = %d does not divide nheads = %d", where, ngroups,
                nheads);
  }
  if (headdim != 32 && headdim != 64 && headdim != 128) {
    return fail(QMAMBA_ERR_BAD_SIZE, "%s: headdim = %d is not supported (32, 64 or 128)", where,
                headdim);
  }
  QMAMBA_TRY(check_range(where, "d_state", d_state, 16, 256));
  QMAMBA_TRY(check_range(where, "n_head_groups", nhg, 1, 8));
  QMAMBA_TRY(check_range(where, "n_dim_groups", ndg, 1, 8));
  if (nhg > nheads / ngroups) {
    return fail(QMAMBA_ERR_BAD_SIZE, "%s: n_head_groups = %d exceeds the %d heads of an SSD group",
                where, nhg, nheads / ngroups);
  }
  return QMAMBA_OK;
}

int check_conv_params(const char* where, const qmamba_conv_params* p) {
  const char* scale_names[9] = {"x_scale", "wx_scale", "bx_scale", "B_scale", "wB_scale",
                                "bB_scale", "C_scale", "wC_scale", "bC_scale"};
  const float scales[9] = {p->x_scale, p->wx_scale, p->bx_scale, p->B_scale, p->wB_scale,
                           p->bB_scale, p->C_scale, p->wC_scale, p->bC_scale};
  for (int i = 0; i < 9; ++i) QMAMBA_TRY(check_scale(where, scale_names[i], scales[i]));
  QMAMBA_TRY(check_shared_sizes(where, p->ngroups, p->nheads, p->headdim, p->d_state,
                                p->n_head_groups, p->n_dim_groups));
  return check_range(where, "d_conv (K)", p->d_conv, 2, 4);
}

int check_dt_params(const char* where, float dt_scale, float dt_min, float dt_max) {
  QMAMBA_TRY(check_scale(where, "dt_scale", dt_scale));
  // dt_max may be +inf (the default); NaN fails both comparisons.
  if (!(dt_min >= 0.0f) || !(dt_max > dt_min)) {
    return fail(QMAMBA_ERR_BAD_VALUE, "%s: need 0 <= dt_min < dt_max, got dt_min = %g, dt_max = %g",
                where, static_cast<double>(dt_min), static_cast<double>(dt_max));
  }
  return QMAMBA_OK;
}

int check_launch(const char* where) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) {
    return fail(QMAMBA_ERR_CUDA, "%s: kernel launch failed: %s", where, cudaGetErrorString(e));
  }
  return ok();
}

int device_limits(const char* where, DeviceLimits* out) {
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  out->device = dev;
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&out->sm_count, cudaDevAttrMultiProcessorCount, dev);
  if (e == cudaSuccess) {
    e = cudaDeviceGetAttribute(&out->max_smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  }
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&out->cc_major, cudaDevAttrComputeCapabilityMajor, dev);
  if (e != cudaSuccess) {
    return fail(QMAMBA_ERR_CUDA, "%s: cannot query the current device: %s", where,
                cudaGetErrorString(e));
  }
  return QMAMBA_OK;
}

namespace {
// Off once a launch was refused, or when QMAMBA_PDL=0 (read once).
std::atomic<bool> g_pdl_off{false};
const bool g_pdl_env_off = [] {
  const char* v = getenv("QMAMBA_PDL");
  return v != nullptr && strcmp(v, "0") == 0;
}();
}  // namespace

bool pdl_enabled(const DeviceLimits& dev) { return dev.cc_major >= 9 && !g_pdl_env_off && !g_pdl_off.load(); }

void pdl_refused(cudaError_t e) {
  if (!g_pdl_off.exchange(true)) {
    fprintf(stderr, "qmamba: programmatic dependent launch refused (%s); the kernels launch without it\n",
            cudaGetErrorString(e));
  }
}

}  // namespace qmamba

extern "C" const char* qmamba_last_error(void) { return qmamba::g_last_error; }
