#include "qmambaTrtUtils.h"

#include "qmambaErrors.h"
#include "qmambaSerialize.h"

#include <atomic>
#include <cstdio>

namespace qmamba
{
namespace
{
std::atomic<nvinfer1::ILogger*> gLogger{nullptr};
} // namespace

void setPluginLogger(nvinfer1::ILogger* logger) noexcept
{
    gLogger.store(logger);
}

void reportError(char const* where, char const* what) noexcept
{
    try
    {
        std::string const msg = std::string("qmamba plugin ") + where + ": " + what;
        nvinfer1::ILogger* logger = gLogger.load();
        if (logger == nullptr)
        {
            logger = ::getLogger();
        }
        if (logger != nullptr)
        {
            logger->log(nvinfer1::ILogger::Severity::kERROR, msg.c_str());
        }
        else
        {
            std::fprintf(stderr, "%s\n", msg.c_str());
        }
    }
    catch (...)
    {
        std::fprintf(stderr, "qmamba plugin: an error occurred and could not be reported\n");
    }
}

nvinfer1::DataType toTrt(DType t)
{
    switch (t)
    {
    case DType::kInt8: return nvinfer1::DataType::kINT8;
    case DType::kInt32: return nvinfer1::DataType::kINT32;
    case DType::kFloat: return nvinfer1::DataType::kFLOAT;
    case DType::kHalf: return nvinfer1::DataType::kHALF;
    }
    throw PluginError("qmamba: unknown data type");
}

Shape toShape(nvinfer1::Dims const& d)
{
    require(d.nbDims >= 0 && d.nbDims <= kMAX_RANK, "qmamba", "tensor rank " + std::to_string(d.nbDims) + " is unsupported");
    Shape s{};
    s.nbDims = d.nbDims;
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        s.d[i] = d.d[i];
    }
    return s;
}

std::vector<Shape> maxShapesOf(nvinfer1::DynamicPluginTensorDesc const* desc, int32_t n)
{
    std::vector<Shape> out;
    out.reserve(n);
    for (int32_t i = 0; i < n; ++i)
    {
        out.push_back(toShape(desc[i].max));
    }
    return out;
}

nvinfer1::DimsExprs toExprs(OutputRule const& rule, nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::IExprBuilder& builder)
{
    nvinfer1::DimsExprs out{};
    out.nbDims = rule.nbDims;
    for (int32_t i = 0; i < rule.nbDims; ++i)
    {
        DimRule const& r = rule.d[i];
        if (r.constant)
        {
            out.d[i] = builder.constant(static_cast<int32_t>(r.value));
            continue;
        }
        require(r.input < nbInputs && r.dim < inputs[r.input].nbDims, "qmamba",
            "an output's shape refers to input " + std::to_string(r.input) + " which has too few dimensions");
        nvinfer1::IDimensionExpr const* e = inputs[r.input].d[r.dim];
        if (r.factor != 1)
        {
            e = builder.operation(nvinfer1::DimensionOperation::kPROD, *e, *builder.constant(static_cast<int32_t>(r.factor)));
        }
        if (r.value != 0)
        {
            e = builder.operation(nvinfer1::DimensionOperation::kSUM, *e, *builder.constant(static_cast<int32_t>(r.value)));
        }
        out.d[i] = e;
    }
    return out;
}

std::vector<RawField> rawFields(nvinfer1::PluginFieldCollection const* fc)
{
    std::vector<RawField> out;
    if (fc == nullptr)
    {
        return out;
    }
    require(fc->nbFields == 0 || fc->fields != nullptr, "qmamba", "plugin field collection has no fields array");
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        nvinfer1::PluginField const& f = fc->fields[i];
        require(f.name != nullptr, "qmamba", "plugin field " + std::to_string(i) + " has no name");
        RawType t = RawType::kOther;
        switch (f.type)
        {
        case nvinfer1::PluginFieldType::kFLOAT32: t = RawType::kFloat32; break;
        case nvinfer1::PluginFieldType::kFLOAT64: t = RawType::kFloat64; break;
        case nvinfer1::PluginFieldType::kINT32: t = RawType::kInt32; break;
#if NV_TENSORRT_MAJOR >= 10
        case nvinfer1::PluginFieldType::kINT64: t = RawType::kInt64; break;
#endif
        default: break;
        }
        out.push_back(RawField{f.name, t, f.data, f.length});
    }
    return out;
}

OwnedFields OwnedFields::fromSpecs(FieldSpec const* specs, size_t n)
{
    OwnedFields o;
    for (size_t i = 0; i < n; ++i)
    {
        o.mNames.emplace_back(specs[i].name);
    }
    for (size_t i = 0; i < n; ++i)
    {
        auto const type = specs[i].kind == FieldKind::kFloat ? nvinfer1::PluginFieldType::kFLOAT32
                                                             : nvinfer1::PluginFieldType::kINT32;
        o.mFields.emplace_back(o.mNames[i].c_str(), nullptr, type, 1);
    }
    return o;
}

OwnedFields OwnedFields::fromValues(FieldSpec const* specs, size_t n, FieldValues const& values)
{
    require(values.size() == n, "qmamba", "field values do not match their table");
    OwnedFields o;
    // Reserve first: the PluginFields point into these vectors.
    o.mFloats.reserve(n);
    o.mInts.reserve(n + 1);
    o.mNames.reserve(n + 1);
    for (size_t i = 0; i < n; ++i)
    {
        o.mNames.emplace_back(specs[i].name);
        if (specs[i].kind == FieldKind::kFloat)
        {
            o.mFloats.push_back(static_cast<float>(values[i]));
            o.mFields.emplace_back(o.mNames.back().c_str(), &o.mFloats.back(), nvinfer1::PluginFieldType::kFLOAT32, 1);
        }
        else
        {
            o.mInts.push_back(static_cast<int32_t>(values[i]));
            o.mFields.emplace_back(o.mNames.back().c_str(), &o.mInts.back(), nvinfer1::PluginFieldType::kINT32, 1);
        }
    }
    o.mNames.emplace_back(kFORMAT_FIELD);
    o.mInts.push_back(static_cast<int32_t>(kSERIAL_FORMAT));
    o.mFields.emplace_back(o.mNames.back().c_str(), &o.mInts.back(), nvinfer1::PluginFieldType::kINT32, 1);
    return o;
}

nvinfer1::PluginFieldCollection const* OwnedFields::collection()
{
    mCollection.nbFields = static_cast<int32_t>(mFields.size());
    mCollection.fields = mFields.data();
    return &mCollection;
}

} // namespace qmamba
