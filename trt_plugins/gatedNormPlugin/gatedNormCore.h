// QmambaGatedNorm, independent of the plugin API: a prefill Mamba2 mixer's gated RMSNorm and the Hadamard
// rotation after it, from QuantSSD's y and in_proj's z piece to the float input of out_proj's quantization,
// in one kernel (README.md beside this file; kernel behind qmamba_gated_norm of qmamba_kernels.h). With the
// field gate = 0 there is no z: a plain RMSNorm (the block's before in_proj, the final one before lm_head).
// With z_col_scale = 1 z comes unscaled and in_proj's output scale of it as an input of its own. With
// y_bits = 1 y comes as the int32 words that hold QuantSSD's fp32 y (TensorRT 8's V2 QuantSSD output). With
// z_row_width = W > 0 the input z is in_proj's whole output [batch, seq, W], z its first channels columns.
// Not an op of the exported graphs: `qmamba build` puts it into prefill graphs (runtime/prefill_fusion.py).
#ifndef QMAMBA_GATED_NORM_CORE_H
#define QMAMBA_GATED_NORM_CORE_H

#include "qmambaFields.h"
#include "qmambaShapes.h"
#include "qmamba_kernels.h"

#include <cstddef>
#include <vector>

namespace qmamba
{

class GatedNormCore
{
public:
    static constexpr char const* kNAME = "QmambaGatedNorm";
    static constexpr char const* kVERSION = "1";

    // Tensor positions with every optional input (README.md, Inputs and Outputs): z only with the field
    // gate = 1, z_col_scale only with the field z_col_scale = 1, rotation_first (the factor F_0) only with the
    // field rotation_first > 1. The inputs after an absent one move up: inputPosition() gives where one is.
    static constexpr int32_t kIN_Y = 0;
    static constexpr int32_t kIN_Z = 1;
    static constexpr int32_t kIN_Z_COL_SCALE = 2;
    static constexpr int32_t kIN_WEIGHT = 3;
    static constexpr int32_t kIN_ROTATION_FIRST = 4;
    static constexpr int32_t kOUT_OUT = 0;

    static constexpr int32_t kMIN_INPUTS = 2;
    static constexpr int32_t kMAX_INPUTS = 5;
    static constexpr int32_t kNB_OUTPUTS = 1;

    // The launcher's limits (QMAMBA_ERR_BAD_SIZE beyond them): channels a row, order of either factor.
    static constexpr int32_t kMAX_CHANNELS = 65536;
    static constexpr int32_t kMAX_FACTOR = 128;

    static constexpr size_t kNB_FIELDS = 10;
    static FieldSpec const kFIELDS[kNB_FIELDS];

    struct Serial
    {
        qmamba_gated_norm_params params;
        int32_t gate;        // 1: g = y * (z' * sigmoid(z')) with the input z; 0: no z, g = y
        int32_t z_col_scale; // 1: the input z_col_scale [K] follows z, z * z_col_scale[k] first; 0: z as it comes
        int32_t y_bits;      // 1: y is int32 words holding fp32 values (the same bytes); 0: y is float32
    };

    explicit GatedNormCore(FieldValues const& values);
    explicit GatedNormCore(Serial const& s);

    Serial serial() const { return mSerial; }
    FieldValues fieldValues() const;

    DType inputType(int32_t pos) const { return pos == kIN_Y && mSerial.y_bits ? DType::kInt32 : DType::kFloat; }
    DType outputType(int32_t /*index*/) const { return DType::kFloat; }
    // [batch, seq, channels]: y's first two dimensions.
    OutputRule outputRule(int32_t index) const;

    // Where the input kIN_* is in this node's inputs (-1: one the fields leave out).
    int32_t inputPosition(int32_t input) const;

    void checkInputs(std::vector<Shape> const& in) const;
    size_t workspaceSize(std::vector<Shape> const& /*maxIn*/) const { return 0; }
    void enqueue(std::vector<Shape> const& in, void const* const* inputs, void* const* outputs, void* workspace,
        size_t workspaceBytes, qmamba_stream_t stream) const;

private:
    bool present(int32_t input) const; // whether the fields put the input kIN_* into this node
    int32_t nbInputs() const;
    void validate() const;
    Serial mSerial{};
};

} // namespace qmamba

#endif // QMAMBA_GATED_NORM_CORE_H
