// Session::profile: TensorRT's per-layer times of a prefill and of a decode step (qmr_session_profile).
#include "session.h"

#include <string>
#include <vector>

namespace qmr
{

std::string Session::profile(int batch, int seqlen, int iters)
{
    std::vector<int64_t> ids(static_cast<size_t>(batch) * seqlen, 1);
    std::vector<float> logits(static_cast<size_t>(batch) * mVocab);
    prefill(ids.data(), batch, seqlen, logits.data()); // shapes, addresses and the states decode reads
    clearGraphs(); // profiling replaces the engines' execution contexts, which the graphs captured
    std::string out = "prefill, batch " + std::to_string(batch) + ", seqlen " + std::to_string(seqlen) + ": "
        + mPrefill->profileLayers(mStream, iters);
    bindDecode(mCurrent);
    out += "decode step, batch " + std::to_string(batch) + " (no CUDA graph): " + mDecode->profileLayers(mStream, iters);
    return out;
}

} // namespace qmr
