// QmambaDecodeMixer, independent of the plugin API: one decode step of a Mamba2 mixer, from in_proj's
// float output to the gated norm's RMS, in one kernel (docs/tensorrt.md, "Decode mixer"; kernel
// trt_plugins/kernels/decodeMixerKernel.cu). It stands for the Split of in_proj's output, the
// QuantizeLinear of z/x/B/C/dt, the xBC Concat, QuantConv1dSiLU, QuantSSD and the gate
// y * (z' * sigmoid(z')). Not an op of the exported graphs: `qmamba build` puts it into decode graphs;
// runtime/decode_mixer.py is its twin. The int8 weights and states travel as int32 words of their bytes.
#ifndef QMAMBA_DECODE_MIXER_CORE_H
#define QMAMBA_DECODE_MIXER_CORE_H

#include "qmambaFields.h"
#include "qmambaShapes.h"
#include "qmamba_kernels.h"

#include <cstddef>
#include <vector>

namespace qmamba
{

class DecodeMixerCore
{
public:
    static constexpr char const* kNAME = "QmambaDecodeMixer";
    static constexpr char const* kVERSION = "1";

    // Tensor positions (README.md beside this file, Inputs and Outputs).
    static constexpr int32_t kIN_ZXBCDT = 0;
    static constexpr int32_t kIN_CONV_WEIGHT = 1;
    static constexpr int32_t kIN_CONV_BIAS = 2;
    static constexpr int32_t kIN_X_OUT_SCALES = 3;
    static constexpr int32_t kIN_B_OUT_SCALES = 4;
    static constexpr int32_t kIN_C_OUT_SCALES = 5;
    static constexpr int32_t kIN_X_HEAD_GROUP_RANGE = 6;
    static constexpr int32_t kIN_X_DIM_GROUP_RANGE = 7;
    static constexpr int32_t kIN_A_LOG = 8;
    static constexpr int32_t kIN_D = 9;
    static constexpr int32_t kIN_DT_BIAS = 10;
    static constexpr int32_t kIN_SSM_STATE_SCALE = 11;
    static constexpr int32_t kIN_CONV_STATE = 12;
    static constexpr int32_t kIN_SSM_STATE = 13;
    static constexpr int32_t kOUT_GATED = 0;
    static constexpr int32_t kOUT_CONV_STATE_OUT = 1;
    static constexpr int32_t kOUT_SSM_STATE_OUT = 2;

    // No optional input: both states are always given.
    static constexpr int32_t kMIN_INPUTS = 14;
    static constexpr int32_t kMAX_INPUTS = 14;
    static constexpr int32_t kNB_OUTPUTS = 3;

    // d_state the kernels accept (check_shared_sizes of trt_plugins/kernels/checks.cu).
    static constexpr int32_t kMIN_D_STATE = 16;
    static constexpr int32_t kMAX_D_STATE = 256;
    // Bytes per int32 word of the int8 tensors.
    static constexpr int64_t kWORD = 4;

    static constexpr size_t kNB_FIELDS = 18;
    static FieldSpec const kFIELDS[kNB_FIELDS];

    struct Serial
    {
        qmamba_mixer_params params; // conv.n_head_groups, conv.n_dim_groups are filled from shapes at enqueue
    };

    explicit DecodeMixerCore(FieldValues const& values);
    explicit DecodeMixerCore(Serial const& s);

    Serial serial() const { return mSerial; }
    FieldValues fieldValues() const;

    // zxbcdt, the scales, A_log, D and dt_bias are float; the int8 tensors (conv weight and bias, the
    // states) and the group ranges are int32.
    DType inputType(int32_t pos) const;
    // gated float32, the states int32 words.
    DType outputType(int32_t index) const;
    // gated [batch, 1, d_ssm]; the states the shapes of their inputs.
    OutputRule outputRule(int32_t index) const;

    void checkInputs(std::vector<Shape> const& in) const;
    size_t workspaceSize(std::vector<Shape> const& /*maxIn*/) const { return 0; }
    void enqueue(std::vector<Shape> const& in, void const* const* inputs, void* const* outputs, void* workspace,
        size_t workspaceBytes, qmamba_stream_t stream) const;

private:
    // The model's sizes, in int64 (no overflow of the products).
    struct Sizes
    {
        int64_t dSsm;    // nheads * headdim
        int64_t gn;      // ngroups * d_state
        int64_t convDim; // dSsm + 2 gn: the channels of xBC
        int64_t width;   // 2 dSsm + 2 gn + nheads: in_proj's output, z | x | B | C | dt
    };
    Sizes sizes() const;
    void validate() const;
    Serial mSerial{};
};

} // namespace qmamba

#endif // QMAMBA_DECODE_MIXER_CORE_H
