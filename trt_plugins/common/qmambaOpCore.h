// Pieces of logic the op cores share, free of TensorRT types: the model dimensions both ops carry,
// the quantization-group inputs both take (x/B/C_out_scales, x_head/dim_group_range) and the
// choice and launch of their decode or prefill kernel. `Core` is an op's core (its kNAME, kIN_*).
#ifndef QMAMBA_OP_CORE_H
#define QMAMBA_OP_CORE_H

#include "qmambaErrors.h"
#include "qmambaFields.h"
#include "qmambaShapes.h"
#include "qmamba_kernels.h"

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace qmamba
{

// The fields ngroups, nheads, headdim and d_state of an op's params.
template <typename Params>
void validateModelDims(char const* op, Params const& p)
{
    require(p.ngroups >= 1, op, "field ngroups must be >= 1, got " + std::to_string(p.ngroups));
    require(p.nheads >= 1 && p.nheads % p.ngroups == 0, op,
        "field nheads = " + std::to_string(p.nheads) + " must be divisible by ngroups = " + std::to_string(p.ngroups));
    require(p.headdim >= 1, op, "field headdim must be >= 1, got " + std::to_string(p.headdim));
    require(p.d_state >= 1, op, "field d_state must be >= 1, got " + std::to_string(p.d_state));
}

// QuantConv1dSiLU's 13 attribute fields (docs/ops.md: its nine scales, then ngroups, nheads, headdim,
// d_state), which QmambaDecodeMixer's field table begins with: read from the first 13 field values,
// written back in that order, and the scales checked by the names `fields` gives them.
constexpr size_t kNB_CONV_SCALES = 9;
constexpr size_t kNB_CONV_FIELDS = kNB_CONV_SCALES + 4;

inline void readConvFields(FieldValues const& v, qmamba_conv_params& p)
{
    float* scales[kNB_CONV_SCALES] = {&p.x_scale, &p.wx_scale, &p.bx_scale, &p.B_scale, &p.wB_scale, &p.bB_scale,
        &p.C_scale, &p.wC_scale, &p.bC_scale};
    for (size_t i = 0; i < kNB_CONV_SCALES; ++i)
    {
        *scales[i] = static_cast<float>(v[i]);
    }
    p.ngroups = static_cast<int32_t>(v[kNB_CONV_SCALES]);
    p.nheads = static_cast<int32_t>(v[kNB_CONV_SCALES + 1]);
    p.headdim = static_cast<int32_t>(v[kNB_CONV_SCALES + 2]);
    p.d_state = static_cast<int32_t>(v[kNB_CONV_SCALES + 3]);
}

inline FieldValues convFieldValues(qmamba_conv_params const& p)
{
    return {p.x_scale, p.wx_scale, p.bx_scale, p.B_scale, p.wB_scale, p.bB_scale, p.C_scale, p.wC_scale, p.bC_scale,
        static_cast<double>(p.ngroups), static_cast<double>(p.nheads), static_cast<double>(p.headdim),
        static_cast<double>(p.d_state)};
}

// A scale field must be finite and > 0.
inline void requireScaleField(char const* op, char const* name, float v)
{
    require(std::isfinite(v) && v > 0.0f, op,
        std::string("field ") + name + " must be finite and > 0, got " + std::to_string(v));
}

// QuantSSD's dt_scale and dt clamp (0 <= dt_min < dt_max), which QmambaDecodeMixer carries too.
inline void validateDtFields(char const* op, float dtScale, float dtMin, float dtMax)
{
    requireScaleField(op, "dt_scale", dtScale);
    require(dtMin >= 0.0f, op, "field dt_min must be >= 0, got " + std::to_string(dtMin));
    require(dtMax > dtMin, op,
        "field dt_max = " + std::to_string(dtMax) + " must be > dt_min = " + std::to_string(dtMin));
}

inline void validateConvScales(char const* op, FieldSpec const* fields, qmamba_conv_params const& p)
{
    FieldValues const v = convFieldValues(p);
    for (size_t i = 0; i < kNB_CONV_SCALES; ++i)
    {
        requireScaleField(op, fields[i].name, static_cast<float>(v[i]));
    }
}

// conv_dim = nheads * headdim + 2 * ngroups * d_state: the channels of xBC, the conv's weight, bias and state.
inline int64_t convDimOf(qmamba_conv_params const& p)
{
    return int64_t{p.nheads} * p.headdim + 2 * int64_t{p.ngroups} * p.d_state;
}

// The conv's outputs (QuantConv1dSiLU's, QmambaInProjConv's): x [b, s, d_ssm], B and C [b, s, g*n], conv_state_out
// [b, K-1, conv_dim], with b and s the first two dimensions of input `source` and K the second of input `weight`.
inline OutputRule convOutputRule(char const* op, qmamba_conv_params const& p, int32_t index, int32_t source,
    int32_t weight)
{
    int64_t const dSsm = int64_t{p.nheads} * p.headdim;
    int64_t const gn = int64_t{p.ngroups} * p.d_state;
    switch (index)
    {
    case 0: return {3, {inputDim(source, 0), inputDim(source, 1), constDim(dSsm)}};
    case 1:
    case 2: return {3, {inputDim(source, 0), inputDim(source, 1), constDim(gn)}};
    case 3: return {3, {inputDim(source, 0), inputDim(weight, 1, -1), constDim(dSsm + 2 * gn)}};
    default: throw PluginError(std::string(op) + ": no output " + std::to_string(index));
    }
}

// Checks the conv's weight [conv_dim, K] (K in 2..4) and bias [conv_dim]; returns K (-1: not known yet).
inline int64_t checkConvWeightAndBias(char const* op, Shape const& weight, Shape const& bias, int64_t convDim)
{
    checkShape(op, "weight", weight, {convDim, -1});
    int64_t const K = weight.d[1];
    require(K < 0 || (K >= 2 && K <= 4), op, "input weight: d_conv (its second dimension) must be 2..4, got "
        + std::to_string(K));
    checkShape(op, "bias", bias, {convDim});
    return K;
}

// The input count: kMIN_INPUTS, or kMAX_INPUTS with the optional state input `stateName`.
template <typename Core>
void checkInputCount(std::vector<Shape> const& in, char const* stateName)
{
    int32_t const n = static_cast<int32_t>(in.size());
    require(n >= Core::kMIN_INPUTS && n <= Core::kMAX_INPUTS, Core::kNAME,
        "takes " + std::to_string(Core::kMIN_INPUTS) + " or " + std::to_string(Core::kMAX_INPUTS) + " inputs ("
            + stateName + " is optional), got " + std::to_string(n));
}

// Head and dim group counts (nhg, ndg) of x's quantization, given by the shape of x_out_scales.
struct GroupCounts
{
    int64_t nhg;
    int64_t ndg;
};

// Checks the quantization-group inputs for `g` groups and returns their group counts.
template <typename Core>
GroupCounts checkGroupInputs(std::vector<Shape> const& in, int64_t g)
{
    char const* op = Core::kNAME;
    checkShape(op, "x_out_scales", in[Core::kIN_X_OUT_SCALES], {g, -1, -1});
    int64_t const nhg = in[Core::kIN_X_OUT_SCALES].d[1];
    int64_t const ndg = in[Core::kIN_X_OUT_SCALES].d[2];
    checkShape(op, "B_out_scales", in[Core::kIN_B_OUT_SCALES], {g});
    checkShape(op, "C_out_scales", in[Core::kIN_C_OUT_SCALES], {g});
    checkShape(op, "x_head_group_range", in[Core::kIN_X_HEAD_GROUP_RANGE], {g, nhg});
    checkShape(op, "x_dim_group_range", in[Core::kIN_X_DIM_GROUP_RANGE], {g, nhg, ndg});
    return {nhg, ndg};
}

// Fills the params' n_head_groups and n_dim_groups from the shapes of a call.
template <typename Core, typename Params>
void setGroupCounts(Params& p, std::vector<Shape> const& in)
{
    p.n_head_groups = static_cast<int32_t>(in[Core::kIN_X_OUT_SCALES].d[1]);
    p.n_dim_groups = static_cast<int32_t>(in[Core::kIN_X_OUT_SCALES].d[2]);
}

// Points the kernel's tensors at the quantization-group inputs.
template <typename Core, typename Tensors>
void setGroupTensors(Tensors& t, void const* const* inputs)
{
    t.x_out_scales = static_cast<float const*>(inputs[Core::kIN_X_OUT_SCALES]);
    t.B_out_scales = static_cast<float const*>(inputs[Core::kIN_B_OUT_SCALES]);
    t.C_out_scales = static_cast<float const*>(inputs[Core::kIN_C_OUT_SCALES]);
    t.x_head_group_range = static_cast<int32_t const*>(inputs[Core::kIN_X_HEAD_GROUP_RANGE]);
    t.x_dim_group_range = static_cast<int32_t const*>(inputs[Core::kIN_X_DIM_GROUP_RANGE]);
}

// Refuses an empty batch or sequence of the input `tensor` (the state output `stateOut` would be undefined).
inline void requireBatchAndSequence(char const* op, char const* tensor, Shape const& s, char const* stateOut)
{
    require(s.d[0] >= 1 && s.d[1] >= 1, op,
        std::string("input ") + tensor + " has an empty batch or sequence " + shapeString(s) + " (" + stateOut
            + " would be undefined)");
}

// A decode step (one token with the previous state) takes the decode kernel; anything else the prefill.
// Throws with the kernels' message when the launcher refuses or fails.
template <typename Decode, typename Prefill>
void launchKernel(char const* op, int64_t seqlen, bool hasState, Decode decode, Prefill prefill)
{
    int const status = (seqlen == 1 && hasState) ? decode() : prefill();
    require(status == QMAMBA_OK, op, std::string("kernel failed: ") + qmamba_last_error());
}

} // namespace qmamba

#endif // QMAMBA_OP_CORE_H
