// Session::bench: the median time of a prefill and the mean time of a decode step, measured with CUDA
// events on the session's stream (the qmamba_trt bench command, qmr_session_bench).
#include "session.h"

#include <algorithm>
#include <vector>

namespace qmr
{

void Session::bench(int batch, int seqlen, int iters, bool useGraph, double& prefillMs, double& decodeMs)
{
    if (iters < 1)
    {
        throw BadInputError("iters must be >= 1");
    }
    std::vector<int64_t> ids(static_cast<size_t>(batch) * seqlen, 1);
    std::vector<float> logits(static_cast<size_t>(batch) * mVocab);
    prefill(ids.data(), batch, seqlen, logits.data()); // warm-up, and the states decode starts from
    cudaEvent_t start{}, stop{};
    checkCuda(cudaEventCreate(&start), "cudaEventCreate");
    checkCuda(cudaEventCreate(&stop), "cudaEventCreate");
    std::vector<float> times;
    for (int i = 0; i < iters; ++i)
    {
        checkCuda(cudaEventRecord(start, mStream), "cudaEventRecord");
        mPrefill->enqueue(mStream);
        checkCuda(cudaEventRecord(stop, mStream), "cudaEventRecord");
        checkCuda(cudaEventSynchronize(stop), "cudaEventSynchronize");
        float ms = 0;
        checkCuda(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
        times.push_back(ms);
    }
    std::sort(times.begin(), times.end());
    prefillMs = times[times.size() / 2];
    // Decode steps back to back: token upload, the step, no host round trip (as a sampler on the GPU would).
    std::vector<int64_t> step(static_cast<size_t>(batch), 1);
    decode(step.data(), nullptr, useGraph); // warm-up (captures the graphs)
    decode(step.data(), nullptr, useGraph);
    checkCuda(cudaStreamSynchronize(mStream), "sync");
    int const steps = std::max(iters, 32);
    checkCuda(cudaEventRecord(start, mStream), "cudaEventRecord");
    for (int i = 0; i < steps; ++i)
    {
        decode(step.data(), nullptr, useGraph);
    }
    checkCuda(cudaEventRecord(stop, mStream), "cudaEventRecord");
    checkCuda(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float total = 0;
    checkCuda(cudaEventElapsedTime(&total, start, stop), "cudaEventElapsedTime");
    decodeMs = total / steps;
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
}

} // namespace qmr
