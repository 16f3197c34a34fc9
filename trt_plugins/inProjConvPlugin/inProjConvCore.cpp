#include "inProjConvCore.h"

#include "qmambaOpCore.h"

#include <string>

namespace qmamba
{
namespace
{
constexpr char const* kOP = InProjConvCore::kNAME;
} // namespace

// The Parameters table of trt_plugins/inProjConvPlugin/README.md, in its order: QuantConv1dSiLU's attributes
// (docs/ops.md), then where xBC lies (tests/trt_plugins/test_plugin_fields.py compares it with
// runtime/in_proj_conv.py's FIELDS).
// clang-format off
FieldSpec const InProjConvCore::kFIELDS[kNB_FIELDS] = {
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
    {"xbc_offset", FieldKind::kInt, true, 0},
    {"col_scale", FieldKind::kInt, false, 0},
};
// clang-format on

InProjConvCore::InProjConvCore(FieldValues const& v)
{
    require(v.size() == kNB_FIELDS, kOP, "wrong number of field values");
    readConvFields(v, mSerial.params);
    mSerial.xbc_offset = static_cast<int32_t>(v[kNB_CONV_FIELDS]);
    mSerial.col_scale = static_cast<int32_t>(v[kNB_CONV_FIELDS + 1]);
    validate();
}

InProjConvCore::InProjConvCore(Serial const& s)
    : mSerial(s)
{
    validate();
}

FieldValues InProjConvCore::fieldValues() const
{
    FieldValues v = convFieldValues(mSerial.params);
    v.push_back(static_cast<double>(mSerial.xbc_offset));
    v.push_back(static_cast<double>(mSerial.col_scale));
    return v;
}

void InProjConvCore::validate() const
{
    validateConvScales(kOP, kFIELDS, mSerial.params);
    validateModelDims(kOP, mSerial.params);
    require(mSerial.xbc_offset >= 0, kOP,
        "field xbc_offset must be >= 0 (the column of xBC's first channel), got " + std::to_string(mSerial.xbc_offset));
    require(mSerial.col_scale == 0 || mSerial.col_scale == 1, kOP,
        "field col_scale must be 0 (xBC as it comes) or 1 (the input col_scale scales its columns), got "
            + std::to_string(mSerial.col_scale));
}

DType InProjConvCore::inputType(int32_t pos) const
{
    switch (pos)
    {
    case kIN_WEIGHT:
    case kIN_BIAS: return DType::kInt8;
    case kIN_X_HEAD_GROUP_RANGE:
    case kIN_X_DIM_GROUP_RANGE: return DType::kInt32;
    default: return DType::kFloat; // zxbcdt, the scales, col_scale
    }
}

OutputRule InProjConvCore::outputRule(int32_t index) const
{
    return convOutputRule(kOP, mSerial.params, index, kIN_ZXBCDT, kIN_WEIGHT);
}

void InProjConvCore::checkInputs(std::vector<Shape> const& in) const
{
    int32_t const n = static_cast<int32_t>(in.size());
    int32_t const want = kMIN_INPUTS + mSerial.col_scale;
    require(n == want, kOP,
        "takes " + std::to_string(want) + " inputs with col_scale = " + std::to_string(mSerial.col_scale)
            + ", got " + std::to_string(n));
    int64_t const convDim = convDimOf(mSerial.params);
    Shape const& z = in[kIN_ZXBCDT];
    checkShape(kOP, "zxbcdt", z, {-1, -1, -1});
    int64_t const width = z.d[2];
    require(width < 0 || width >= mSerial.xbc_offset + convDim, kOP,
        "input zxbcdt: its last dimension " + std::to_string(width) + " must hold xbc_offset + conv_dim = "
            + std::to_string(mSerial.xbc_offset) + " + " + std::to_string(convDim) + " columns");
    checkConvWeightAndBias(kOP, in[kIN_WEIGHT], in[kIN_BIAS], convDim);
    checkGroupInputs<InProjConvCore>(in, mSerial.params.ngroups);
    if (mSerial.col_scale)
    {
        checkShape(kOP, "col_scale", in[kIN_COL_SCALE], {convDim});
    }
}

void InProjConvCore::enqueue(std::vector<Shape> const& in, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, size_t /*workspaceBytes*/, qmamba_stream_t stream) const
{
    checkInputs(in);
    requireBatchAndSequence(kOP, "zxbcdt", in[kIN_ZXBCDT], "conv_state_out");
    qmamba_conv_params p = mSerial.params;
    p.d_conv = static_cast<int32_t>(in[kIN_WEIGHT].d[1]);
    setGroupCounts<InProjConvCore>(p, in);
    qmamba_conv_float_input source{};
    source.zxbcdt = static_cast<float const*>(inputs[kIN_ZXBCDT]);
    source.col_scale = mSerial.col_scale ? static_cast<float const*>(inputs[kIN_COL_SCALE]) : nullptr;
    source.row_width = in[kIN_ZXBCDT].d[2];
    source.xbc_offset = mSerial.xbc_offset;
    qmamba_conv_tensors t{};
    t.xBC = nullptr; // read from `source`
    t.weight = static_cast<int8_t const*>(inputs[kIN_WEIGHT]);
    t.bias = static_cast<int8_t const*>(inputs[kIN_BIAS]);
    setGroupTensors<InProjConvCore>(t, inputs);
    t.conv_state = nullptr; // a prefill from the zero state
    t.x = static_cast<int8_t*>(outputs[kOUT_X]);
    t.B = static_cast<int8_t*>(outputs[kOUT_B]);
    t.C = static_cast<int8_t*>(outputs[kOUT_C]);
    t.conv_state_out = static_cast<int8_t*>(outputs[kOUT_CONV_STATE_OUT]);
    int64_t const batch = in[kIN_ZXBCDT].d[0];
    int64_t const seqlen = in[kIN_ZXBCDT].d[1];
    require(qmamba_quant_conv1d_silu_prefill_from_float(&p, &source, &t, batch, seqlen, stream) == QMAMBA_OK, kOP,
        std::string("kernel failed: ") + qmamba_last_error());
}

} // namespace qmamba
