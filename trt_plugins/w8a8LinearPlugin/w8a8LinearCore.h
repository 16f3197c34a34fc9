// QmambaW8A8Linear, independent of the plugin API: the W8A8 linear of a decode step (docs/tensorrt.md,
// runtime/w8a8_linear.py), with the RMSNorm before it (over the whole row, or over groups of norm_group
// channels: the gated norm before out_proj), a Hadamard rotation after that norm (a dense factor F_0 and a
// Sylvester one given by its order, as QmambaGatedNorm's) and the residual Add after it optionally folded in.
// Not an op of the exported graphs: `qmamba build` puts it into the decode graph.
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

    // Tensor positions; norm_weight (field norm = 1), residual (field residual = 1) and the rotation's dense
    // factor F_0 (field rotation_first > 1) follow, in that order.
    static constexpr int32_t kIN_X = 0;
    static constexpr int32_t kIN_WEIGHT = 1;
    static constexpr int32_t kIN_OUT_SCALE = 2;
    static constexpr int32_t kIN_INPUT_SCALE = 3;
    static constexpr int32_t kOUT_Y = 0;

    static constexpr int32_t kMIN_INPUTS = 4;
    static constexpr int32_t kMAX_INPUTS = 7;
    static constexpr int32_t kNB_OUTPUTS = 1;

    // Most RMSNorm groups per row (kMaxNormGroups of kernels/w8a8Linear.cuh).
    static constexpr int64_t kMAX_NORM_GROUPS = 16;
    // Largest order of either rotation factor (the rotation pass is qmamba_gated_norm's kernel).
    static constexpr int32_t kMAX_FACTOR = 128;

    static constexpr size_t kNB_FIELDS = 6;
    static FieldSpec const kFIELDS[kNB_FIELDS];

    struct Serial
    {
        int32_t norm;
        int32_t residual;
        float eps;
        int32_t normGroup; // channels per RMSNorm group; 0: the whole row
        int32_t rotationFirst; // f0: order of the rotation's dense factor F_0 (1: none)
        int32_t rotationLast;  // f1: order of its Sylvester factor (1: none)
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
    bool rotates() const { return mSerial.rotationFirst > 1 || mSerial.rotationLast > 1; }
    bool dense() const { return mSerial.rotationFirst > 1; }
    int32_t nbInputs() const { return kMIN_INPUTS + mSerial.norm + mSerial.residual + (dense() ? 1 : 0); }
    int32_t residualIndex() const { return kMIN_INPUTS + mSerial.norm; }
    int32_t firstFactorIndex() const { return kMIN_INPUTS + mSerial.norm + mSerial.residual; }
    void validate() const;
    Serial mSerial{};
};

} // namespace qmamba

#endif // QMAMBA_W8A8_LINEAR_CORE_H
