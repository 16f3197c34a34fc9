// The IPluginV3 adapter (TensorRT 10 and later) shared by qmamba's ops: it translates TensorRT's calls
// into calls of the op's core (fields, types, shapes, workspace, enqueue) and reports every error.
// Each op instantiates it with its core in its own folder (e.g. quantSSDPlugin/quantSSDPlugin.h).
#ifndef QMAMBA_PLUGIN_V3_ADAPTER_H
#define QMAMBA_PLUGIN_V3_ADAPTER_H

#include "qmambaErrors.h"
#include "qmambaSerialize.h"
#include "qmambaTrtUtils.h"

#include <NvInferRuntime.h>

#include <exception>
#include <memory>
#include <string>

namespace qmamba
{

template <typename Core>
class PluginV3 : public nvinfer1::IPluginV3,
                 public nvinfer1::IPluginV3OneCore,
                 public nvinfer1::IPluginV3OneBuild,
                 public nvinfer1::IPluginV3OneRuntime
{
public:
    explicit PluginV3(Core core)
        : mCore(std::move(core))
    {
    }

    // ---- IPluginV3 -------------------------------------------------------------------------------
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override
    {
        switch (type)
        {
        case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }

    nvinfer1::IPluginV3* clone() noexcept override
    {
        try
        {
            auto* copy = new PluginV3(mCore);
            copy->mNbInputs = mNbInputs;
            return copy;
        }
        catch (std::exception const& e)
        {
            reportError(Core::kNAME, e.what());
        }
        return nullptr;
    }

    // ---- Core ------------------------------------------------------------------------------------
    char const* getPluginName() const noexcept override { return Core::kNAME; }
    char const* getPluginVersion() const noexcept override { return Core::kVERSION; }
    char const* getPluginNamespace() const noexcept override { return ""; }

    // ---- Build -----------------------------------------------------------------------------------
    int32_t getNbOutputs() const noexcept override { return Core::kNB_OUTPUTS; }

    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* /*out*/, int32_t /*nbOutputs*/) noexcept override
    {
        try
        {
            mCore.checkInputs(maxShapesOf(in, nbInputs));
            mNbInputs = nbInputs;
            return 0;
        }
        catch (std::exception const& e)
        {
            reportError(Core::kNAME, e.what());
        }
        return -1;
    }

    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override
    {
        try
        {
            require(nbOutputs == Core::kNB_OUTPUTS, Core::kNAME, "wrong number of outputs");
            for (int32_t i = 0; i < nbInputs; ++i)
            {
                require(inputTypes[i] == toTrt(mCore.inputType(i)), Core::kNAME,
                    "input " + std::to_string(i) + " must be " + dtypeName(mCore.inputType(i)));
            }
            for (int32_t i = 0; i < nbOutputs; ++i)
            {
                outputTypes[i] = toTrt(mCore.outputType(i));
            }
            return 0;
        }
        catch (std::exception const& e)
        {
            reportError(Core::kNAME, e.what());
        }
        return -1;
    }

    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept override
    {
        try
        {
            requireNbInputs<Core>(nbInputs);
            for (int32_t i = 0; i < nbOutputs; ++i)
            {
                outputs[i] = toExprs(mCore.outputRule(i), inputs, nbInputs, exprBuilder);
            }
            return 0;
        }
        catch (std::exception const& e)
        {
            reportError(Core::kNAME, e.what());
        }
        return -1;
    }

    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t /*nbOutputs*/) noexcept override
    {
        try
        {
            return supportsTypeAt(mCore, pos, inOut[pos].desc, nbInputs);
        }
        catch (std::exception const& e)
        {
            reportError(Core::kNAME, e.what());
        }
        return false;
    }

    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept override
    {
        try
        {
            return mCore.workspaceSize(maxShapesOf(inputs, nbInputs));
        }
        catch (std::exception const& e)
        {
            reportError(Core::kNAME, e.what());
        }
        return 0;
    }

    // ---- Runtime ---------------------------------------------------------------------------------
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* /*out*/, int32_t /*nbOutputs*/) noexcept override
    {
        try
        {
            mCore.checkInputs(shapesOf(in, nbInputs));
            mNbInputs = nbInputs;
            return 0;
        }
        catch (std::exception const& e)
        {
            reportError(Core::kNAME, e.what());
        }
        return -1;
    }

    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* /*outputDesc*/,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override
    {
        try
        {
            // TensorRT gives the workspace getWorkspaceSize asked for at the profile's largest shapes.
            enqueueCore(mCore, inputDesc, mNbInputs, inputs, outputs, workspace, stream);
            return 0;
        }
        catch (std::exception const& e)
        {
            reportError(Core::kNAME, e.what());
        }
        return -1;
    }

    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept override
    {
        return clone();
    }

    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override
    {
        try
        {
            mSerialized = OwnedFields::fromValues(Core::kFIELDS, Core::kNB_FIELDS, mCore.fieldValues());
            return mSerialized.collection();
        }
        catch (std::exception const& e)
        {
            reportError(Core::kNAME, e.what());
        }
        return nullptr;
    }

private:
    Core mCore;
    int32_t mNbInputs{Core::kMIN_INPUTS}; // set by onShapeChange, which always precedes enqueue
    OwnedFields mSerialized;
};

template <typename Core>
class PluginCreatorV3 : public nvinfer1::IPluginCreatorV3One
{
public:
    PluginCreatorV3()
        : mFieldNames(OwnedFields::fromSpecs(Core::kFIELDS, Core::kNB_FIELDS))
    {
    }

    char const* getPluginName() const noexcept override { return Core::kNAME; }
    char const* getPluginVersion() const noexcept override { return Core::kVERSION; }
    char const* getPluginNamespace() const noexcept override { return ""; }

    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override { return mFieldNames.collection(); }

    // Build phase: the ONNX node's attributes. Runtime phase: getFieldsToSerialize()'s fields, which
    // carry the library's serialization format so that a plan of another qmamba version is refused.
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override
    {
        try
        {
            std::vector<RawField> fields = rawFields(fc);
            if (phase == nvinfer1::TensorRTPhase::kRUNTIME)
            {
                checkFormat(fields);
            }
            FieldValues const values
                = parseFields(Core::kNAME, Core::kFIELDS, Core::kNB_FIELDS, fields, {kFORMAT_FIELD});
            return new PluginV3<Core>(Core(values));
        }
        catch (std::exception const& e)
        {
            reportCreatorError(Core::kNAME, name, e.what());
        }
        return nullptr;
    }

private:
    static void checkFormat(std::vector<RawField> const& fields)
    {
        for (RawField const& f : fields)
        {
            if (f.name == kFORMAT_FIELD)
            {
                bool const ok = f.type == RawType::kInt32 && f.length == 1 && f.data != nullptr
                    && *static_cast<int32_t const*>(f.data) == static_cast<int32_t>(kSERIAL_FORMAT);
                require(ok, Core::kNAME,
                    "engine was built with another version of the qmamba plugin library (plugin format field "
                    "differs from " + std::to_string(kSERIAL_FORMAT) + "): rebuild the engine");
                return;
            }
        }
        throw PluginError(std::string(Core::kNAME)
            + ": engine was built with another version of the qmamba plugin library (no " + kFORMAT_FIELD
            + " field): rebuild the engine");
    }

    OwnedFields mFieldNames;
};

} // namespace qmamba

#endif // QMAMBA_PLUGIN_V3_ADAPTER_H
