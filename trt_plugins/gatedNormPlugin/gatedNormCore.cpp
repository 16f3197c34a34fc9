#include "gatedNormCore.h"

#include "qmambaErrors.h"

#include <cmath>
#include <string>

namespace qmamba
{
namespace
{
constexpr char const* kOP = GatedNormCore::kNAME;

bool powerOfTwo(int32_t v)
{
    return v >= 1 && (v & (v - 1)) == 0;
}
} // namespace

// The Parameters table of trt_plugins/gatedNormPlugin/README.md, in its order
// (tests/trt_plugins/test_plugin_fields.py compares both with runtime/prefill_fusion.py's FIELDS).
// clang-format off
FieldSpec const GatedNormCore::kFIELDS[kNB_FIELDS] = {
    {"channels", FieldKind::kInt, true, 0},
    {"group_size", FieldKind::kInt, true, 0},
    {"eps", FieldKind::kFloat, false, 1e-5},
    {"z_scale", FieldKind::kFloat, false, 0.0},
    {"rotation_first", FieldKind::kInt, false, 1},
    {"rotation_last", FieldKind::kInt, false, 1},
    {"gate", FieldKind::kInt, false, 1},
    {"z_col_scale", FieldKind::kInt, false, 0},
    {"y_bits", FieldKind::kInt, false, 0},
    {"z_row_width", FieldKind::kInt, false, 0},
};
// clang-format on

GatedNormCore::GatedNormCore(FieldValues const& v)
{
    require(v.size() == kNB_FIELDS, kOP, "wrong number of field values");
    qmamba_gated_norm_params& p = mSerial.params;
    p.channels = static_cast<int32_t>(v[0]);
    p.group_size = static_cast<int32_t>(v[1]);
    p.eps = static_cast<float>(v[2]);
    p.z_scale = static_cast<float>(v[3]);
    p.rotation_first = static_cast<int32_t>(v[4]);
    p.rotation_last = static_cast<int32_t>(v[5]);
    mSerial.gate = static_cast<int32_t>(v[6]);
    mSerial.z_col_scale = static_cast<int32_t>(v[7]);
    mSerial.y_bits = static_cast<int32_t>(v[8]);
    p.z_row_width = static_cast<int32_t>(v[9]);
    validate();
}

GatedNormCore::GatedNormCore(Serial const& s)
    : mSerial(s)
{
    validate();
}

FieldValues GatedNormCore::fieldValues() const
{
    qmamba_gated_norm_params const& p = mSerial.params;
    return {static_cast<double>(p.channels), static_cast<double>(p.group_size), static_cast<double>(p.eps),
        static_cast<double>(p.z_scale), static_cast<double>(p.rotation_first), static_cast<double>(p.rotation_last),
        static_cast<double>(mSerial.gate), static_cast<double>(mSerial.z_col_scale), static_cast<double>(mSerial.y_bits),
        static_cast<double>(p.z_row_width)};
}

void GatedNormCore::validate() const
{
    qmamba_gated_norm_params const& p = mSerial.params;
    require(p.channels >= 1 && p.channels <= kMAX_CHANNELS, kOP,
        "field channels must be 1.." + std::to_string(kMAX_CHANNELS) + ", got " + std::to_string(p.channels));
    require(p.group_size >= 1 && p.channels % p.group_size == 0, kOP,
        "field group_size = " + std::to_string(p.group_size) + " must divide channels = " + std::to_string(p.channels)
            + " (channels per norm group)");
    require(std::isfinite(p.eps) && p.eps >= 0.0f, kOP,
        "field eps must be finite and >= 0, got " + std::to_string(p.eps));
    require(std::isfinite(p.z_scale) && p.z_scale >= 0.0f, kOP,
        "field z_scale must be finite and >= 0 (0: z is not quantized), got " + std::to_string(p.z_scale));
    require(p.rotation_first >= 1 && p.rotation_first <= kMAX_FACTOR, kOP,
        "field rotation_first must be 1.." + std::to_string(kMAX_FACTOR) + " (1: no dense factor), got "
            + std::to_string(p.rotation_first));
    require(powerOfTwo(p.rotation_last) && p.rotation_last <= kMAX_FACTOR, kOP,
        "field rotation_last must be a power of two in 1.." + std::to_string(kMAX_FACTOR)
            + " (1: no Sylvester factor), got " + std::to_string(p.rotation_last));
    int32_t const product = p.rotation_first * p.rotation_last;
    require(product == 1 || product == p.channels, kOP,
        "fields rotation_first * rotation_last = " + std::to_string(product) + " must equal channels = "
            + std::to_string(p.channels) + " (or both be 1: no rotation)");
    require(mSerial.gate == 0 || mSerial.gate == 1, kOP,
        "field gate must be 0 (no z: a plain RMSNorm) or 1 (the input z gates y), got " + std::to_string(mSerial.gate));
    require(mSerial.gate == 1 || p.z_scale == 0.0f, kOP,
        "field z_scale = " + std::to_string(p.z_scale) + " needs gate = 1 (with gate = 0 there is no z to quantize)");
    require(mSerial.z_col_scale == 0 || mSerial.z_col_scale == 1, kOP,
        "field z_col_scale must be 0 (z as it comes) or 1 (the input z_col_scale scales z), got "
            + std::to_string(mSerial.z_col_scale));
    require(mSerial.gate == 1 || mSerial.z_col_scale == 0, kOP,
        "field z_col_scale = 1 needs gate = 1 (with gate = 0 there is no z to scale)");
    require(mSerial.y_bits == 0 || mSerial.y_bits == 1, kOP,
        "field y_bits must be 0 (y is float32) or 1 (y is int32 words holding float32 values), got "
            + std::to_string(mSerial.y_bits));
    require(p.z_row_width == 0 || p.z_row_width >= p.channels, kOP,
        "field z_row_width must be 0 (z is [batch, seq, channels]) or at least channels = " + std::to_string(p.channels)
            + " (z is the first channels columns of its rows), got " + std::to_string(p.z_row_width));
    require(mSerial.gate == 1 || p.z_row_width == 0, kOP, "field z_row_width needs gate = 1 (with gate = 0 there is no z)");
}

bool GatedNormCore::present(int32_t input) const
{
    switch (input)
    {
    case kIN_Z: return mSerial.gate == 1;
    case kIN_Z_COL_SCALE: return mSerial.z_col_scale == 1;
    case kIN_ROTATION_FIRST: return mSerial.params.rotation_first > 1;
    default: return input >= 0 && input < kMAX_INPUTS;
    }
}

int32_t GatedNormCore::inputPosition(int32_t input) const
{
    if (!present(input))
    {
        return -1;
    }
    int32_t position = 0;
    for (int32_t i = 0; i < input; ++i)
    {
        position += present(i) ? 1 : 0;
    }
    return position;
}

int32_t GatedNormCore::nbInputs() const
{
    int32_t n = 0;
    for (int32_t i = 0; i < kMAX_INPUTS; ++i)
    {
        n += present(i) ? 1 : 0;
    }
    return n;
}

OutputRule GatedNormCore::outputRule(int32_t index) const
{
    require(index == kOUT_OUT, kOP, "no output " + std::to_string(index));
    return OutputRule{3, {inputDim(kIN_Y, 0), inputDim(kIN_Y, 1), constDim(mSerial.params.channels)}};
}

void GatedNormCore::checkInputs(std::vector<Shape> const& in) const
{
    qmamba_gated_norm_params const& p = mSerial.params;
    int32_t const n = static_cast<int32_t>(in.size());
    require(n == nbInputs(), kOP,
        "takes " + std::to_string(nbInputs()) + " inputs with gate = " + std::to_string(mSerial.gate)
            + ", z_col_scale = " + std::to_string(mSerial.z_col_scale) + " and rotation_first = "
            + std::to_string(p.rotation_first) + " (y" + (mSerial.gate ? ", z" : "")
            + (mSerial.z_col_scale ? ", z_col_scale" : "") + ", weight"
            + (p.rotation_first > 1 ? ", rotation_first" : "") + "), got " + std::to_string(n));
    int64_t const K = p.channels;
    Shape const& y = in[kIN_Y];
    checkShape(kOP, "y", y, {-1, -1, K});
    if (mSerial.gate)
    {
        checkShape(kOP, "z", in[kIN_Z], {y.d[0], y.d[1], p.z_row_width > 0 ? p.z_row_width : K});
    }
    if (mSerial.z_col_scale)
    {
        checkShape(kOP, "z_col_scale", in[inputPosition(kIN_Z_COL_SCALE)], {K});
    }
    checkShape(kOP, "weight", in[inputPosition(kIN_WEIGHT)], {K});
    if (p.rotation_first > 1)
    {
        checkShape(kOP, "rotation_first", in[inputPosition(kIN_ROTATION_FIRST)], {p.rotation_first, p.rotation_first});
    }
}

void GatedNormCore::enqueue(std::vector<Shape> const& in, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, size_t /*workspaceBytes*/, qmamba_stream_t stream) const
{
    checkInputs(in);
    qmamba_gated_norm_tensors t{};
    t.y = static_cast<float const*>(inputs[kIN_Y]); // with y_bits, int32 words holding these floats' bytes
    t.z = mSerial.gate ? static_cast<float const*>(inputs[kIN_Z]) : nullptr; // the kernel's "no gate"
    t.z_col_scale = mSerial.z_col_scale ? static_cast<float const*>(inputs[inputPosition(kIN_Z_COL_SCALE)]) : nullptr;
    t.weight = static_cast<float const*>(inputs[inputPosition(kIN_WEIGHT)]);
    bool const dense = mSerial.params.rotation_first > 1;
    t.rotation_first = dense ? static_cast<float const*>(inputs[inputPosition(kIN_ROTATION_FIRST)]) : nullptr;
    t.out = static_cast<float*>(outputs[kOUT_OUT]);
    int64_t const rows = in[kIN_Y].d[0] * in[kIN_Y].d[1];
    require(qmamba_gated_norm(&mSerial.params, &t, rows, stream) == QMAMBA_OK, kOP,
        std::string("kernel failed: ") + qmamba_last_error());
}

} // namespace qmamba
