// The IPluginV2DynamicExt adapter (TensorRT 8.5 / 8.6, still the plugin API of JetPack 5 and 6.0)
// shared by qmamba's ops: it translates TensorRT's calls into calls of the op's core and reports
// every error. Serialization writes the core's one POD struct behind a format header.
#ifndef QMAMBA_PLUGIN_V2_ADAPTER_H
#define QMAMBA_PLUGIN_V2_ADAPTER_H

#include "qmambaErrors.h"
#include "qmambaSerialize.h"
#include "qmambaTrtUtils.h"

#include <NvInferRuntime.h>

#include <exception>
#include <string>

namespace qmamba
{

// TensorRT 8.6 builds a plugin fed by QuantizeLinear as an int8 node and then accepts only int8 or int32
// outputs from it: a float or half output is refused ("All of the candidates were removed, which points
// to the node being incorrectly marked as an int8 node").
// So V2 hands such an output (QuantSSD's y) to TensorRT as int32 words holding its bytes: the same
// buffer, half's last dimension halved. `qmamba build` puts QmambaBitsAsFloat after it.
template <typename Core>
bool carriedAsInt32(Core const& core, int32_t outputIndex)
{
    DType const t = core.outputType(outputIndex);
    if (t != DType::kFloat && t != DType::kHalf)
    {
        return false;
    }
    for (int32_t i = 0; i < Core::kMAX_INPUTS; ++i)
    {
        if (core.inputType(i) == DType::kInt8)
        {
            return true;
        }
    }
    return false;
}

template <typename Core>
class PluginV2 : public nvinfer1::IPluginV2DynamicExt
{
public:
    explicit PluginV2(Core core)
        : mCore(std::move(core))
    {
    }

    // ---- Core ------------------------------------------------------------------------------------
    char const* getPluginType() const noexcept override { return Core::kNAME; }
    char const* getPluginVersion() const noexcept override { return Core::kVERSION; }
    void setPluginNamespace(char const* ns) noexcept override { mNamespace = ns ? ns : ""; }
    char const* getPluginNamespace() const noexcept override { return mNamespace.c_str(); }
    int32_t getNbOutputs() const noexcept override { return Core::kNB_OUTPUTS; }
    int32_t initialize() noexcept override { return 0; }
    void terminate() noexcept override {}
    void destroy() noexcept override { delete this; }

    nvinfer1::IPluginV2DynamicExt* clone() const noexcept override
    {
        try
        {
            auto* copy = new PluginV2(mCore);
            copy->mNamespace = mNamespace;
            return copy;
        }
        catch (std::exception const& e)
        {
            reportError(Core::kNAME, e.what());
        }
        return nullptr;
    }

    // ---- Build -----------------------------------------------------------------------------------
    nvinfer1::DataType getOutputDataType(
        int32_t index, nvinfer1::DataType const* /*inputTypes*/, int32_t /*nbInputs*/) const noexcept override
    {
        try
        {
            return toTrt(v2OutputType(index));
        }
        catch (std::exception const& e)
        {
            reportError(Core::kNAME, e.what());
        }
        return nvinfer1::DataType::kINT8;
    }

    nvinfer1::DimsExprs getOutputDimensions(int32_t outputIndex, nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override
    {
        try
        {
            requireNbInputs<Core>(nbInputs);
            nvinfer1::DimsExprs out = toExprs(mCore.outputRule(outputIndex), inputs, nbInputs, exprBuilder);
            if (carriedAsInt32(mCore, outputIndex) && mCore.outputType(outputIndex) == DType::kHalf)
            {
                // Two half values per int32 word (the channel counts of qmamba's ops are even).
                nvinfer1::IDimensionExpr const*& last = out.d[out.nbDims - 1];
                last = exprBuilder.operation(nvinfer1::DimensionOperation::kFLOOR_DIV, *last, *exprBuilder.constant(2));
            }
            return out;
        }
        catch (std::exception const& e)
        {
            reportError(Core::kNAME, e.what());
        }
        return nvinfer1::DimsExprs{};
    }

    bool supportsFormatCombination(int32_t pos, nvinfer1::PluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t /*nbOutputs*/) noexcept override
    {
        try
        {
            DType const want = pos < nbInputs ? mCore.inputType(pos) : v2OutputType(pos - nbInputs);
            return inOut[pos].format == nvinfer1::TensorFormat::kLINEAR && inOut[pos].type == toTrt(want);
        }
        catch (std::exception const& e)
        {
            reportError(Core::kNAME, e.what());
        }
        return false;
    }

    void configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* /*out*/, int32_t /*nbOutputs*/) noexcept override
    {
        try
        {
            mNbInputs = nbInputs;
            mCore.checkInputs(maxShapesOf(in, nbInputs));
        }
        catch (std::exception const& e)
        {
            // configurePlugin cannot fail in this API: the error is logged and enqueue refuses the shapes.
            reportError(Core::kNAME, e.what());
        }
    }

