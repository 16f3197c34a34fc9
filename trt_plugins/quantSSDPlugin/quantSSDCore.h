// QuantSSD, independent of the plugin API: fields, shape and type rules, serialization, workspace and
// the call into the CUDA kernels (docs/ops.md, "QuantSSD"). The V2 and V3 adapters only translate.
#ifndef QMAMBA_QUANT_SSD_CORE_H
#define QMAMBA_QUANT_SSD_CORE_H

#include "qmambaFields.h"
#include "qmambaShapes.h"
#include "qmamba_kernels.h"

#include <cstddef>
#include <vector>

namespace qmamba
{

class QuantSSDCore
{
public:
    static constexpr char const* kNAME = "QuantSSD";
    static constexpr char const* kVERSION = "1";

    // Tensor positions (docs/ops.md, Inputs / Outputs).
    static constexpr int32_t kIN_X = 0;
    static constexpr int32_t kIN_DT = 1;
    static constexpr int32_t kIN_B = 2;
    static constexpr int32_t kIN_C = 3;
    static constexpr int32_t kIN_A_LOG = 4;
    static constexpr int32_t kIN_D = 5;
    static constexpr int32_t kIN_DT_BIAS = 6;
    static constexpr int32_t kIN_X_OUT_SCALES = 7;
    static constexpr int32_t kIN_B_OUT_SCALES = 8;
    static constexpr int32_t kIN_C_OUT_SCALES = 9;
    static constexpr int32_t kIN_X_HEAD_GROUP_RANGE = 10;
    static constexpr int32_t kIN_X_DIM_GROUP_RANGE = 11;
    static constexpr int32_t kIN_SSM_STATE_SCALE = 12;
    static constexpr int32_t kIN_SSM_STATE = 13; // optional
    static constexpr int32_t kOUT_Y = 0;
    static constexpr int32_t kOUT_SSM_STATE_OUT = 1;

    static constexpr int32_t kMIN_INPUTS = 13;
    static constexpr int32_t kMAX_INPUTS = 14;
    static constexpr int32_t kNB_OUTPUTS = 2;

    // ONNX TensorProto codes of out_dtype.
    static constexpr int32_t kONNX_FLOAT = 1;
    static constexpr int32_t kONNX_FLOAT16 = 10;

    static constexpr size_t kNB_FIELDS = 9;
    static FieldSpec const kFIELDS[kNB_FIELDS];

    struct Serial
    {
        qmamba_ssd_params params; // n_head_groups, n_dim_groups are filled from shapes at enqueue
    };

    explicit QuantSSDCore(FieldValues const& values);
    explicit QuantSSDCore(Serial const& s);

    Serial serial() const { return mSerial; }
    FieldValues fieldValues() const;

    DType inputType(int32_t pos) const;
    DType outputType(int32_t index) const;
    OutputRule outputRule(int32_t index) const;

    void checkInputs(std::vector<Shape> const& in) const;
    // Workspace of the chunked prefill for the largest shapes the engine allows.
    size_t workspaceSize(std::vector<Shape> const& maxIn) const;
    void enqueue(std::vector<Shape> const& in, void const* const* inputs, void* const* outputs, void* workspace,
        size_t workspaceBytes, qmamba_stream_t stream) const;

private:
    void validate() const;
    qmamba_ssd_params paramsFor(std::vector<Shape> const& in) const;
    Serial mSerial{};
};

} // namespace qmamba

#endif // QMAMBA_QUANT_SSD_CORE_H
