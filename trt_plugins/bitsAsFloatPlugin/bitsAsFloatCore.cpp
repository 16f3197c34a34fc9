#include "bitsAsFloatCore.h"

#include "qmambaErrors.h"

#include <string>

namespace qmamba
{
namespace
{
constexpr char const* kOP = BitsAsFloatCore::kNAME;
} // namespace

// The Parameters table of trt_plugins/bitsAsFloatPlugin/README.md (tests/trt_plugins/test_plugin_fields.py).
// clang-format off
FieldSpec const BitsAsFloatCore::kFIELDS[kNB_FIELDS] = {
    {"to", FieldKind::kInt, false, 1},
};
// clang-format on

BitsAsFloatCore::BitsAsFloatCore(FieldValues const& v)
{
    require(v.size() == kNB_FIELDS, kOP, "wrong number of field values");
    mSerial.to = static_cast<int32_t>(v[0]);
    validate();
}

BitsAsFloatCore::BitsAsFloatCore(Serial const& s)
    : mSerial(s)
{
    validate();
}

void BitsAsFloatCore::validate() const
{
    require(mSerial.to == kONNX_FLOAT || mSerial.to == kONNX_FLOAT16, kOP,
        "field to must be 1 (float32) or 10 (float16), got " + std::to_string(mSerial.to));
}

OutputRule BitsAsFloatCore::outputRule(int32_t index) const
{
    require(index == kOUT_VALUES, kOP, "no output " + std::to_string(index));
    // Rank 3 (QuantSSD's y: batch, sequence, channels); checkInputs refuses other ranks.
    int64_t const perWord = mSerial.to == kONNX_FLOAT16 ? 2 : 1;
    return OutputRule{3, {inputDim(kIN_BITS, 0), inputDim(kIN_BITS, 1), inputDim(kIN_BITS, 2, 0, perWord)}};
}

void BitsAsFloatCore::checkInputs(std::vector<Shape> const& in) const
{
    require(in.size() == 1, kOP, "takes 1 input, got " + std::to_string(in.size()));
    checkShape(kOP, "bits", in[kIN_BITS], {-1, -1, -1});
}

void BitsAsFloatCore::enqueue(std::vector<Shape> const& in, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, size_t /*workspaceBytes*/, qmamba_stream_t stream) const
{
    checkInputs(in);
    Shape const& s = in[kIN_BITS];
    size_t const bytes = static_cast<size_t>(s.d[0]) * static_cast<size_t>(s.d[1]) * static_cast<size_t>(s.d[2])
        * sizeof(int32_t);
    require(qmamba_copy_async(outputs[kOUT_VALUES], inputs[kIN_BITS], bytes, stream) == QMAMBA_OK, kOP,
        std::string("copy failed: ") + qmamba_last_error());
}

} // namespace qmamba
