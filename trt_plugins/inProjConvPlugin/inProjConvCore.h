// QmambaInProjConv, independent of the plugin API: QuantConv1dSiLU's prefill reading xBC from in_proj's float
// output, each value multiplied by its column's output scale (field col_scale = 1) and quantized with its
// segment's input scale as it is read (README.md beside this file; kernel behind
// qmamba_quant_conv1d_silu_prefill_from_float of qmamba_kernels.h). Not an op of the exported graphs:
// `qmamba build --fuse-in-proj-split` puts it into prefill graphs (runtime/in_proj_conv_fusion.py).
#ifndef QMAMBA_IN_PROJ_CONV_CORE_H
#define QMAMBA_IN_PROJ_CONV_CORE_H

#include "qmambaFields.h"
#include "qmambaShapes.h"
#include "qmamba_kernels.h"

#include <cstddef>
#include <vector>

namespace qmamba
{

class InProjConvCore
{
public:
    static constexpr char const* kNAME = "QmambaInProjConv";
    static constexpr char const* kVERSION = "1";

    // Tensor positions (README.md, Inputs and Outputs): QuantConv1dSiLU's with in_proj's output in place of xBC
    // and no conv_state (a prefill from the zero state); col_scale only with the field col_scale = 1.
    static constexpr int32_t kIN_ZXBCDT = 0;
    static constexpr int32_t kIN_WEIGHT = 1;
    static constexpr int32_t kIN_BIAS = 2;
    static constexpr int32_t kIN_X_OUT_SCALES = 3;
    static constexpr int32_t kIN_B_OUT_SCALES = 4;
    static constexpr int32_t kIN_C_OUT_SCALES = 5;
    static constexpr int32_t kIN_X_HEAD_GROUP_RANGE = 6;
    static constexpr int32_t kIN_X_DIM_GROUP_RANGE = 7;
    static constexpr int32_t kIN_COL_SCALE = 8; // optional
    static constexpr int32_t kOUT_X = 0;
    static constexpr int32_t kOUT_B = 1;
    static constexpr int32_t kOUT_C = 2;
    static constexpr int32_t kOUT_CONV_STATE_OUT = 3;

    static constexpr int32_t kMIN_INPUTS = 8;
    static constexpr int32_t kMAX_INPUTS = 9;
    static constexpr int32_t kNB_OUTPUTS = 4;

    static constexpr size_t kNB_FIELDS = 15;
    static FieldSpec const kFIELDS[kNB_FIELDS];

    struct Serial
    {
        qmamba_conv_params params; // d_conv, n_head_groups, n_dim_groups are filled from shapes at enqueue
        int32_t xbc_offset;        // the column of xBC's first channel in in_proj's output row
        int32_t col_scale;         // 1: the input col_scale [conv_dim] multiplies xBC's columns first; 0: none
    };

    explicit InProjConvCore(FieldValues const& values);
    explicit InProjConvCore(Serial const& s);

    Serial serial() const { return mSerial; }
    FieldValues fieldValues() const;

    DType inputType(int32_t pos) const;
    DType outputType(int32_t /*index*/) const { return DType::kInt8; }
    OutputRule outputRule(int32_t index) const;

    void checkInputs(std::vector<Shape> const& in) const;
    size_t workspaceSize(std::vector<Shape> const& /*maxIn*/) const { return 0; }
    void enqueue(std::vector<Shape> const& in, void const* const* inputs, void* const* outputs, void* workspace,
        size_t workspaceBytes, qmamba_stream_t stream) const;

private:
    void validate() const;
    Serial mSerial{};
};

} // namespace qmamba

#endif // QMAMBA_IN_PROJ_CONV_CORE_H
