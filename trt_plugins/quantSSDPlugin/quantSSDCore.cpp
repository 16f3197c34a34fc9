#include "quantSSDCore.h"

#include "qmambaOpCore.h"

#include <string>

namespace qmamba
{
namespace
{
constexpr char const* kOP = QuantSSDCore::kNAME;
} // namespace

// The attribute table of docs/ops.md, in its order (tests/trt_plugins/test_plugin_fields.py parses it).
// clang-format off
FieldSpec const QuantSSDCore::kFIELDS[kNB_FIELDS] = {
    {"dt_scale", FieldKind::kFloat, true, 0.0},
    {"dt_min", FieldKind::kFloat, false, 0.0},
    {"dt_max", FieldKind::kFloat, false, kInf},
    {"ngroups", FieldKind::kInt, true, 0},
    {"nheads", FieldKind::kInt, true, 0},
    {"headdim", FieldKind::kInt, true, 0},
    {"d_state", FieldKind::kInt, true, 0},
    {"out_dtype", FieldKind::kInt, false, 1},
    {"chunk_size", FieldKind::kInt, false, 128},
};
// clang-format on

QuantSSDCore::QuantSSDCore(FieldValues const& v)
{
    require(v.size() == kNB_FIELDS, kOP, "wrong number of field values");
    qmamba_ssd_params& p = mSerial.params;
    p.dt_scale = static_cast<float>(v[0]);
    p.dt_min = static_cast<float>(v[1]);
    p.dt_max = static_cast<float>(v[2]);
    p.ngroups = static_cast<int32_t>(v[3]);
    p.nheads = static_cast<int32_t>(v[4]);
    p.headdim = static_cast<int32_t>(v[5]);
    p.d_state = static_cast<int32_t>(v[6]);
    int32_t const outDtype = static_cast<int32_t>(v[7]);
    require(outDtype == kONNX_FLOAT || outDtype == kONNX_FLOAT16, kOP,
        "field out_dtype must be 1 (float32) or 10 (float16), got " + std::to_string(outDtype));
    p.out_fp16 = outDtype == kONNX_FLOAT16 ? 1 : 0;
    p.chunk_size = static_cast<int32_t>(v[8]);
    validate();
}

QuantSSDCore::QuantSSDCore(Serial const& s)
    : mSerial(s)
{
    validate();
}

FieldValues QuantSSDCore::fieldValues() const
{
    qmamba_ssd_params const& p = mSerial.params;
    return {p.dt_scale, p.dt_min, p.dt_max, static_cast<double>(p.ngroups), static_cast<double>(p.nheads),
        static_cast<double>(p.headdim), static_cast<double>(p.d_state),
        static_cast<double>(p.out_fp16 ? kONNX_FLOAT16 : kONNX_FLOAT), static_cast<double>(p.chunk_size)};
}

void QuantSSDCore::validate() const
{
    qmamba_ssd_params const& p = mSerial.params;
    validateDtFields(kOP, p.dt_scale, p.dt_min, p.dt_max);
    validateModelDims(kOP, p);
    require(p.out_fp16 == 0 || p.out_fp16 == 1, kOP, "serialized out_dtype is corrupt");
    require(p.chunk_size >= 1, kOP, "field chunk_size must be >= 1, got " + std::to_string(p.chunk_size));
}

DType QuantSSDCore::inputType(int32_t pos) const
{
    switch (pos)
    {
    case kIN_X:
    case kIN_DT:
    case kIN_B:
    case kIN_C:
    case kIN_SSM_STATE: return DType::kInt8;
    case kIN_X_HEAD_GROUP_RANGE:
    case kIN_X_DIM_GROUP_RANGE: return DType::kInt32;
    default: return DType::kFloat;
    }
}

DType QuantSSDCore::outputType(int32_t index) const
{
    if (index == kOUT_Y)
    {
        return mSerial.params.out_fp16 ? DType::kHalf : DType::kFloat;
    }
    return DType::kInt8;
}

OutputRule QuantSSDCore::outputRule(int32_t index) const
{
    qmamba_ssd_params const& p = mSerial.params;
    switch (index)
    {
    case kOUT_Y: return {3, {inputDim(kIN_X, 0), inputDim(kIN_X, 1), constDim(int64_t{p.nheads} * p.headdim)}};
    case kOUT_SSM_STATE_OUT:
        return {4, {inputDim(kIN_X, 0), constDim(p.nheads), constDim(p.headdim), constDim(p.d_state)}};
    default: throw PluginError(std::string(kOP) + ": no output " + std::to_string(index));
    }
}

void QuantSSDCore::checkInputs(std::vector<Shape> const& in) const
{
    checkInputCount<QuantSSDCore>(in, "ssm_state");
    qmamba_ssd_params const& p = mSerial.params;
    int64_t const h = p.nheads, hp = int64_t{p.nheads} * p.headdim, g = p.ngroups, gn = g * p.d_state;
    Shape const& x = in[kIN_X];
    checkShape(kOP, "x", x, {-1, -1, hp});
    int64_t const bt = x.d[0], L = x.d[1];
    checkShape(kOP, "dt", in[kIN_DT], {bt, L, h});
    checkShape(kOP, "B", in[kIN_B], {bt, L, gn});
    checkShape(kOP, "C", in[kIN_C], {bt, L, gn});
    checkShape(kOP, "A_log", in[kIN_A_LOG], {h});
    checkShape(kOP, "D", in[kIN_D], {h});
    checkShape(kOP, "dt_bias", in[kIN_DT_BIAS], {h});
    GroupCounts const groups = checkGroupInputs<QuantSSDCore>(in, g);
    checkShape(kOP, "ssm_state_scale", in[kIN_SSM_STATE_SCALE], {g, groups.nhg, groups.ndg, p.d_state});
    if (static_cast<int32_t>(in.size()) > kIN_SSM_STATE)
    {
        checkShape(kOP, "ssm_state", in[kIN_SSM_STATE], {bt, h, p.headdim, p.d_state});
    }
}

qmamba_ssd_params QuantSSDCore::paramsFor(std::vector<Shape> const& in) const
{
    qmamba_ssd_params p = mSerial.params;
    setGroupCounts<QuantSSDCore>(p, in);
    return p;
}

size_t QuantSSDCore::workspaceSize(std::vector<Shape> const& maxIn) const
{
    checkInputs(maxIn);
    qmamba_ssd_params const p = paramsFor(maxIn);
    int64_t const batch = maxIn[kIN_X].d[0], seqlen = maxIn[kIN_X].d[1];
    require(batch >= 0 && seqlen >= 0, kOP, "workspace asked for unknown sizes " + shapeString(maxIn[kIN_X]));
    return qmamba_quant_ssd_prefill_workspace(&p, batch, seqlen);
}

void QuantSSDCore::enqueue(std::vector<Shape> const& in, void const* const* inputs, void* const* outputs,
    void* workspace, size_t workspaceBytes, qmamba_stream_t stream) const
{
    checkInputs(in);
    qmamba_ssd_params const p = paramsFor(in);
    bool const hasState = static_cast<int32_t>(in.size()) > kIN_SSM_STATE;
    qmamba_ssd_tensors t{};
    t.x = static_cast<int8_t const*>(inputs[kIN_X]);
    t.dt = static_cast<int8_t const*>(inputs[kIN_DT]);
    t.B = static_cast<int8_t const*>(inputs[kIN_B]);
    t.C = static_cast<int8_t const*>(inputs[kIN_C]);
    t.A_log = static_cast<float const*>(inputs[kIN_A_LOG]);
    t.D = static_cast<float const*>(inputs[kIN_D]);
    t.dt_bias = static_cast<float const*>(inputs[kIN_DT_BIAS]);
    setGroupTensors<QuantSSDCore>(t, inputs);
    t.ssm_state_scale = static_cast<float const*>(inputs[kIN_SSM_STATE_SCALE]);
    t.ssm_state = hasState ? static_cast<int8_t const*>(inputs[kIN_SSM_STATE]) : nullptr;
    t.y = outputs[kOUT_Y];
    t.ssm_state_out = static_cast<int8_t*>(outputs[kOUT_SSM_STATE_OUT]);
    int64_t const batch = in[kIN_X].d[0], seqlen = in[kIN_X].d[1];
    requireBatchAndSequence(kOP, "x", in[kIN_X], "ssm_state_out");
    launchKernel(
        kOP, seqlen, hasState, [&] { return qmamba_quant_ssd_decode(&p, &t, batch, stream); },
        [&] { return qmamba_quant_ssd_prefill(&p, &t, batch, seqlen, workspace, workspaceBytes, stream); });
}

} // namespace qmamba
