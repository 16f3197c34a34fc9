#include "decodeMixerCore.h"

#include "qmambaOpCore.h"

#include <climits>
#include <string>

namespace qmamba
{
namespace
{
constexpr char const* kOP = DecodeMixerCore::kNAME;

// Positions in the field table: QuantConv1dSiLU's 13 fields (qmambaOpCore.h), d_conv, then z_scale,
// dt_scale, dt_min, dt_max.
constexpr size_t kFIELD_D_CONV = kNB_CONV_FIELDS;
constexpr size_t kFIELD_Z_SCALE = kFIELD_D_CONV + 1;

// int32 words holding `bytes` int8 values, 4 per word, zero-padded.
int64_t words(int64_t bytes)
{
    return (bytes + DecodeMixerCore::kWORD - 1) / DecodeMixerCore::kWORD;
}
} // namespace

// The Parameters table of trt_plugins/decodeMixerPlugin/README.md, in its order
// (tests/trt_plugins/test_plugin_fields.py compares both with runtime/decode_mixer.py's FIELDS).
// clang-format off
FieldSpec const DecodeMixerCore::kFIELDS[kNB_FIELDS] = {
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
    {"d_conv", FieldKind::kInt, true, 0},
    {"z_scale", FieldKind::kFloat, true, 0.0},
    {"dt_scale", FieldKind::kFloat, true, 0.0},
    {"dt_min", FieldKind::kFloat, false, 0.0},
    {"dt_max", FieldKind::kFloat, false, kInf},
};
// clang-format on

DecodeMixerCore::DecodeMixerCore(FieldValues const& v)
{
    require(v.size() == kNB_FIELDS, kOP, "wrong number of field values");
    qmamba_mixer_params& p = mSerial.params;
    readConvFields(v, p.conv);
    p.conv.d_conv = static_cast<int32_t>(v[kFIELD_D_CONV]);
    p.z_scale = static_cast<float>(v[kFIELD_Z_SCALE]);
    p.dt_scale = static_cast<float>(v[kFIELD_Z_SCALE + 1]);
    p.dt_min = static_cast<float>(v[kFIELD_Z_SCALE + 2]);
    p.dt_max = static_cast<float>(v[kFIELD_Z_SCALE + 3]);
    validate();
}

DecodeMixerCore::DecodeMixerCore(Serial const& s)
    : mSerial(s)
{
    validate();
}

FieldValues DecodeMixerCore::fieldValues() const
{
    qmamba_mixer_params const& p = mSerial.params;
    FieldValues v = convFieldValues(p.conv);
    v.insert(v.end(), {static_cast<double>(p.conv.d_conv), p.z_scale, p.dt_scale, p.dt_min, p.dt_max});
    return v;
}

DecodeMixerCore::Sizes DecodeMixerCore::sizes() const
{
    qmamba_conv_params const& c = mSerial.params.conv;
    int64_t const dSsm = int64_t{c.nheads} * c.headdim;
    int64_t const gn = int64_t{c.ngroups} * c.d_state;
    return {dSsm, gn, dSsm + 2 * gn, 2 * dSsm + 2 * gn + c.nheads};
}

void DecodeMixerCore::validate() const
{
    qmamba_mixer_params const& p = mSerial.params;
    qmamba_conv_params const& c = p.conv;
    validateConvScales(kOP, kFIELDS, c);
    requireScaleField(kOP, "z_scale", p.z_scale);
    validateDtFields(kOP, p.dt_scale, p.dt_min, p.dt_max);
    validateModelDims(kOP, c);
    require(c.d_state >= kMIN_D_STATE && c.d_state <= kMAX_D_STATE && c.d_state % kWORD == 0, kOP,
        "field d_state must be a multiple of 4 in " + std::to_string(kMIN_D_STATE) + ".." + std::to_string(kMAX_D_STATE)
            + " (ssm_state travels as int32 words), got " + std::to_string(c.d_state));
    require(c.d_conv >= 2 && c.d_conv <= 4, kOP, "field d_conv must be 2..4, got " + std::to_string(c.d_conv));
    require(int64_t{c.nheads} * c.headdim <= INT32_MAX, kOP, "fields nheads * headdim do not fit int32");
    Sizes const s = sizes();
    require(s.convDim % kWORD == 0, kOP,
        "conv_dim = nheads * headdim + 2 * ngroups * d_state = " + std::to_string(s.convDim)
            + " must be a multiple of 4 (conv_state travels as int32 words)");
}

DType DecodeMixerCore::inputType(int32_t pos) const
{
    switch (pos)
    {
    case kIN_CONV_WEIGHT:
    case kIN_CONV_BIAS:
    case kIN_X_HEAD_GROUP_RANGE:
    case kIN_X_DIM_GROUP_RANGE:
    case kIN_CONV_STATE:
    case kIN_SSM_STATE: return DType::kInt32;
    default: return DType::kFloat;
    }
}

DType DecodeMixerCore::outputType(int32_t index) const
{
    return index == kOUT_GATED ? DType::kFloat : DType::kInt32;
}

OutputRule DecodeMixerCore::outputRule(int32_t index) const
{
    qmamba_conv_params const& c = mSerial.params.conv;
    Sizes const s = sizes();
    DimRule const batch = inputDim(kIN_ZXBCDT, 0);
    switch (index)
    {
    case kOUT_GATED: return {3, {batch, constDim(1), constDim(s.dSsm)}};
    case kOUT_CONV_STATE_OUT: return {3, {batch, constDim(c.d_conv - 1), constDim(s.convDim / kWORD)}};
    case kOUT_SSM_STATE_OUT:
        return {4, {batch, constDim(c.nheads), constDim(c.headdim), constDim(c.d_state / kWORD)}};
    default: throw PluginError(std::string(kOP) + ": no output " + std::to_string(index));
    }
}

void DecodeMixerCore::checkInputs(std::vector<Shape> const& in) const
{
    int32_t const n = static_cast<int32_t>(in.size());
    require(n == kMIN_INPUTS, kOP,
        "takes " + std::to_string(kMIN_INPUTS) + " inputs (zxbcdt, conv_weight, conv_bias, x_out_scales, B_out_scales, "
            "C_out_scales, x_head_group_range, x_dim_group_range, A_log, D, dt_bias, ssm_state_scale, conv_state, "
            "ssm_state), got " + std::to_string(n));
    qmamba_conv_params const& c = mSerial.params.conv;
    Sizes const s = sizes();
    int64_t const h = c.nheads, g = c.ngroups;
    Shape const& zxbcdt = in[kIN_ZXBCDT];
    checkShape(kOP, "zxbcdt", zxbcdt, {-1, 1, s.width});
    int64_t const batch = zxbcdt.d[0];
    checkShape(kOP, "conv_weight", in[kIN_CONV_WEIGHT], {words(s.convDim * c.d_conv)});
    checkShape(kOP, "conv_bias", in[kIN_CONV_BIAS], {words(s.convDim)});
    GroupCounts const groups = checkGroupInputs<DecodeMixerCore>(in, g);
    checkShape(kOP, "A_log", in[kIN_A_LOG], {h});
    checkShape(kOP, "D", in[kIN_D], {h});
    checkShape(kOP, "dt_bias", in[kIN_DT_BIAS], {h});
    checkShape(kOP, "ssm_state_scale", in[kIN_SSM_STATE_SCALE], {g, groups.nhg, groups.ndg, c.d_state});
    checkShape(kOP, "conv_state", in[kIN_CONV_STATE], {batch, c.d_conv - 1, s.convDim / kWORD});
    checkShape(kOP, "ssm_state", in[kIN_SSM_STATE], {batch, h, c.headdim, c.d_state / kWORD});
}

void DecodeMixerCore::enqueue(std::vector<Shape> const& in, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, size_t /*workspaceBytes*/, qmamba_stream_t stream) const
{
    checkInputs(in);
    qmamba_mixer_params p = mSerial.params;
    setGroupCounts<DecodeMixerCore>(p.conv, in);
    qmamba_mixer_tensors t{};
    t.zxbcdt = static_cast<float const*>(inputs[kIN_ZXBCDT]);
    // The int32 words are the int8 tensors' bytes: the kernel reads them as int8.
    t.conv_weight = static_cast<int8_t const*>(inputs[kIN_CONV_WEIGHT]);
    t.conv_bias = static_cast<int8_t const*>(inputs[kIN_CONV_BIAS]);
    setGroupTensors<DecodeMixerCore>(t, inputs);
    t.A_log = static_cast<float const*>(inputs[kIN_A_LOG]);
    t.D = static_cast<float const*>(inputs[kIN_D]);
    t.dt_bias = static_cast<float const*>(inputs[kIN_DT_BIAS]);
    t.ssm_state_scale = static_cast<float const*>(inputs[kIN_SSM_STATE_SCALE]);
    t.conv_state = static_cast<int8_t const*>(inputs[kIN_CONV_STATE]);
    t.ssm_state = static_cast<int8_t const*>(inputs[kIN_SSM_STATE]);
    t.gated = static_cast<float*>(outputs[kOUT_GATED]);
    t.conv_state_out = static_cast<int8_t*>(outputs[kOUT_CONV_STATE_OUT]);
    t.ssm_state_out = static_cast<int8_t*>(outputs[kOUT_SSM_STATE_OUT]);
    int64_t const batch = in[kIN_ZXBCDT].d[0];
    require(qmamba_decode_mixer(&p, &t, batch, stream) == QMAMBA_OK, kOP,
        std::string("kernel failed: ") + qmamba_last_error());
}

} // namespace qmamba
