#include "quantConv1dSiLUCore.h"

#include <cmath>
#include <string>

namespace qmamba
{
namespace
{
constexpr char const* kOP = QuantConv1dSiLUCore::kNAME;
} // namespace

// The attribute table of docs/ops.md, in its order (tests/trt_plugins/test_plugin_fields.py parses it).
// clang-format off
FieldSpec const QuantConv1dSiLUCore::kFIELDS[kNB_FIELDS] = {
    {"x_scale", FieldKind::kFloat, true, 0.0},
    {"wx_scale", FieldKind::kFloat, true, 0.0},
    {"bx_scale", FieldKind::kFloat, true, 0.0},
    {"B_scale", FieldKind::kFloat, true, 0.0},
    {"wB_scale", FieldKind::kFloat, true, 0.0},
    {"bB_scale", FieldKind::kFloat, true, 0.0},
    {"C_scale", FieldKind::kFloat, true, 0.0},
    {"wC_scale", FieldKind::kFloat, true, 0.0},
    {"bC_scale", FieldKind::kFloat, true, 0.0},
    {"ngroups", FieldKind::kInt, true, 0},
    {"nheads", FieldKind::kInt, true, 0},
    {"headdim", FieldKind::kInt, true, 0},
    {"d_state", FieldKind::kInt, true, 0},
};
// clang-format on

QuantConv1dSiLUCore::QuantConv1dSiLUCore(FieldValues const& v)
{
    require(v.size() == kNB_FIELDS, kOP, "wrong number of field values");
    qmamba_conv_params& p = mSerial.params;
    float* scales[] = {&p.x_scale, &p.wx_scale, &p.bx_scale, &p.B_scale, &p.wB_scale, &p.bB_scale, &p.C_scale,
        &p.wC_scale, &p.bC_scale};
    for (size_t i = 0; i < 9; ++i)
    {
        *scales[i] = static_cast<float>(v[i]);
    }
    p.ngroups = static_cast<int32_t>(v[9]);
    p.nheads = static_cast<int32_t>(v[10]);
    p.headdim = static_cast<int32_t>(v[11]);
    p.d_state = static_cast<int32_t>(v[12]);
    validate();
}

QuantConv1dSiLUCore::QuantConv1dSiLUCore(Serial const& s)
    : mSerial(s)
{
    validate();
}

FieldValues QuantConv1dSiLUCore::fieldValues() const
{
    qmamba_conv_params const& p = mSerial.params;
    return {p.x_scale, p.wx_scale, p.bx_scale, p.B_scale, p.wB_scale, p.bB_scale, p.C_scale, p.wC_scale, p.bC_scale,
        static_cast<double>(p.ngroups), static_cast<double>(p.nheads), static_cast<double>(p.headdim),
        static_cast<double>(p.d_state)};
}

void QuantConv1dSiLUCore::validate() const
{
    qmamba_conv_params const& p = mSerial.params;
    float const scales[] = {p.x_scale, p.wx_scale, p.bx_scale, p.B_scale, p.wB_scale, p.bB_scale, p.C_scale,
        p.wC_scale, p.bC_scale};
    for (size_t i = 0; i < 9; ++i)
    {
        require(std::isfinite(scales[i]) && scales[i] > 0.0f, kOP,
            std::string("field ") + kFIELDS[i].name + " must be finite and > 0, got " + std::to_string(scales[i]));
    }
    require(p.ngroups >= 1, kOP, "field ngroups must be >= 1, got " + std::to_string(p.ngroups));
    require(p.nheads >= 1 && p.nheads % p.ngroups == 0, kOP,
        "field nheads = " + std::to_string(p.nheads) + " must be divisible by ngroups = " + std::to_string(p.ngroups));
    require(p.headdim >= 1, kOP, "field headdim must be >= 1, got " + std::to_string(p.headdim));
    require(p.d_state >= 1, kOP, "field d_state must be >= 1, got " + std::to_string(p.d_state));
}

DType QuantConv1dSiLUCore::inputType(int32_t pos) const
{
    switch (pos)
    {
    case kIN_X_OUT_SCALES:
    case kIN_B_OUT_SCALES:
    case kIN_C_OUT_SCALES: return DType::kFloat;
    case kIN_X_HEAD_GROUP_RANGE:
    case kIN_X_DIM_GROUP_RANGE: return DType::kInt32;
    default: return DType::kInt8;
    }
}

DType QuantConv1dSiLUCore::outputType(int32_t /*index*/) const
{
    return DType::kInt8;
}

OutputRule QuantConv1dSiLUCore::outputRule(int32_t index) const
{
    qmamba_conv_params const& p = mSerial.params;
    int64_t const dSsm = int64_t{p.nheads} * p.headdim;
    int64_t const gn = int64_t{p.ngroups} * p.d_state;
    switch (index)
    {
    case kOUT_X: return {3, {inputDim(kIN_XBC, 0), inputDim(kIN_XBC, 1), constDim(dSsm)}};
    case kOUT_B:
    case kOUT_C: return {3, {inputDim(kIN_XBC, 0), inputDim(kIN_XBC, 1), constDim(gn)}};
    case kOUT_CONV_STATE_OUT: return {3, {inputDim(kIN_XBC, 0), inputDim(kIN_WEIGHT, 1, -1), constDim(dSsm + 2 * gn)}};
    default: throw PluginError(std::string(kOP) + ": no output " + std::to_string(index));
    }
}

void QuantConv1dSiLUCore::checkInputs(std::vector<Shape> const& in) const
{
    int32_t const n = static_cast<int32_t>(in.size());
    require(n >= kMIN_INPUTS && n <= kMAX_INPUTS, kOP,
        "takes 8 or 9 inputs (conv_state is optional), got " + std::to_string(n));
    qmamba_conv_params const& p = mSerial.params;
    int64_t const g = p.ngroups;
    int64_t const convDim = int64_t{p.nheads} * p.headdim + 2 * g * p.d_state;
    Shape const& xBC = in[kIN_XBC];
    checkShape(kOP, "xBC", xBC, {-1, -1, convDim});
    checkShape(kOP, "weight", in[kIN_WEIGHT], {convDim, -1});
    int64_t const K = in[kIN_WEIGHT].d[1];
    require(K < 0 || (K >= 2 && K <= 4), kOP, "input weight: d_conv (its second dimension) must be 2..4, got "
        + std::to_string(K));
    checkShape(kOP, "bias", in[kIN_BIAS], {convDim});
    checkShape(kOP, "x_out_scales", in[kIN_X_OUT_SCALES], {g, -1, -1});
    int64_t const nhg = in[kIN_X_OUT_SCALES].d[1];
    int64_t const ndg = in[kIN_X_OUT_SCALES].d[2];
    checkShape(kOP, "B_out_scales", in[kIN_B_OUT_SCALES], {g});
    checkShape(kOP, "C_out_scales", in[kIN_C_OUT_SCALES], {g});
    checkShape(kOP, "x_head_group_range", in[kIN_X_HEAD_GROUP_RANGE], {g, nhg});
    checkShape(kOP, "x_dim_group_range", in[kIN_X_DIM_GROUP_RANGE], {g, nhg, ndg});
    if (n > kIN_CONV_STATE)
    {
        checkShape(kOP, "conv_state", in[kIN_CONV_STATE], {xBC.d[0], K < 0 ? -1 : K - 1, convDim});
    }
}

void QuantConv1dSiLUCore::enqueue(std::vector<Shape> const& in, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, size_t /*workspaceBytes*/, qmamba_stream_t stream) const
{
    checkInputs(in);
    qmamba_conv_params p = mSerial.params;
    p.d_conv = static_cast<int32_t>(in[kIN_WEIGHT].d[1]);
    p.n_head_groups = static_cast<int32_t>(in[kIN_X_OUT_SCALES].d[1]);
    p.n_dim_groups = static_cast<int32_t>(in[kIN_X_OUT_SCALES].d[2]);
    bool const hasState = static_cast<int32_t>(in.size()) > kIN_CONV_STATE;
    qmamba_conv_tensors t{};
    t.xBC = static_cast<int8_t const*>(inputs[kIN_XBC]);
    t.weight = static_cast<int8_t const*>(inputs[kIN_WEIGHT]);
    t.bias = static_cast<int8_t const*>(inputs[kIN_BIAS]);
    t.x_out_scales = static_cast<float const*>(inputs[kIN_X_OUT_SCALES]);
    t.B_out_scales = static_cast<float const*>(inputs[kIN_B_OUT_SCALES]);
    t.C_out_scales = static_cast<float const*>(inputs[kIN_C_OUT_SCALES]);
    t.x_head_group_range = static_cast<int32_t const*>(inputs[kIN_X_HEAD_GROUP_RANGE]);
    t.x_dim_group_range = static_cast<int32_t const*>(inputs[kIN_X_DIM_GROUP_RANGE]);
    t.conv_state = hasState ? static_cast<int8_t const*>(inputs[kIN_CONV_STATE]) : nullptr;
    t.x = static_cast<int8_t*>(outputs[kOUT_X]);
    t.B = static_cast<int8_t*>(outputs[kOUT_B]);
    t.C = static_cast<int8_t*>(outputs[kOUT_C]);
    t.conv_state_out = static_cast<int8_t*>(outputs[kOUT_CONV_STATE_OUT]);
    int64_t const batch = in[kIN_XBC].d[0];
    int64_t const seqlen = in[kIN_XBC].d[1];
    require(batch >= 1 && seqlen >= 1, kOP,
        "input xBC has an empty batch or sequence " + shapeString(in[kIN_XBC]) + " (conv_state_out would be undefined)");
    // A decode step (one token with the previous state) takes the decode kernel; anything else the prefill.
    int const status = (seqlen == 1 && hasState) ? qmamba_quant_conv1d_silu_decode(&p, &t, batch, stream)
                                                 : qmamba_quant_conv1d_silu_prefill(&p, &t, batch, seqlen, stream);
    require(status == QMAMBA_OK, kOP, std::string("kernel failed: ") + qmamba_last_error());
}

} // namespace qmamba
