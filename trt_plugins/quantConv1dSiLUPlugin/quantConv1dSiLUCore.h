// QuantConv1dSiLU, independent of the plugin API: fields, shape and type rules, serialization and the
// call into the CUDA kernels (docs/ops.md, "QuantConv1dSiLU"). The V2 and V3 adapters only translate.
#ifndef QMAMBA_QUANT_CONV1D_SILU_CORE_H
#define QMAMBA_QUANT_CONV1D_SILU_CORE_H

#include "qmambaFields.h"
#include "qmambaShapes.h"
#include "qmamba_kernels.h"

#include <cstddef>
#include <vector>

namespace qmamba
{

class QuantConv1dSiLUCore
{
public:
    static constexpr char const* kNAME = "QuantConv1dSiLU";
    static constexpr char const* kVERSION = "1";

    // Tensor positions (docs/ops.md, Inputs / Outputs).
    static constexpr int32_t kIN_XBC = 0;
    static constexpr int32_t kIN_WEIGHT = 1;
    static constexpr int32_t kIN_BIAS = 2;
    static constexpr int32_t kIN_X_OUT_SCALES = 3;
    static constexpr int32_t kIN_B_OUT_SCALES = 4;
    static constexpr int32_t kIN_C_OUT_SCALES = 5;
    static constexpr int32_t kIN_X_HEAD_GROUP_RANGE = 6;
    static constexpr int32_t kIN_X_DIM_GROUP_RANGE = 7;
    static constexpr int32_t kIN_CONV_STATE = 8; // optional
    static constexpr int32_t kOUT_X = 0;
    static constexpr int32_t kOUT_B = 1;
    static constexpr int32_t kOUT_C = 2;
    static constexpr int32_t kOUT_CONV_STATE_OUT = 3;

    static constexpr int32_t kMIN_INPUTS = 8;
    static constexpr int32_t kMAX_INPUTS = 9;
    static constexpr int32_t kNB_OUTPUTS = 4;

    static constexpr size_t kNB_FIELDS = 13;
    static FieldSpec const kFIELDS[kNB_FIELDS];

    // Everything the plugin must carry into an engine: one POD (written as is by the V2 adapter).
    struct Serial
    {
        qmamba_conv_params params; // d_conv, n_head_groups, n_dim_groups are filled from shapes at enqueue
    };

    explicit QuantConv1dSiLUCore(FieldValues const& values);
    explicit QuantConv1dSiLUCore(Serial const& s);

    Serial serial() const { return mSerial; }
    FieldValues fieldValues() const;

    DType inputType(int32_t pos) const;
    DType outputType(int32_t index) const;
    OutputRule outputRule(int32_t index) const;

    // Checks ranks, sizes and the input count; -1 dims (unknown at build time) pass.
    void checkInputs(std::vector<Shape> const& in) const;
    size_t workspaceSize(std::vector<Shape> const& /*maxIn*/) const { return 0; }
    // Checks `in` once more (exact sizes now) and queues the kernel on `stream`.
    void enqueue(std::vector<Shape> const& in, void const* const* inputs, void* const* outputs, void* workspace,
        size_t workspaceBytes, qmamba_stream_t stream) const;

private:
    void validate() const;
    Serial mSerial{};
};

} // namespace qmamba

#endif // QMAMBA_QUANT_CONV1D_SILU_CORE_H
