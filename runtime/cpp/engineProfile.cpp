// Engine::profileLayers: TensorRT's per-layer times of one engine (its IProfiler), for Session::profile
// (qmr_session_profile, `qmamba bench --profile`).
#include "engine.h"

#include <algorithm>
#include <cstdio>
#include <map>

namespace qmr
{
namespace
{

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

std::string Engine::profileLayers(cudaStream_t stream, int iters)
{
    if (iters < 1)
    {
        throw BadInputError("iters must be >= 1");
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
            throw BadInputError("profile " + mPath + ": set the address of " + t.name + " first");
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