    size_t getWorkspaceSize(nvinfer1::PluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept override
    {
        try
        {
            return mCore.workspaceSize(shapesOf(inputs, nbInputs));
        }
        catch (std::exception const& e)
        {
            reportError(Core::kNAME, e.what());
        }
        return 0;
    }

    // ---- Runtime ---------------------------------------------------------------------------------
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* /*outputDesc*/,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override
    {
        try
        {
            // enqueue is not told the input count: configurePlugin (or the engine) stored it.
            enqueueCore(mCore, inputDesc, mNbInputs, inputs, outputs, workspace, stream);
            return 0;
        }
        catch (std::exception const& e)
        {
            reportError(Core::kNAME, e.what());
        }
        return -1;
    }

    // ---- Serialization ---------------------------------------------------------------------------
    size_t getSerializationSize() const noexcept override
    {
        return serializedSize<SerialWithInputs>();
    }

    void serialize(void* buffer) const noexcept override
    {
        try
        {
            writeSerialized(SerialWithInputs{mCore.serial(), mNbInputs}, buffer);
        }
        catch (std::exception const& e)
        {
            reportError(Core::kNAME, e.what());
        }
    }

    // The POD written into the engine: the core's state and the input count (the optional state input).
    struct SerialWithInputs
    {
        typename Core::Serial core;
        int32_t nbInputs;
    };

    static PluginV2* deserialize(void const* data, size_t length)
    {
        auto const s = readSerialized<SerialWithInputs>(Core::kNAME, data, length);
        require(s.nbInputs >= Core::kMIN_INPUTS && s.nbInputs <= Core::kMAX_INPUTS, Core::kNAME,
            "serialized input count " + std::to_string(s.nbInputs) + " is out of range");
        auto* p = new PluginV2(Core(s.core));
        p->mNbInputs = s.nbInputs;
        return p;
    }

    void setNbInputs(int32_t n) { mNbInputs = n; }

private:
    DType v2OutputType(int32_t index) const
    {
        return carriedAsInt32(mCore, index) ? DType::kInt32 : mCore.outputType(index);
    }

    Core mCore;
    std::string mNamespace;
    int32_t mNbInputs{Core::kMIN_INPUTS};
};

template <typename Core>
class PluginCreatorV2 : public nvinfer1::IPluginCreator
{
public:
    PluginCreatorV2()
        : mFieldNames(OwnedFields::fromSpecs(Core::kFIELDS, Core::kNB_FIELDS))
    {
    }

    char const* getPluginName() const noexcept override { return Core::kNAME; }
    char const* getPluginVersion() const noexcept override { return Core::kVERSION; }
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override { return mFieldNames.collection(); }
    void setPluginNamespace(char const* ns) noexcept override { mNamespace = ns ? ns : ""; }
    char const* getPluginNamespace() const noexcept override { return mNamespace.c_str(); }

    nvinfer1::IPluginV2* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc) noexcept override
    {
        try
        {
            FieldValues const values = parseFields(Core::kNAME, Core::kFIELDS, Core::kNB_FIELDS, rawFields(fc));
            auto* p = new PluginV2<Core>(Core(values));
            p->setPluginNamespace(mNamespace.c_str());
            return p;
        }
        catch (std::exception const& e)
        {
            reportCreatorError(Core::kNAME, name, e.what());
        }
        return nullptr;
    }

    nvinfer1::IPluginV2* deserializePlugin(char const* name, void const* data, size_t length) noexcept override
    {
        try
        {
            auto* p = PluginV2<Core>::deserialize(data, length);
            p->setPluginNamespace(mNamespace.c_str());
            return p;
        }
        catch (std::exception const& e)
        {
            reportCreatorError(Core::kNAME, name, e.what());
        }
        return nullptr;
    }

private:
    OwnedFields mFieldNames;
    std::string mNamespace;
};

} // namespace qmamba

#endif // QMAMBA_PLUGIN_V2_ADAPTER_H
