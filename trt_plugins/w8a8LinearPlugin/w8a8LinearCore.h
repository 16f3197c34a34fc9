// QmambaW8A8Linear, independent of the plugin API: the W8A8 linear of a decode step (docs/tensorrt.md,
// runtime/w8a8_linear.py), with the RMSNorm before it (over the whole row, or over groups of norm_group
// channels: the gated norm before out_proj), a Hadamard rotation after that norm (given by its one or two
// Kronecker factors) and the residual Add after it optionally folded in. Not an op of the exported graphs:
// `qmamba build` puts it into the decode graph.
#ifndef QMAMBA_W8A8_LINEAR_CORE_H
#define QMAMBA_W8A8_LINEAR_CORE_H

#include "qmambaFields.h"
#include "qmambaShapes.h"
#include "qmamba_kernels.h"

#include <cstddef>
#include <vector>

namespace qmamba
{

class W8A8LinearCore
{
public:
    static constexpr char const* kNAME = "QmambaW8A8Linear";
    static constexpr char const* kVERSION = "1";

    // Tensor positions; norm_weight (field norm = 1), residual (field residual = 1) and the rotation's
    // factors (field rotation = 1 or 2: F_0, then F_1) follow, in that order.
    static constexpr int32_t kIN_X = 0;
    static constexpr int32_t kIN_WEIGHT = 1;
    static constexpr int32_t kIN_OUT_SCALE = 2;
    static constexpr int32_t kIN_INPUT_SCALE = 3;
    static constexpr int32_t kOUT_Y = 0;

    static constexpr int32_t kMIN_INPUTS = 4;
    static constexpr int32_t kMAX_INPUTS = 8;
    static constexpr int32_t kNB_OUTPUTS = 1;

    // Most RMSNorm groups per row (kMaxNormGroups of kernels/w8a8Linear.cuh).
    static constexpr int64_t kMAX_NORM_GROUPS = 16;

    static constexpr size_t kNB_FIELDS = 5;
    static FieldSpec const kFIELDS[kNB_FIELDS];

    struct Serial
    {
        int32_t norm;
        int32_t residual;
        float eps;
        int32_t normGroup; // channels per RMSNorm group; 0: the whole row
        int32_t rotation;  // factors of the rotation after the norm: 0 (none), 1 or 2
    };

    explicit W8A8LinearCore(FieldValues const& values);
    explicit W8A8LinearCore(Serial const& s);

    Serial serial() const { return mSerial; }
    FieldValues fieldValues() const;

    // x, out_scale, input_scale, norm_weight and residual are float; the packed weight is int32.
    DType inputType(int32_t pos) const { return pos == kIN_WEIGHT ? DType::kInt32 : DType::kFloat; }
    DType outputType(int32_t /*index*/) const { return DType::kFloat; }
    // [batch, seq, N]: x's first two dimensions, the weight's rows.
    OutputRule outputRule(int32_t index) const;

    void checkInputs(std::vector<Shape> const& in) const;
    // The rotated rows ([rows, K] floats) when there is a rotation.
    size_t workspaceSize(std::vector<Shape> const& maxIn) const;
    void enqueue(std::vector<Shape> const& in, void const* const* inputs, void* const* outputs, void* workspace,
        size_t workspaceBytes, qmamba_stream_t stream) const;

private:
    int32_t nbInputs() const { return kMIN_INPUTS + mSerial.norm + mSerial.residual + mSerial.rotation; }
    int32_t residualIndex() const { return kMIN_INPUTS + mSerial.norm; }
    int32_t rotationIndex() const { return kMIN_INPUTS + mSerial.norm + mSerial.residual; }
    void validate() const;
    Serial mSerial{};
};

} // namespace qmamba

#endif // QMAMBA_W8A8_LINEAR_CORE_H
