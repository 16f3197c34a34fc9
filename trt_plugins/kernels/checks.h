// Host-side argument checks shared by the launchers: each failed check records a readable
// message (returned by qmamba_last_error()) and yields the error code to return.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include "qmamba_kernels.h"

namespace qmamba {

// Records the message (printf-style) for qmamba_last_error() and returns `code`.
int fail(int code, const char* fmt, ...);
// Clears the message; returns QMAMBA_OK.
int ok();

// Each returns QMAMBA_OK or the error code with the message set; `where` names the launcher.
int check_ptr(const char* where, const char* name, const void* p);
int check_scale(const char* where, const char* name, float v);
int check_range(const char* where, const char* name, int64_t v, int64_t lo, int64_t hi);
// ngroups, nheads, headdim, d_state, head/dim group counts: the sizes both ops share.
int check_shared_sizes(const char* where, int32_t ngroups, int32_t nheads, int32_t headdim,
                       int32_t d_state, int32_t nhg, int32_t ndg);
// QuantConv1dSiLU's attributes: finite positive scales, the shared sizes, 2 <= d_conv <= 4.
int check_conv_params(const char* where, const qmamba_conv_params* p);
// QuantSSD's dt attributes: finite positive dt_scale, 0 <= dt_min < dt_max (dt_max may be +inf).
int check_dt_params(const char* where, float dt_scale, float dt_min, float dt_max);
// Reports a failed launch (cudaGetLastError after the launch).
int check_launch(const char* where);

// True when p is 16-byte (8-byte) aligned, or null.
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
inline bool aligned8(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 7u) == 0; }

// The current device: its ordinal, streaming multiprocessors, opt-in shared memory per block, compute capability.
struct DeviceLimits {
  int device;  // the current device's ordinal
  int sm_count;
  int max_smem_optin;
  int cc_major;
};
int device_limits(const char* where, DeviceLimits* out);

// Whether launches on this device may use programmatic dependent launch (compute capability >= 9,
// QMAMBA_PDL not "0", and no earlier launch found it unsupported).
bool pdl_enabled(const DeviceLimits& dev);
// Turns programmatic dependent launch off for the process after a refused launch, saying so once on stderr.
void pdl_refused(cudaError_t e);

}  // namespace qmamba

// Early return of a non-OK check.
#define QMAMBA_TRY(expr)             \
  do {                               \
    int qmamba_rc_ = (expr);         \
    if (qmamba_rc_ != QMAMBA_OK) {   \
      return qmamba_rc_;             \
    }                                \
  } while (0)
