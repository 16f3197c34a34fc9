// QmambaBitsAsFloat, independent of the plugin API: int32 words in, the same bytes out as float32 (or
// float16) values. It exists for TensorRT 8.5/8.6 only: there a plugin fed by QuantizeLinear may give
// int8 or int32 outputs but no float ones, so the V2 adapter hands QuantSSD's float y to TensorRT as int32
// words and `qmamba build` puts this node after it (docs/tensorrt.md, "TensorRT 8.6 and Q/DQ").
#ifndef QMAMBA_BITS_AS_FLOAT_CORE_H
#define QMAMBA_BITS_AS_FLOAT_CORE_H

#include "qmambaFields.h"
#include "qmambaShapes.h"
#include "qmamba_kernels.h"

#include <cstddef>
#include <vector>

namespace qmamba
{

class BitsAsFloatCore
{
public:
    static constexpr char const* kNAME = "QmambaBitsAsFloat";
    static constexpr char const* kVERSION = "1";

    static constexpr int32_t kIN_BITS = 0;
    static constexpr int32_t kOUT_VALUES = 0;
    static constexpr int32_t kMIN_INPUTS = 1;
    static constexpr int32_t kMAX_INPUTS = 1;
    static constexpr int32_t kNB_OUTPUTS = 1;

    // ONNX TensorProto codes of `to`, as QuantSSD's out_dtype.
    static constexpr int32_t kONNX_FLOAT = 1;
    static constexpr int32_t kONNX_FLOAT16 = 10;

    static constexpr size_t kNB_FIELDS = 1;
    static FieldSpec const kFIELDS[kNB_FIELDS];

    struct Serial
    {
        int32_t to;
    };

    explicit BitsAsFloatCore(FieldValues const& values);
    explicit BitsAsFloatCore(Serial const& s);

    Serial serial() const { return mSerial; }
    FieldValues fieldValues() const { return {static_cast<double>(mSerial.to)}; }

    DType inputType(int32_t /*pos*/) const { return DType::kInt32; }
    DType outputType(int32_t /*index*/) const { return mSerial.to == kONNX_FLOAT16 ? DType::kHalf : DType::kFloat; }
    // The input's shape; float16 doubles the last dimension (two values per word).
    OutputRule outputRule(int32_t index) const;

    void checkInputs(std::vector<Shape> const& in) const;
    size_t workspaceSize(std::vector<Shape> const& /*maxIn*/) const { return 0; }
    // A device-to-device copy of the input's bytes on `stream`.
    void enqueue(std::vector<Shape> const& in, void const* const* inputs, void* const* outputs, void* workspace,
        size_t workspaceBytes, qmamba_stream_t stream) const;

private:
    void validate() const;
    Serial mSerial{};
};

} // namespace qmamba

#endif // QMAMBA_BITS_AS_FLOAT_CORE_H
