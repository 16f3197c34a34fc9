#include "session.h"

#include "qmamba_runner.h"

#include <algorithm>
#include <cstring>

namespace qmr
{

DeviceBuffer::DeviceBuffer(size_t bytes)
    : mBytes(bytes)
{
    checkCuda(cudaMalloc(&mPtr, std::max<size_t>(bytes, 1)), "cudaMalloc");
}

DeviceBuffer::~DeviceBuffer()
{
    if (mPtr != nullptr)
    {
        cudaFree(mPtr);
    }
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept
    : mPtr(o.mPtr)
    , mBytes(o.mBytes)
{
    o.mPtr = nullptr;
    o.mBytes = 0;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept
{
    std::swap(mPtr, o.mPtr);
    std::swap(mBytes, o.mBytes);
    return *this;
}

namespace
{

bool isIds(TensorInfo const& t)
{
    return t.isInput && (t.dtype == QMR_INT32 || t.dtype == QMR_INT64) && t.dims.nbDims == 2;
}

bool isLogits(TensorInfo const& t)
{
    return !t.isInput && (t.dtype == QMR_FLOAT || t.dtype == QMR_HALF) && (t.dims.nbDims == 3 || t.dims.nbDims == 2);
}

// int8 states, or (decode engines built with QmambaDecodeMixer) int32 words holding the same bytes: a
// token-id input is int32/int64 of two dimensions, a state of three or more.
bool isState(TensorInfo const& t)
{
    return (t.dtype == QMR_INT8 && t.dims.nbDims >= 2) || (t.dtype == QMR_INT32 && t.dims.nbDims >= 3);
}

std::string only(Engine const& e, bool (*pred)(TensorInfo const&), char const* what)
{
    std::string found;
    for (auto const& t : e.io())
    {
        if (pred(t))
        {
            if (!found.empty())
            {
                throw BadInputError(e.path() + " has more than one " + what + " (" + found + ", " + t.name + ")");
            }
            found = t.name;
        }
    }
    if (found.empty())
    {
        throw BadInputError(e.path() + " has no " + what);
    }
    return found;
}

// Output names that carry the state an input named `in` takes: "<in>_out", "<base>_out.<i>" for
// "<base>.<i>" (qmamba's exporter: conv_state.3 -> conv_state_out.3), "present_*" for "past_*",
// "*_out*" for "*_in*".
std::vector<std::string> outputCandidates(std::string const& in)
{
    std::vector<std::string> c{in + "_out"};
    size_t const dot = in.find('.');
    if (dot != std::string::npos)
    {
        c.push_back(in.substr(0, dot) + "_out" + in.substr(dot));
    }
    if (in.rfind("past_", 0) == 0)
    {
        c.push_back("present_" + in.substr(5));
    }
    size_t const p = in.find("_in");
    if (p != std::string::npos)
    {
        c.push_back(in.substr(0, p) + "_out" + in.substr(p + 3));
    }
    return c;
}

size_t rowBytes(TensorInfo const& t)
{
    size_t n = dtypeSize(t.dtype);
    for (int32_t i = 1; i < t.dims.nbDims; ++i)
    {
        if (t.dims.d[i] < 0)
        {
            throw BadInputError("state " + t.name + " has a dynamic dimension " + std::to_string(i) + " "
                + dimsString(t.dims) + "; only the batch may be dynamic");
        }
        n *= static_cast<size_t>(t.dims.d[i]);
    }
    return n;
}

} // namespace

Session::Session(std::string const& engineDir, std::string const& pluginLibrary, int maxBatch)
    : mMaxBatch(maxBatch)
{
    if (maxBatch < 1)
    {
        throw BadInputError("max_batch must be >= 1, got " + std::to_string(maxBatch));
    }
    mPrefill = std::make_unique<Engine>(engineDir + "/prefill.engine", pluginLibrary);
    mDecode = std::make_unique<Engine>(engineDir + "/decode.engine", pluginLibrary);
    checkCuda(cudaStreamCreateWithFlags(&mStream, cudaStreamNonBlocking), "cudaStreamCreate");
    findRoles();
}

Session::~Session()
{
    clearGraphs();
    if (mStream != nullptr)
    {
        cudaStreamDestroy(mStream);
    }
}

void Session::clearGraphs()
{
    for (auto& kv : mGraphs)
    {
        cudaGraphExecDestroy(kv.second);
    }
    mGraphs.clear();
}

void Session::findRoles()
{
    mPrefillIds = only(*mPrefill, isIds, "token-id input (int32/int64 [batch, seq])");
    mPrefillLogits = only(*mPrefill, isLogits, "logits output (float [batch, seq, vocab])");
    mDecodeIds = only(*mDecode, isIds, "token-id input (int32/int64 [batch, 1])");
    mDecodeLogits = only(*mDecode, isLogits, "logits output (float [batch, 1, vocab])");
    TensorInfo const& logits = mDecode->info(mDecodeLogits);
    mVocab = static_cast<int>(logits.dims.d[logits.dims.nbDims - 1]);
    if (mVocab <= 0)
    {
        throw BadInputError("the vocabulary (last dimension of " + mDecodeLogits + ") must be static");
    }
    std::vector<std::string> prefillStates;
    for (auto const& t : mPrefill->io())
    {
        if (!t.isInput && isState(t))
        {
            prefillStates.push_back(t.name);
        }
    }
    size_t k = 0;
    for (auto const& t : mDecode->io())
    {
        if (!t.isInput || !isState(t))
        {
            continue;
        }
        StatePair s{};
        s.decodeInput = t.name;
        for (auto const& cand : outputCandidates(t.name))
        {
            for (auto const& o : mDecode->io())
            {
                if (!o.isInput && o.name == cand)
                {
                    s.decodeOutput = cand;
                }
            }
        }
        if (s.decodeOutput.empty())
        {
            throw BadInputError(mDecode->path() + ": no output carries state input " + t.name + " (expected one of "
                + outputCandidates(t.name).back() + ", " + t.name + "_out, present_*, *_out*)");
        }
        // The prefill names its state outputs like the decode engine does; else they come in the same order.
        auto same = std::find(prefillStates.begin(), prefillStates.end(), s.decodeOutput);
        if (same != prefillStates.end())
        {
            s.prefillOutput = *same;
        }
        else if (k < prefillStates.size())
        {
            s.prefillOutput = prefillStates[k];
        }
        else
        {
            throw BadInputError(mPrefill->path() + " has no state output for " + s.decodeOutput);
        }
        s.rowBytes = rowBytes(t);
        if (rowBytes(mPrefill->info(s.prefillOutput)) != s.rowBytes)
        {
            throw BadInputError("state " + s.prefillOutput + " of the prefill engine and " + t.name
                + " of the decode engine differ in size");
        }
        s.buf[0] = DeviceBuffer(s.rowBytes * mMaxBatch);
        s.buf[1] = DeviceBuffer(s.rowBytes * mMaxBatch);
        mStateNames += (mStateNames.empty() ? "" : "\n") + t.name;
        mStates.push_back(std::move(s));
        ++k;
    }
    if (k != prefillStates.size())
    {
        throw BadInputError("the prefill engine has " + std::to_string(prefillStates.size())
            + " state outputs, the decode engine " + std::to_string(k) + " state inputs");
    }
    nvinfer1::Dims mn, op, mx;
    mPrefill->profile(mPrefillIds, mn, op, mx);
    if (mMaxBatch > mx.d[0])
    {
        throw BadInputError("max_batch " + std::to_string(mMaxBatch) + " exceeds the prefill engine's profile (batch <= "
            + std::to_string(mx.d[0]) + ")");
    }
    size_t const idSize = dtypeSize(mPrefill->info(mPrefillIds).dtype);
    mPrefillIdsBuf = DeviceBuffer(idSize * mMaxBatch * mx.d[1]);
    size_t const logitsSize = dtypeSize(mPrefill->info(mPrefillLogits).dtype);
    // The prefill may return logits for every position or for the last one only.
    TensorInfo const& pl = mPrefill->info(mPrefillLogits);
    size_t const positions = (pl.dims.nbDims == 3 && pl.dims.d[1] < 0) ? static_cast<size_t>(mx.d[1]) : 1;
    mPrefillLogitsBuf = DeviceBuffer(logitsSize * mMaxBatch * positions * mVocab);
    mDecodeIdsBuf = DeviceBuffer(dtypeSize(mDecode->info(mDecodeIds).dtype) * mMaxBatch);
    mDecodeLogitsBuf = DeviceBuffer(dtypeSize(logits.dtype) * mMaxBatch * mVocab);
}

void Session::uploadIds(Engine& engine, std::string const& name, DeviceBuffer& dev, int64_t const* ids, size_t count)
{
    int const dtype = engine.info(name).dtype;
    size_t const bytes = count * dtypeSize(dtype);
    if (bytes > dev.bytes())
    {
        throw BadInputError("token ids do not fit the buffer of " + name);
    }
    mHostStaging.resize(std::max(mHostStaging.size(), bytes));
    if (dtype == QMR_INT64)
    {
        std::memcpy(mHostStaging.data(), ids, bytes);
    }
    else
    {
        auto* out = reinterpret_cast<int32_t*>(mHostStaging.data());
        for (size_t i = 0; i < count; ++i)
        {
            out[i] = static_cast<int32_t>(ids[i]);
        }
    }
    for (size_t i = 0; i < count; ++i)
    {
        if (ids[i] < 0 || ids[i] >= mVocab)
        {
            throw BadInputError("token id " + std::to_string(ids[i]) + " at position " + std::to_string(i)
                + " is outside the vocabulary [0, " + std::to_string(mVocab) + ")");
        }
    }
    checkCuda(cudaMemcpyAsync(dev.get(), mHostStaging.data(), bytes, cudaMemcpyHostToDevice, mStream), "upload ids");
}

void Session::copyLastLogits(Engine& engine, std::string const& name, int batch, int seqlen, float* out)
{
    nvinfer1::Dims const d = engine.shape(name);
    int const dtype = engine.info(name).dtype;
    size_t const esz = dtypeSize(dtype);
    size_t const positions = d.nbDims == 3 ? static_cast<size_t>(d.d[1]) : 1;
    if (positions != 1 && positions != static_cast<size_t>(seqlen))
    {
        throw BadInputError(name + " has shape " + dimsString(d) + ", expected one or every position");
    }
    DeviceBuffer const& src = (&engine == mPrefill.get()) ? mPrefillLogitsBuf : mDecodeLogitsBuf;
    size_t const row = static_cast<size_t>(mVocab) * esz;
    mHostStaging.resize(std::max(mHostStaging.size(), row * batch));
    checkCuda(cudaMemcpy2DAsync(mHostStaging.data(), row, static_cast<char const*>(src.get()) + (positions - 1) * row,
                  positions * row, row, batch, cudaMemcpyDeviceToHost, mStream),
        "download logits");
    checkCuda(cudaStreamSynchronize(mStream), "logits");
    size_t const n = static_cast<size_t>(batch) * mVocab;
    if (dtype == QMR_FLOAT)
    {
        std::memcpy(out, mHostStaging.data(), n * sizeof(float));
        return;
    }
    // float16 -> float32 on the host (IEEE half: sign, 5-bit exponent, 10-bit mantissa).
    auto const* h = reinterpret_cast<uint16_t const*>(mHostStaging.data());
    for (size_t i = 0; i < n; ++i)
    {
        uint32_t const sign = (h[i] & 0x8000u) << 16;
        uint32_t exp = (h[i] >> 10) & 0x1f;
        uint32_t man = h[i] & 0x3ffu;
        uint32_t bits;
        if (exp == 0x1f)
        {
            bits = sign | 0x7f800000u | (man << 13);
        }
        else if (exp == 0)
        {
            if (man == 0)
            {
                bits = sign;
            }
            else
            {
                exp = 127 - 15 + 1;
                while (!(man & 0x400u))
                {
                    man <<= 1;
                    --exp;
                }
                bits = sign | (exp << 23) | ((man & 0x3ffu) << 13);
            }
        }
        else
        {
            bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
        }
        std::memcpy(&out[i], &bits, 4);
    }
}

void Session::prefill(int64_t const* ids, int batch, int seqlen, float* logitsOut)
{
    if (batch < 1 || batch > mMaxBatch)
    {
        throw BadInputError("batch " + std::to_string(batch) + " is outside [1, " + std::to_string(mMaxBatch)
            + "] (the session's max_batch)");
    }
    nvinfer1::Dims d{};
    d.nbDims = 2;
    d.d[0] = batch;
    d.d[1] = seqlen;
    mPrefill->setInputShape(mPrefillIds, d); // checks the profile's sequence range
    uploadIds(*mPrefill, mPrefillIds, mPrefillIdsBuf, ids, static_cast<size_t>(batch) * seqlen);
    mPrefill->setAddress(mPrefillIds, mPrefillIdsBuf.get());
    mPrefill->setAddress(mPrefillLogits, mPrefillLogitsBuf.get());
    for (auto& s : mStates)
    {
        mPrefill->setAddress(s.prefillOutput, s.buf[0].get());
    }
    mPrefill->enqueue(mStream);
    if (batch != mBatch)
    {
        clearGraphs();
    }
    mBatch = batch;
    mCurrent = 0;
    copyLastLogits(*mPrefill, mPrefillLogits, batch, seqlen, logitsOut);
}

void Session::bindDecode(int from)
{
    nvinfer1::Dims d{};
    d.nbDims = 2;
    d.d[0] = mBatch;
    d.d[1] = 1;
    mDecode->setInputShape(mDecodeIds, d);
    mDecode->setAddress(mDecodeIds, mDecodeIdsBuf.get());
    mDecode->setAddress(mDecodeLogits, mDecodeLogitsBuf.get());
    for (auto& s : mStates)
    {
        nvinfer1::Dims sd = mDecode->info(s.decodeInput).dims;
        sd.d[0] = mBatch;
        mDecode->setInputShape(s.decodeInput, sd);
        mDecode->setAddress(s.decodeInput, s.buf[from].get());
        mDecode->setAddress(s.decodeOutput, s.buf[1 - from].get());
    }
}

cudaGraphExec_t Session::decodeGraph(int from)
{
    auto it = mGraphs.find(from);
    if (it != mGraphs.end())
    {
        return it->second;
    }
    bindDecode(from);
    // TensorRT applies shape and address changes on the first enqueue: run one before capturing. It
    // computes exactly what the graph will (same inputs, other buffers), so it does no harm.
    mDecode->enqueue(mStream);
    cudaGraph_t graph{};
    checkCuda(cudaStreamBeginCapture(mStream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
    try
    {
        mDecode->enqueue(mStream);
    }
    catch (...)
    {
        cudaStreamEndCapture(mStream, &graph);
        if (graph)
        {
            cudaGraphDestroy(graph);
        }
        throw;
    }
    checkCuda(cudaStreamEndCapture(mStream, &graph), "cudaStreamEndCapture");
    cudaGraphExec_t exec{};
    cudaError_t const st = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    checkCuda(st, "cudaGraphInstantiate");
    mGraphs[from] = exec;
    return exec;
}

void Session::decode(int64_t const* ids, float* logitsOut, bool useGraph)
{
    if (mBatch == 0)
    {
        throw BadInputError("decode before prefill: run a prompt first");
    }
    uploadIds(*mDecode, mDecodeIds, mDecodeIdsBuf, ids, static_cast<size_t>(mBatch));
    if (useGraph)
    {
        checkCuda(cudaGraphLaunch(decodeGraph(mCurrent), mStream), "cudaGraphLaunch");
    }
    else
    {
        bindDecode(mCurrent);
        mDecode->enqueue(mStream);
    }
    mCurrent = 1 - mCurrent;
    if (logitsOut != nullptr)
    {
        copyLastLogits(*mDecode, mDecodeLogits, mBatch, 1, logitsOut);
    }
}

void Session::readState(std::string const& name, void* host, size_t bytes) const
{
    for (auto const& s : mStates)
    {
        if (s.decodeInput == name)
        {
            size_t const want = s.rowBytes * mBatch;
            if (bytes != want)
            {
                throw BadInputError("state " + name + " holds " + std::to_string(want) + " bytes for batch "
                    + std::to_string(mBatch) + ", asked for " + std::to_string(bytes));
            }
            checkCuda(cudaStreamSynchronize(mStream), "sync");
            checkCuda(cudaMemcpy(host, s.buf[mCurrent].get(), want, cudaMemcpyDeviceToHost), "read state");
            return;
        }
    }
    throw BadInputError("no state named " + name + " (states: " + mStateNames + ")");
}

} // namespace qmr
