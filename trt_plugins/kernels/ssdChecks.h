// Argument checks of the QuantSSD launchers (prefill and decode share them).
#pragma once

#include "checks.h"

namespace qmamba {

// Null pointers, supported sizes, finite and positive dt_scale, 0 <= dt_min < dt_max, out dtype.
int check_ssd(const char* where, const qmamba_ssd_params* p, const qmamba_ssd_tensors* t,
              int64_t batch, int64_t seqlen);

}  // namespace qmamba
