// Argument checks of the QuantSSD launchers.
#include "ssdChecks.h"

namespace qmamba {

int check_ssd(const char* where, const qmamba_ssd_params* p, const qmamba_ssd_tensors* t,
              int64_t batch, int64_t seqlen) {
  QMAMBA_TRY(check_ptr(where, "params", p));
  QMAMBA_TRY(check_ptr(where, "tensors", t));
  QMAMBA_TRY(check_ptr(where, "x", t->x));
  QMAMBA_TRY(check_ptr(where, "dt", t->dt));
  QMAMBA_TRY(check_ptr(where, "B", t->B));
  QMAMBA_TRY(check_ptr(where, "C", t->C));
  QMAMBA_TRY(check_ptr(where, "A_log", t->A_log));
  QMAMBA_TRY(check_ptr(where, "D", t->D));
  QMAMBA_TRY(check_ptr(where, "dt_bias", t->dt_bias));
  QMAMBA_TRY(check_ptr(where, "x_out_scales", t->x_out_scales));
  QMAMBA_TRY(check_ptr(where, "B_out_scales", t->B_out_scales));
  QMAMBA_TRY(check_ptr(where, "C_out_scales", t->C_out_scales));
  QMAMBA_TRY(check_ptr(where, "x_head_group_range", t->x_head_group_range));
  QMAMBA_TRY(check_ptr(where, "x_dim_group_range", t->x_dim_group_range));
  QMAMBA_TRY(check_ptr(where, "ssm_state_scale", t->ssm_state_scale));
  QMAMBA_TRY(check_ptr(where, "y", t->y));
  QMAMBA_TRY(check_ptr(where, "ssm_state_out", t->ssm_state_out));
  QMAMBA_TRY(check_dt_params(where, p->dt_scale, p->dt_min, p->dt_max));
  if (p->out_fp16 != 0 && p->out_fp16 != 1) {
    return fail(QMAMBA_ERR_BAD_VALUE, "%s: out_fp16 must be 0 (float32 y) or 1 (float16 y), got %d",
                where, p->out_fp16);
  }
  if (p->chunk_size < 0) {
    return fail(QMAMBA_ERR_BAD_VALUE, "%s: chunk_size must be >= 0 (0 picks the default), got %d",
                where, p->chunk_size);
  }
  QMAMBA_TRY(check_shared_sizes(where, p->ngroups, p->nheads, p->headdim, p->d_state,
                                p->n_head_groups, p->n_dim_groups));
  QMAMBA_TRY(check_range(where, "batch", batch, 1, int64_t(1) << 24));
  QMAMBA_TRY(check_range(where, "seqlen", seqlen, 1, 65536));
  return QMAMBA_OK;
}

}  // namespace qmamba
