// One deserialized engine and its execution context, addressed by tensor names.
#ifndef QMAMBA_ENGINE_H
#define QMAMBA_ENGINE_H

#include "runnerCommon.h"

#include <NvInfer.h>

#include <memory>
#include <string>
#include <vector>

namespace qmr
{

struct TensorInfo
{
    std::string name;
    bool isInput;
    int dtype; // qmr_dtype
    nvinfer1::Dims dims; // -1 for dynamic
};

size_t dtypeSize(int dtype);

class Engine
{
public:
    Engine(std::string const& enginePath, std::string const& pluginLibrary);

    std::vector<TensorInfo> const& io() const { return mIo; }
    TensorInfo const& info(std::string const& name) const;
    void profile(std::string const& name, nvinfer1::Dims& min, nvinfer1::Dims& opt, nvinfer1::Dims& max) const;
    // Checks the shape against the tensor's rank, static dims and the profile, then sets it.
    void setInputShape(std::string const& name, nvinfer1::Dims const& dims);
    nvinfer1::Dims shape(std::string const& name) const;
    size_t bytes(std::string const& name) const; // of the current shape
    void setAddress(std::string const& name, void* ptr);
    void enqueue(cudaStream_t stream);
    // Runs the engine `iters` times under TensorRT's layer profiler (no CUDA graph, synchronized after
    // each run) and returns one line per layer: mean ms, share of the total, TensorRT's layer name;
    // slowest first. The execution context is replaced (CUDA graphs captured from it are void).
    // (engineProfile.cpp)
    std::string profileLayers(cudaStream_t stream, int iters);
    std::string const& path() const { return mPath; }

private:
    std::string mPath;
    std::unique_ptr<nvinfer1::IRuntime> mRuntime;
    std::unique_ptr<nvinfer1::ICudaEngine> mEngine;
    std::unique_ptr<nvinfer1::IExecutionContext> mContext;
    std::vector<TensorInfo> mIo;
};

std::string dimsString(nvinfer1::Dims const& d);

} // namespace qmr

#endif // QMAMBA_ENGINE_H
