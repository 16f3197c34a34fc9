// Translation between TensorRT's plugin types and the API-free types of the op cores, shared by the
// V2 (TensorRT 8.5/8.6) and V3 (TensorRT 10+) adapters.
#ifndef QMAMBA_TRT_UTILS_H
#define QMAMBA_TRT_UTILS_H

#include "qmambaErrors.h"
#include "qmambaFields.h"
#include "qmambaShapes.h"
#include "qmamba_kernels.h"

#include <NvInferRuntime.h>

#include <string>
#include <vector>

namespace qmamba
{

nvinfer1::DataType toTrt(DType t);

Shape toShape(nvinfer1::Dims const& d);

template <typename Desc>
std::vector<Shape> shapesOf(Desc const* desc, int32_t n)
{
    std::vector<Shape> out;
    out.reserve(n);
    for (int32_t i = 0; i < n; ++i)
    {
        out.push_back(toShape(desc[i].dims));
    }
    return out;
}

// The largest shapes of a profile (DynamicPluginTensorDesc::max).
std::vector<Shape> maxShapesOf(nvinfer1::DynamicPluginTensorDesc const* desc, int32_t n);

nvinfer1::DimsExprs toExprs(OutputRule const& rule, nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::IExprBuilder& builder);

std::vector<RawField> rawFields(nvinfer1::PluginFieldCollection const* fc);

// Whether position `pos` of a plugin's inputs then outputs has the type the core wants, in linear format.
template <typename Core>
bool supportsTypeAt(Core const& core, int32_t pos, nvinfer1::PluginTensorDesc const& desc, int32_t nbInputs)
{
    DType const want = pos < nbInputs ? core.inputType(pos) : core.outputType(pos - nbInputs);
    return desc.format == nvinfer1::TensorFormat::kLINEAR && desc.type == toTrt(want);
}

// The body of both adapters' enqueue: the call's shapes (TensorRT does not pass the input count, the
// adapter keeps it), the workspace getWorkspaceSize asked for at those shapes, then the core's enqueue.
template <typename Core>
void enqueueCore(Core const& core, nvinfer1::PluginTensorDesc const* inputDesc, int32_t nbInputs,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream)
{
    std::vector<Shape> const shapes = shapesOf(inputDesc, nbInputs);
    size_t const wsBytes = core.workspaceSize(shapes);
    core.enqueue(shapes, inputs, outputs, workspace, wsBytes, reinterpret_cast<qmamba_stream_t>(stream));
}

// Throws unless TensorRT gives the op an input count it accepts (the state input is optional).
template <typename Core>
void requireNbInputs(int32_t nbInputs)
{
    require(nbInputs >= Core::kMIN_INPUTS && nbInputs <= Core::kMAX_INPUTS, Core::kNAME,
        "wrong number of inputs: " + std::to_string(nbInputs));
}

// Reports an error of a creator's call for the layer `name` (null: "?") as "<op> (<name>)".
inline void reportCreatorError(char const* op, char const* name, char const* what)
{
    reportError((std::string(op) + " (" + (name ? name : "?") + ")").c_str(), what);
}

// A PluginFieldCollection that owns its fields' names and data.
class OwnedFields
{
public:
    OwnedFields() = default;
    // Moves keep the heap buffers the PluginFields point into; copies would not.
    OwnedFields(OwnedFields&&) = default;
    OwnedFields& operator=(OwnedFields&&) = default;
    OwnedFields(OwnedFields const&) = delete;
    OwnedFields& operator=(OwnedFields const&) = delete;

    // The creator's advertised list: each field's name and type, no data.
    static OwnedFields fromSpecs(FieldSpec const* specs, size_t n);
    // A plugin's values, as a creator receives them (V3 serialization), plus the library's format.
    static OwnedFields fromValues(FieldSpec const* specs, size_t n, FieldValues const& values);

    nvinfer1::PluginFieldCollection const* collection();

private:
    std::vector<std::string> mNames;
    std::vector<float> mFloats;
    std::vector<int32_t> mInts;
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mCollection{};
};

// The name of the extra field a V3 plugin serializes: the library's serialization format.
constexpr char const* kFORMAT_FIELD = "qmamba_plugin_format";

// Sets the logger used by reportError (from setLoggerFinder); null falls back to getLogger().
void setPluginLogger(nvinfer1::ILogger* logger) noexcept;

} // namespace qmamba

#endif // QMAMBA_TRT_UTILS_H
