// QmambaW8A8Linear's C entry point: checks the arguments, picks the activation rows of a pass and the
// kernel (tensor cores for three or more rows where they apply, else the register kernel). With a rotation the
// normed, rotated rows are made first, in the workspace, by QmambaGatedNorm's kernel without a gate.
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include <string>

#include "checks.h"
#include "w8a8Linear.cuh"

extern "C" int qmamba_w8a8_linear(const qmamba_linear_params* params, const qmamba_linear_tensors* t,
                                  int64_t rows, qmamba_stream_t stream) {
  using namespace qmamba;
  const char* where = "qmamba_w8a8_linear";
  QMAMBA_TRY(check_ptr(where, "params", params));
  QMAMBA_TRY(check_ptr(where, "tensors", t));
  // One activation row, 4 int8 per word, must fit the shared memory: K <= 47104.
  QMAMBA_TRY(check_range(where, "in_features", params->in_features, 1, static_cast<int64_t>(kSharedLimit)));
  QMAMBA_TRY(check_range(where, "out_features", params->out_features, 1, INT32_MAX));
  QMAMBA_TRY(check_range(where, "norm", params->norm, 0, 1));
  QMAMBA_TRY(check_range(where, "rows", rows, 0, int64_t{65535} * kMaxRowsPerPass));
  if (params->norm && !(params->eps >= 0.0f && isfinite(params->eps))) {
    return fail(QMAMBA_ERR_BAD_VALUE, "%s: eps must be finite and >= 0, got %g", where, params->eps);
  }
  const int norm_group = params->norm_group == 0 ? params->in_features : params->norm_group;
  if (params->norm && (norm_group < 1 || params->in_features % norm_group != 0 ||
                       params->in_features / norm_group > kMaxNormGroups)) {
    return fail(QMAMBA_ERR_BAD_VALUE, "%s: norm_group must be 0 or a divisor of in_features = %d giving at most %d "
                "groups, got %d", where, params->in_features, kMaxNormGroups, params->norm_group);
  }
  // 0 and 1 both mean no factor, so that a zeroed struct has no rotation; the gated norm's launcher checks the
  // orders themselves (f1 a power of two, both at most 128, f0 * f1 = K, shared memory).
  QMAMBA_TRY(check_range(where, "rotation_first", params->rotation_first, 0, INT32_MAX));
  QMAMBA_TRY(check_range(where, "rotation_last", params->rotation_last, 0, INT32_MAX));
  const int f0 = params->rotation_first > 1 ? params->rotation_first : 1;
  const int f1 = params->rotation_last > 1 ? params->rotation_last : 1;
  const bool rotate = f0 > 1 || f1 > 1;
  if (rotate && !params->norm) {
    return fail(QMAMBA_ERR_BAD_VALUE, "%s: a rotation needs norm = 1 (the rotation pass is the gated norm's kernel, "
                "which norms each row)", where);
  }
  if (rows == 0) return ok();
  QMAMBA_TRY(check_ptr(where, "x", t->x));
  QMAMBA_TRY(check_ptr(where, "weight", t->weight));
  QMAMBA_TRY(check_ptr(where, "out_scale", t->out_scale));
  QMAMBA_TRY(check_ptr(where, "input_scale", t->input_scale));
  QMAMBA_TRY(check_ptr(where, "y", t->y));
  if (params->norm) QMAMBA_TRY(check_ptr(where, "norm_weight", t->norm_weight));
  if (t->y == t->x) return fail(QMAMBA_ERR_BAD_VALUE, "%s: y must not alias x", where);
  if (rotate) {
    if (f0 > 1) QMAMBA_TRY(check_ptr(where, "rotation_first", t->rotation_first));
    QMAMBA_TRY(check_ptr(where, "workspace", t->workspace));
    if (!aligned16(t->workspace)) {
      return fail(QMAMBA_ERR_WORKSPACE, "%s: the rotation's workspace must be 16-byte aligned", where);
    }
    if (t->workspace == t->y || t->workspace == t->residual) {
      return fail(QMAMBA_ERR_BAD_VALUE, "%s: the rotation's workspace must not alias y or residual", where);
    }
  }

  const float* x = t->x;
  int norm = params->norm;
  // With a rotation, the normed, rotated rows into the workspace first (the gated norm's checks, which come
  // before its launch, are this pass's); the linear then takes them as x, without a norm. A refusal of the
  // linear below leaves only the workspace written.
  if (rotate) {
    const qmamba_gated_norm_params gp{params->in_features, norm_group, params->eps, 0.0f, f0, f1, 0};
    const qmamba_gated_norm_tensors gt{t->x, nullptr, nullptr, t->norm_weight, f0 > 1 ? t->rotation_first : nullptr,
                                       t->workspace};
    const int rc = qmamba_gated_norm(&gp, &gt, rows, stream);
    if (rc != QMAMBA_OK) {
      const std::string why = qmamba_last_error();
      return fail(rc, "%s: rotation pass: %s", where, why.c_str());
    }
    x = t->workspace;
    norm = 0;
  }

  DeviceLimits dev{};
  QMAMBA_TRY(device_limits(where, &dev));
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);

  LinearArgs a{};
  a.x = x; a.weight = t->weight; a.out_scale = t->out_scale; a.input_scale = t->input_scale;
  a.norm_weight = norm ? t->norm_weight : nullptr; a.residual = t->residual; a.y = t->y;
  a.K = params->in_features; a.N = params->out_features; a.words = (params->in_features + 3) / 4;
  a.norm = norm; a.eps = params->eps; a.norm_group = norm_group; a.rows = rows;
  a.vec_x = a.K % 4 == 0 && aligned16(a.x) && aligned16(a.norm_weight);
  // Rows per pass: enough for all rows (up to 8), as long as their int8 copy fits in shared memory.
  int mt = 1;
  while (mt < kMaxRowsPerPass && mt < rows &&
         static_cast<size_t>(2 * mt) * a.words * sizeof(int32_t) <= kSharedLimit) {
    mt *= 2;
  }
  if (static_cast<int64_t>((rows + mt - 1) / mt) > 65535) {
    return fail(QMAMBA_ERR_BAD_SIZE, "%s: %lld rows are more than one launch takes", where,
                static_cast<long long>(rows));
  }
  const bool vec = a.words % 4 == 0 && aligned16(t->weight);
  a.chunks = vec ? a.words / 4 : a.words;
  // Three or more rows a pass take the tensor-core kernel where it applies (weight rows of whole, aligned
  // 16-byte chunks), the others and the rest the register kernel.
  if (!(vec && launch_tensor_core_kernel(dev, a, mt, s))) {
    QMAMBA_TRY(launch_register_kernel(where, dev, a, mt, vec, s));
  }
  return check_launch(where);
}
