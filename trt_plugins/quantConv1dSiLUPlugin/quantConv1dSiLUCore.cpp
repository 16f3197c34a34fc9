#include "quantConv1dSiLUCore.h"

#include "qmambaOpCore.h"

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
    readConvFields(v, mSerial.params);
    validate();
}

QuantConv1dSiLUCore::QuantConv1dSiLUCore(Serial const& s)
    : mSerial(s)
{
    validate();
}

FieldValues QuantConv1dSiLUCore::fieldValues() const
{
    return convFieldValues(mSerial.params);
}

void QuantConv1dSiLUCore::validate() const
{
    validateConvScales(kOP, kFIELDS, mSerial.params);
    validateModelDims(kOP, mSerial.params);
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
    return convOutputRule(kOP, mSerial.params, index, kIN_XBC, kIN_WEIGHT);
}

void QuantConv1dSiLUCore::checkInputs(std::vector<Shape> const& in) const
{
    checkInputCount<QuantConv1dSiLUCore>(in, "conv_state");
    int64_t const convDim = convDimOf(mSerial.params);
    Shape const& xBC = in[kIN_XBC];
    checkShape(kOP, "xBC", xBC, {-1, -1, convDim});
    int64_t const K = checkConvWeightAndBias(kOP, in[kIN_WEIGHT], in[kIN_BIAS], convDim);
    checkGroupInputs<QuantConv1dSiLUCore>(in, mSerial.params.ngroups);
    if (static_cast<int32_t>(in.size()) > kIN_CONV_STATE)
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
    setGroupCounts<QuantConv1dSiLUCore>(p, in);
    bool const hasState = static_cast<int32_t>(in.size()) > kIN_CONV_STATE;
    qmamba_conv_tensors t{};
    t.xBC = static_cast<int8_t const*>(inputs[kIN_XBC]);
    t.weight = static_cast<int8_t const*>(inputs[kIN_WEIGHT]);
    t.bias = static_cast<int8_t const*>(inputs[kIN_BIAS]);
    setGroupTensors<QuantConv1dSiLUCore>(t, inputs);
    t.conv_state = hasState ? static_cast<int8_t const*>(inputs[kIN_CONV_STATE]) : nullptr;
    t.x = static_cast<int8_t*>(outputs[kOUT_X]);
    t.B = static_cast<int8_t*>(outputs[kOUT_B]);
    t.C = static_cast<int8_t*>(outputs[kOUT_C]);
    t.conv_state_out = static_cast<int8_t*>(outputs[kOUT_CONV_STATE_OUT]);
    int64_t const batch = in[kIN_XBC].d[0];
    int64_t const seqlen = in[kIN_XBC].d[1];
    requireBatchAndSequence(kOP, "xBC", in[kIN_XBC], "conv_state_out");
    launchKernel(
        kOP, seqlen, hasState, [&] { return qmamba_quant_conv1d_silu_decode(&p, &t, batch, stream); },
        [&] { return qmamba_quant_conv1d_silu_prefill(&p, &t, batch, seqlen, stream); });
}

} // namespace qmamba
