// QmambaW8A8Linear's C entry point: checks the arguments, picks the activation rows of a pass and the
// kernel (tensor cores for three or more rows where they apply, else the register kernel).
#include <math.h>
#include <stddef.h>
#include <stdint.h>

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
  const bool rotate = params->rotation_last != 0;
  if (rotate) {
    const int f0 = params->rotation_first, f1 = params->rotation_last;
    if (f0 < 1 || f1 < 1 || static_cast<int64_t>(f0) * f1 != params->in_features) {
      return fail(QMAMBA_ERR_BAD_SIZE, "%s: rotation orders f0 = %d, f1 = %d must be >= 1 with f0 * f1 = in_features "
                  "= %d", where, f0, f1, params->in_features);
    }
    if (rotation_shared_bytes(params->in_features, f0) > kSharedLimit) {
      return fail(QMAMBA_ERR_BAD_SIZE, "%s: a rotation of %d channels (f0 = %d) needs %zu bytes of shared memory, "
                  "more than %zu", where, params->in_features, f0, rotation_shared_bytes(params->in_features, f0),
                  kSharedLimit);
    }
    QMAMBA_TRY(check_range(where, "rows", rows, 0, 65535));
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
    if (params->rotation_first > 1) QMAMBA_TRY(check_ptr(where, "rotation_first", t->rotation_first));
    QMAMBA_TRY(check_ptr(where, "rotation_last", t->rotation_last));
    QMAMBA_TRY(check_ptr(where, "workspace", t->workspace));
    if (!aligned16(t->workspace)) {
      return fail(QMAMBA_ERR_WORKSPACE, "%s: the rotation's workspace must be 16-byte aligned", where);
    }
    if (t->workspace == t->y || t->workspace == t->residual) {
      return fail(QMAMBA_ERR_BAD_VALUE, "%s: the rotation's workspace must not alias y or residual", where);
    }
  }

  DeviceLimits dev{};
  QMAMBA_TRY(device_limits(where, &dev));
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  const float* x = t->x;
  int norm = params->norm;
  if (rotate) {  // the normed, rotated rows into the workspace; the linear then takes them as x, without a norm
    launch_rotation(dev, t->x, norm ? t->norm_weight : nullptr, norm_group, params->eps, t->rotation_first,
                    t->rotation_last, params->in_features, params->rotation_first, params->rotation_last, rows,
                    t->workspace, s);
    QMAMBA_TRY(check_launch(where));
    x = t->workspace;
    norm = 0;
  }

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
