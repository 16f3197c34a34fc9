// One deserialized engine and its execution context (engine.h); its layer profile is engineProfile.cpp.
#include "engine.h"

#include "qmamba_runner.h"


namespace qmr
{
namespace
{

int toQmr(nvinfer1::DataType t)
{
    switch (t)
    {
    case nvinfer1::DataType::kFLOAT: return QMR_FLOAT;
    case nvinfer1::DataType::kHALF: return QMR_HALF;
    case nvinfer1::DataType::kINT8: return QMR_INT8;
    case nvinfer1::DataType::kINT32: return QMR_INT32;
    case nvinfer1::DataType::kBOOL: return QMR_BOOL;
#if NV_TENSORRT_MAJOR >= 10
    case nvinfer1::DataType::kINT64: return QMR_INT64;
#endif
    default: return QMR_OTHER;
    }
}

} // namespace

size_t dtypeSize(int dtype)
{
    switch (dtype)
    {
    case QMR_FLOAT:
    case QMR_INT32: return 4;
    case QMR_HALF: return 2;
    case QMR_INT64: return 8;
    case QMR_INT8:
    case QMR_BOOL: return 1;
    default: throw BadInputError("tensor of an unsupported data type");
    }
}

std::string dimsString(nvinfer1::Dims const& d)
{
    std::string out = "[";
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        out += (i ? ", " : "") + std::to_string(d.d[i]);
    }
    return out + "]";
}

Engine::Engine(std::string const& enginePath, std::string const& pluginLibrary)
    : mPath(enginePath)
{
    std::string const pluginVersion = loadPluginLibrary(pluginLibrary);
    Metadata const metadata = readMetadata(enginePath + ".json");
    checkMetadata(enginePath, metadata, pluginVersion);
    std::vector<char> const plan = readFile(enginePath);
    // TensorRT's deserializer is not a validator: refuse an empty or truncated file before it sees one.
    if (plan.empty())
    {
        throw BadInputError("engine " + enginePath + " is empty (0 bytes): build it again with `qmamba build`");
    }
    auto const planBytes = metadata.find("plan_bytes");
    if (planBytes != metadata.end() && planBytes->second != std::to_string(plan.size()))
    {
        throw BadInputError("engine " + enginePath + " holds " + std::to_string(plan.size()) + " bytes, its .json says "
            + planBytes->second + " were written (a truncated or replaced file): build it again with `qmamba build`");
    }
    Logger& logger = Logger::instance();
    logger.takeErrors();
    mRuntime.reset(nvinfer1::createInferRuntime(logger));
    if (!mRuntime)
    {
        failWithTrtErrors("cannot create a TensorRT runtime");
    }
    mEngine.reset(mRuntime->deserializeCudaEngine(plan.data(), plan.size()));
    if (!mEngine)
    {
        failWithTrtErrors("cannot deserialize " + enginePath
            + " (built by another TensorRT or for another GPU, or its plugins are not loaded: pass the plugin library)");
    }
    mContext.reset(mEngine->createExecutionContext());
    if (!mContext)
    {
        failWithTrtErrors("cannot create an execution context for " + enginePath);
    }
    for (int32_t i = 0; i < mEngine->getNbIOTensors(); ++i)
    {
        char const* name = mEngine->getIOTensorName(i);
        mIo.push_back(TensorInfo{name, mEngine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT,
            toQmr(mEngine->getTensorDataType(name)), mEngine->getTensorShape(name)});
    }
}

TensorInfo const& Engine::info(std::string const& name) const
{
    for (auto const& t : mIo)
    {
        if (t.name == name)
        {
            return t;
        }
    }
    throw BadInputError(mPath + " has no tensor named " + name);
}

void Engine::profile(std::string const& name, nvinfer1::Dims& min, nvinfer1::Dims& opt, nvinfer1::Dims& max) const
{
    if (!info(name).isInput)
    {
        throw BadInputError(name + " is an output of " + mPath + "; profiles are defined for inputs");
    }
    min = mEngine->getProfileShape(name.c_str(), 0, nvinfer1::OptProfileSelector::kMIN);
    opt = mEngine->getProfileShape(name.c_str(), 0, nvinfer1::OptProfileSelector::kOPT);
    max = mEngine->getProfileShape(name.c_str(), 0, nvinfer1::OptProfileSelector::kMAX);
}

void Engine::setInputShape(std::string const& name, nvinfer1::Dims const& dims)
{
    TensorInfo const& t = info(name);
    if (!t.isInput)
    {
        throw BadInputError(name + " is an output of " + mPath + ", not an input");
    }
    if (dims.nbDims != t.dims.nbDims)
    {
        throw BadInputError("input " + name + " of " + mPath + " has rank " + std::to_string(t.dims.nbDims) + " ("
            + dimsString(t.dims) + "), got shape " + dimsString(dims));
    }
    nvinfer1::Dims min, opt, max;
    profile(name, min, opt, max);
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        if (dims.d[i] < min.d[i] || dims.d[i] > max.d[i])
        {
            throw BadInputError("input " + name + " shape " + dimsString(dims) + ": dimension " + std::to_string(i) + " = "
                + std::to_string(dims.d[i]) + " is outside the engine's profile [" + std::to_string(min.d[i]) + ", "
                + std::to_string(max.d[i]) + "] (" + mPath + "); rebuild with a larger range");
        }
    }
    if (!mContext->setInputShape(name.c_str(), dims))
    {
        failWithTrtErrors("TensorRT refused shape " + dimsString(dims) + " for input " + name);
    }
}

nvinfer1::Dims Engine::shape(std::string const& name) const
{
    info(name);
    return mContext->getTensorShape(name.c_str());
}

size_t Engine::bytes(std::string const& name) const
{
    nvinfer1::Dims const d = shape(name);
    size_t n = dtypeSize(info(name).dtype);
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        if (d.d[i] < 0)
        {
            throw BadInputError("shape of " + name + " is not known yet (" + dimsString(d) + "): set the input shapes first");
        }
        n *= static_cast<size_t>(d.d[i]);
    }
    return n;
}

void Engine::setAddress(std::string const& name, void* ptr)
{
    info(name);
    if (!mContext->setTensorAddress(name.c_str(), ptr))
    {
        failWithTrtErrors("TensorRT refused the address of " + name);
    }
}

void Engine::enqueue(cudaStream_t stream)
{
    // (No allInputDimensionsSpecified() pre-check: TensorRT 8.6 answers false for engines whose input
    // shapes were all set by name; enqueueV3 reports a missing shape itself.)
    if (!mContext->enqueueV3(stream))
    {
        failWithTrtErrors("TensorRT could not run " + mPath);
    }
}

} // namespace qmr
