#include "w8a8LinearCore.h"

#include "qmambaErrors.h"

#include <cmath>
#include <string>

namespace qmamba
{
namespace
{
constexpr char const* kOP = W8A8LinearCore::kNAME;
} // namespace

// The Parameters table of trt_plugins/w8a8LinearPlugin/README.md (tests/trt_plugins/test_plugin_fields.py).
// clang-format off
FieldSpec const W8A8LinearCore::kFIELDS[kNB_FIELDS] = {
    {"norm", FieldKind::kInt, false, 0},
    {"eps", FieldKind::kFloat, false, 1e-5},
    {"residual", FieldKind::kInt, false, 0},
    {"norm_group", FieldKind::kInt, false, 0},
    {"rotation_first", FieldKind::kInt, false, 1},
    {"rotation_last", FieldKind::kInt, false, 1},
};
// clang-format on

W8A8LinearCore::W8A8LinearCore(FieldValues const& v)
{
    require(v.size() == kNB_FIELDS, kOP, "wrong number of field values");
    mSerial.norm = static_cast<int32_t>(v[0]);
    mSerial.eps = static_cast<float>(v[1]);
    mSerial.residual = static_cast<int32_t>(v[2]);
    mSerial.normGroup = static_cast<int32_t>(v[3]);
    mSerial.rotationFirst = static_cast<int32_t>(v[4]);
    mSerial.rotationLast = static_cast<int32_t>(v[5]);
    validate();
}

W8A8LinearCore::W8A8LinearCore(Serial const& s)
    : mSerial(s)
{
    validate();
}

FieldValues W8A8LinearCore::fieldValues() const
{
    return {static_cast<double>(mSerial.norm), static_cast<double>(mSerial.eps), static_cast<double>(mSerial.residual),
        static_cast<double>(mSerial.normGroup), static_cast<double>(mSerial.rotationFirst),
        static_cast<double>(mSerial.rotationLast)};
}

void W8A8LinearCore::validate() const
{
    require(mSerial.norm == 0 || mSerial.norm == 1, kOP, "field norm must be 0 or 1, got " + std::to_string(mSerial.norm));
    require(mSerial.residual == 0 || mSerial.residual == 1, kOP,
        "field residual must be 0 or 1, got " + std::to_string(mSerial.residual));
    require(std::isfinite(mSerial.eps) && mSerial.eps >= 0.0f, kOP,
        "field eps must be finite and >= 0, got " + std::to_string(mSerial.eps));
    require(mSerial.normGroup >= 0, kOP,
        "field norm_group must be 0 (the whole row) or >= 1, got " + std::to_string(mSerial.normGroup));
    int32_t const f0 = mSerial.rotationFirst, f1 = mSerial.rotationLast;
    require(f0 >= 1 && f0 <= kMAX_FACTOR, kOP,
        "field rotation_first must be 1.." + std::to_string(kMAX_FACTOR) + " (1: no dense factor), got "
            + std::to_string(f0));
    require(f1 >= 1 && f1 <= kMAX_FACTOR && (f1 & (f1 - 1)) == 0, kOP,
        "field rotation_last must be a power of two in 1.." + std::to_string(kMAX_FACTOR)
            + " (1: no Sylvester factor), got " + std::to_string(f1));
    require(!rotates() || mSerial.norm == 1, kOP,
        "a rotation (fields rotation_first, rotation_last) needs norm = 1: the rotation pass norms each row");
}

size_t W8A8LinearCore::workspaceSize(std::vector<Shape> const& maxIn) const
{
    if (!rotates())
    {
        return 0;
    }
    Shape const& x = maxIn[kIN_X];
    return static_cast<size_t>(x.d[0]) * static_cast<size_t>(x.d[1]) * static_cast<size_t>(x.d[2]) * sizeof(float);
}

OutputRule W8A8LinearCore::outputRule(int32_t index) const
{
    require(index == kOUT_Y, kOP, "no output " + std::to_string(index));
    return OutputRule{3, {inputDim(kIN_X, 0), inputDim(kIN_X, 1), inputDim(kIN_WEIGHT, 0)}};
}

void W8A8LinearCore::checkInputs(std::vector<Shape> const& in) const
{
    int32_t const n = static_cast<int32_t>(in.size());
    require(n == nbInputs(), kOP,
        "takes " + std::to_string(nbInputs()) + " inputs with norm = " + std::to_string(mSerial.norm)
            + ", residual = " + std::to_string(mSerial.residual) + " and rotation_first = "
            + std::to_string(mSerial.rotationFirst) + " (x, weight, out_scale, input_scale"
            + (mSerial.norm ? ", norm_weight" : "") + (mSerial.residual ? ", residual" : "") + (dense() ? ", F_0" : "")
            + "), got " + std::to_string(n));
    Shape const& x = in[kIN_X];
    checkShape(kOP, "x", x, {-1, -1, -1});
    int64_t const K = x.d[2];
    checkShape(kOP, "weight", in[kIN_WEIGHT], {-1, K < 0 ? -1 : (K + 3) / 4});
    int64_t const N = in[kIN_WEIGHT].d[0];
    checkShape(kOP, "out_scale", in[kIN_OUT_SCALE], {N});
    Shape const& s = in[kIN_INPUT_SCALE];
    require(s.nbDims == 0 || (s.nbDims == 1 && (s.d[0] == 1 || s.d[0] < 0)), kOP,
        "input input_scale must hold one value ([] or [1]), got " + shapeString(s));
    if (mSerial.norm)
    {
        checkShape(kOP, "norm_weight", in[kMIN_INPUTS], {K});
        int64_t const group = mSerial.normGroup;
        require(group == 0 || K < 0 || (K % group == 0 && K / group <= kMAX_NORM_GROUPS), kOP,
            "field norm_group = " + std::to_string(group) + " must divide K = " + std::to_string(K) + " into at most "
                + std::to_string(kMAX_NORM_GROUPS) + " RMSNorm groups");
    }
    if (mSerial.residual)
    {
        checkShape(kOP, "residual", in[residualIndex()], {x.d[0], x.d[1], N});
    }
    if (rotates())
    {
        int64_t const product = static_cast<int64_t>(mSerial.rotationFirst) * mSerial.rotationLast;
        require(K < 0 || product == K, kOP,
            "fields rotation_first * rotation_last = " + std::to_string(product) + " must equal K = "
                + std::to_string(K));
    }
    if (dense())
    {
        checkShape(kOP, "F_0", in[firstFactorIndex()], {mSerial.rotationFirst, mSerial.rotationFirst});
    }
}

void W8A8LinearCore::enqueue(std::vector<Shape> const& in, void const* const* inputs, void* const* outputs,
    void* workspace, size_t workspaceBytes, qmamba_stream_t stream) const
{
    checkInputs(in);
    qmamba_linear_params p{};
    p.in_features = static_cast<int32_t>(in[kIN_X].d[2]);
    p.out_features = static_cast<int32_t>(in[kIN_WEIGHT].d[0]);
    p.norm = mSerial.norm;
    p.eps = mSerial.eps;
    p.norm_group = mSerial.normGroup;
    qmamba_linear_tensors t{};
    t.x = static_cast<float const*>(inputs[kIN_X]);
    t.weight = static_cast<int32_t const*>(inputs[kIN_WEIGHT]);
    t.out_scale = static_cast<float const*>(inputs[kIN_OUT_SCALE]);
    t.input_scale = static_cast<float const*>(inputs[kIN_INPUT_SCALE]);
    t.norm_weight = mSerial.norm ? static_cast<float const*>(inputs[kMIN_INPUTS]) : nullptr;
    t.residual = mSerial.residual ? static_cast<float const*>(inputs[residualIndex()]) : nullptr;
    t.y = static_cast<float*>(outputs[kOUT_Y]);
    int64_t const rows = in[kIN_X].d[0] * in[kIN_X].d[1];
    if (rotates())
    {
        p.rotation_first = mSerial.rotationFirst;
        p.rotation_last = mSerial.rotationLast;
        t.rotation_first = dense() ? static_cast<float const*>(inputs[firstFactorIndex()]) : nullptr;
        t.workspace = static_cast<float*>(workspace);
        require(workspaceBytes >= static_cast<size_t>(rows) * static_cast<size_t>(p.in_features) * sizeof(float),
            kOP, "workspace smaller than the rotated rows");
    }
    require(qmamba_w8a8_linear(&p, &t, rows, stream) == QMAMBA_OK, kOP,
        std::string("kernel failed: ") + qmamba_last_error());
}

} // namespace qmamba
