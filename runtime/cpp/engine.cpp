#include "engine.h"

#include "qmamba_runner.h"

#include <algorithm>
#include <cstdio>
#include <map>

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

// Sums TensorRT's per-layer times over runs (TensorRT calls it once per layer and run).
class LayerTimes : public nvinfer1::IProfiler
{
public:
    void reportLayerTime(char const* layerName, float ms) noexcept override
    {
        try
        {
            auto it = mIndex.find(layerName);
            if (it == mIndex.end())
            {
                it = mIndex.emplace(layerName, mLayers.size()).first;
                mLayers.push_back({layerName, 0.0});
            }
            mLayers[it->second].totalMs += ms;
        }
        catch (...)
        {
            // A profile short of a layer is still a profile; nothing may escape into TensorRT.
        }
    }

    struct Layer
    {
        std::string name;
        double totalMs;
    };
    std::vector<Layer> mLayers; // in the order TensorRT runs them
    std::map<std::string, size_t> mIndex;
};

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
    default: throw RunnerError("tensor of an unsupported data type");
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
        throw RunnerError("engine " + enginePath + " is empty (0 bytes): build it again with `qmamba build`");
    }
    auto const planBytes = metadata.find("plan_bytes");
    if (planBytes != metadata.end() && planBytes->second != std::to_string(plan.size()))
    {
        throw RunnerError("engine " + enginePath + " holds " + std::to_string(plan.size()) + " bytes, its .json says "
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
    throw RunnerError(mPath + " has no tensor named " + name);
}

void Engine::profile(std::string const& name, nvinfer1::Dims& min, nvinfer1::Dims& opt, nvinfer1::Dims& max) const
{
    if (!info(name).isInput)
    {
        throw RunnerError(name + " is an output of " + mPath + "; profiles are defined for inputs");
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
        throw RunnerError(name + " is an output of " + mPath + ", not an input");
    }
    if (dims.nbDims != t.dims.nbDims)
    {
        throw RunnerError("input " + name + " of " + mPath + " has rank " + std::to_string(t.dims.nbDims) + " ("
            + dimsString(t.dims) + "), got shape " + dimsString(dims));
    }
    nvinfer1::Dims min, opt, max;
    profile(name, min, opt, max);
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        if (dims.d[i] < min.d[i] || dims.d[i] > max.d[i])
        {
            throw RunnerError("input " + name + " shape " + dimsString(dims) + ": dimension " + std::to_string(i) + " = "
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
            throw RunnerError("shape of " + name + " is not known yet (" + dimsString(d) + "): set the input shapes first");
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

std::string Engine::profileLayers(cudaStream_t stream, int iters)
{
    if (iters < 1)
    {
        throw RunnerError("iters must be >= 1");
    }
    // TensorRT 8.6 cannot take a profiler off a context again (setProfiler(nullptr) is refused) and a
    // second live context cannot take the engine's one profile: the profile runs on a context of its
    // own while the main one is gone, and a fresh main context takes the same shapes and buffers after.
    std::vector<std::pair<std::string, nvinfer1::Dims>> shapes;
    std::vector<std::pair<std::string, void*>> addresses;
    for (auto const& t : mIo)
    {
        if (t.isInput)
        {
            shapes.emplace_back(t.name, mContext->getTensorShape(t.name.c_str()));
        }
        void* ptr = const_cast<void*>(mContext->getTensorAddress(t.name.c_str()));
        if (ptr == nullptr)
        {
            throw RunnerError("profile " + mPath + ": set the address of " + t.name + " first");
        }
        addresses.emplace_back(t.name, ptr);
    }
    auto freshContext = [&]() {
        std::unique_ptr<nvinfer1::IExecutionContext> ctx{mEngine->createExecutionContext()};
        if (!ctx || !ctx->setOptimizationProfileAsync(0, stream))
        {
            failWithTrtErrors("cannot create an execution context for " + mPath);
        }
        for (auto const& [name, dims] : shapes)
        {
            if (!ctx->setInputShape(name.c_str(), dims))
            {
                failWithTrtErrors("TensorRT refused shape " + dimsString(dims) + " for input " + name);
            }
        }
        for (auto const& [name, ptr] : addresses)
        {
            if (!ctx->setTensorAddress(name.c_str(), ptr))
            {
                failWithTrtErrors("TensorRT refused the address of " + name);
            }
        }
        return ctx;
    };
    LayerTimes times;
    mContext.reset();
    try
    {
        std::unique_ptr<nvinfer1::IExecutionContext> ctx = freshContext();
        ctx->setProfiler(&times);
        for (int i = 0; i < iters; ++i)
        {
            if (!ctx->enqueueV3(stream))
            {
                failWithTrtErrors("TensorRT could not run " + mPath + " under the profiler");
            }
            checkCuda(cudaStreamSynchronize(stream), "profiled run");
        }
    } // the profiled context goes before the profiler it points to
    catch (...)
    {
        mContext = freshContext();
        throw;
    }
    mContext = freshContext();
    std::vector<LayerTimes::Layer> layers = times.mLayers;
    double total = 0;
    for (auto const& l : layers)
    {
        total += l.totalMs;
    }
    std::stable_sort(layers.begin(), layers.end(),
        [](LayerTimes::Layer const& a, LayerTimes::Layer const& b) { return a.totalMs > b.totalMs; });
    char line[64];
    std::snprintf(line, sizeof(line), "%zu layers, %.4f ms per run (mean of %d)\n", layers.size(), total / iters, iters);
    std::string out = line;
    for (auto const& l : layers)
    {
        std::snprintf(line, sizeof(line), "%10.4f ms %6.2f%%  ", l.totalMs / iters, total > 0 ? 100.0 * l.totalMs / total : 0.0);
        out += line + l.name + "\n";
    }
    return out;
}

} // namespace qmr
