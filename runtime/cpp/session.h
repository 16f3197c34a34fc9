// A language model served by two engines: prefill (whole prompt, zero states) and decode (one token
// with the previous states). States stay on the device in two buffer sets that decode steps
// alternate between; decode steps can replay a captured CUDA graph (one per buffer set and batch).
#ifndef QMAMBA_SESSION_H
#define QMAMBA_SESSION_H

#include "engine.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace qmr
{

// A device buffer freed on destruction.
class DeviceBuffer
{
public:
    DeviceBuffer() = default;
    explicit DeviceBuffer(size_t bytes);
    ~DeviceBuffer();
    DeviceBuffer(DeviceBuffer&& o) noexcept;
    DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
    DeviceBuffer(DeviceBuffer const&) = delete;
    DeviceBuffer& operator=(DeviceBuffer const&) = delete;
    void* get() const { return mPtr; }
    size_t bytes() const { return mBytes; }

private:
    void* mPtr{nullptr};
    size_t mBytes{0};
};

// One recurrent state: the decode input that takes it, the decode and prefill outputs that produce it.
struct StatePair
{
    std::string decodeInput;
    std::string decodeOutput;
    std::string prefillOutput;
    size_t rowBytes;        // bytes of one batch row
    DeviceBuffer buf[2];    // the two buffer sets
};

class Session
{
public:
    Session(std::string const& engineDir, std::string const& pluginLibrary, int maxBatch);
    ~Session();

    int vocab() const { return mVocab; }
    void prefill(int64_t const* ids, int batch, int seqlen, float* logitsOut);
    void decode(int64_t const* ids, float* logitsOut, bool useGraph);
    // The median time of a prefill of [batch, seqlen] and the mean time of a decode step (sessionBench.cpp).
    void bench(int batch, int seqlen, int iters, bool useGraph, double& prefillMs, double& decodeMs);
    // TensorRT's per-layer times of a prefill of [batch, seqlen] and of a decode step, no graph (sessionProfile.cpp).
    std::string profile(int batch, int seqlen, int iters);
    void readState(std::string const& name, void* host, size_t bytes) const;
    std::string const& stateNames() const { return mStateNames; }

private:
    void findRoles();
    void uploadIds(Engine& engine, std::string const& name, DeviceBuffer& dev, int64_t const* ids, size_t count);
    void bindDecode(int from);
    void copyLastLogits(Engine& engine, std::string const& name, int batch, int seqlen, float* out);
    cudaGraphExec_t decodeGraph(int from);
    void clearGraphs();

    std::unique_ptr<Engine> mPrefill;
    std::unique_ptr<Engine> mDecode;
    int mMaxBatch;
    int mVocab{0};
    std::string mPrefillIds, mPrefillLogits, mDecodeIds, mDecodeLogits;
    std::vector<StatePair> mStates;
    std::string mStateNames;
    DeviceBuffer mPrefillIdsBuf, mPrefillLogitsBuf, mDecodeIdsBuf, mDecodeLogitsBuf;
    std::vector<char> mHostStaging;
    cudaStream_t mStream{nullptr};
    int mBatch{0};   // rows of the current states (0: no prefill yet)
    int mCurrent{0}; // the buffer set holding the current states
    std::map<int, cudaGraphExec_t> mGraphs; // key: buffer set read by the step (batch is mBatch)
};

} // namespace qmr

#endif // QMAMBA_SESSION_H
