// The C ABI of qmamba_runner.h: each entry point catches every exception and turns it into QMR_BAD_INPUT
// (a BadInputError) or QMR_FAILED plus qmr_last_error(), so callers (ctypes, C) never see a C++ exception or
// an abort.
#include "qmamba_runner.h"

#include "engine.h"
#include "engineBuilder.h"
#include "runnerCommon.h"
#include "session.h"

#include <cstring>
#include <exception>
#include <string>
#include <type_traits>

struct qmr_engine
{
    std::unique_ptr<qmr::Engine> engine;
};

struct qmr_session
{
    std::unique_ptr<qmr::Session> session;
    std::string profileReport; // what qmr_session_profile last returned
};

namespace
{

thread_local std::string tLastError;

template <typename F>
int guarded(F&& f)
{
    try
    {
        tLastError.clear();
        f();
        return QMR_OK;
    }
    catch (qmr::BadInputError const& e)
    {
        tLastError = e.what();
        return QMR_BAD_INPUT;
    }
    catch (std::exception const& e)
    {
        tLastError = e.what();
    }
    catch (...)
    {
        tLastError = "unknown error";
    }
    return QMR_FAILED;
}

void need(void const* p, char const* what)
{
    if (p == nullptr)
    {
        throw qmr::BadInputError(std::string(what) + " is NULL");
    }
}

nvinfer1::Dims toDims(int nbdims, int64_t const* dims)
{
    if (nbdims < 0 || nbdims > nvinfer1::Dims::MAX_DIMS)
    {
        throw qmr::BadInputError("rank " + std::to_string(nbdims) + " is unsupported");
    }
    nvinfer1::Dims d{};
    d.nbDims = nbdims;
    for (int i = 0; i < nbdims; ++i)
    {
        using Dim = std::remove_reference_t<decltype(d.d[0])>;
        d.d[i] = static_cast<Dim>(dims[i]);
    }
    return d;
}

void fromDims(nvinfer1::Dims const& d, int64_t* out)
{
    for (int i = 0; i < 8; ++i)
    {
        out[i] = i < d.nbDims ? d.d[i] : 0;
    }
}

} // namespace

extern "C" {

const char* qmr_last_error(void)
{
    return tLastError.c_str();
}

const char* qmr_tensorrt_version(void)
{
    static std::string const v = qmr::tensorrtVersion();
    return v.c_str();
}

int qmr_build_engine(const char* onnx_path, const char* plugin_library, const qmr_build_options* options,
    const char* engine_path)
{
    return guarded([&] {
        need(onnx_path, "onnx_path");
        need(options, "options");
        need(engine_path, "engine_path");
        qmr::buildEngine(onnx_path, plugin_library ? plugin_library : "", *options, engine_path);
    });
}

int qmr_engine_load(const char* engine_path, const char* plugin_library, qmr_engine** out)
{
    return guarded([&] {
        need(engine_path, "engine_path");
        need(out, "out");
        *out = nullptr;
        auto e = std::make_unique<qmr_engine>();
        e->engine = std::make_unique<qmr::Engine>(engine_path, plugin_library ? plugin_library : "");
        *out = e.release();
    });
}

void qmr_engine_free(qmr_engine* engine)
{
    delete engine;
}

int qmr_engine_num_io(const qmr_engine* engine)
{
    return engine ? static_cast<int>(engine->engine->io().size()) : -1;
}

int qmr_engine_io(const qmr_engine* engine, int index, const char** name, int* is_input, int* dtype, int* nbdims,
    int64_t* dims)
{
    return guarded([&] {
        need(engine, "engine");
        auto const& io = engine->engine->io();
        if (index < 0 || index >= static_cast<int>(io.size()))
        {
            throw qmr::BadInputError("tensor index " + std::to_string(index) + " is out of range");
        }
        auto const& t = io[index];
        *name = t.name.c_str();
        *is_input = t.isInput ? 1 : 0;
        *dtype = t.dtype;
        *nbdims = t.dims.nbDims;
        fromDims(t.dims, dims);
    });
}

int qmr_engine_profile(const qmr_engine* engine, const char* name, int64_t* min, int64_t* opt, int64_t* max)
{
    return guarded([&] {
        need(engine, "engine");
        need(name, "name");
        nvinfer1::Dims a, b, c;
        engine->engine->profile(name, a, b, c);
        fromDims(a, min);
        fromDims(b, opt);
        fromDims(c, max);
    });
}

int qmr_engine_set_input_shape(qmr_engine* engine, const char* name, int nbdims, const int64_t* dims)
{
    return guarded([&] {
        need(engine, "engine");
        need(name, "name");
        engine->engine->setInputShape(name, toDims(nbdims, dims));
    });
}

int qmr_engine_shape(const qmr_engine* engine, const char* name, int* nbdims, int64_t* dims)
{
    return guarded([&] {
        need(engine, "engine");
        need(name, "name");
        nvinfer1::Dims const d = engine->engine->shape(name);
        *nbdims = d.nbDims;
        fromDims(d, dims);
    });
}

int qmr_engine_set_address(qmr_engine* engine, const char* name, void* device_ptr)
{
    return guarded([&] {
        need(engine, "engine");
        need(name, "name");
        engine->engine->setAddress(name, device_ptr);
    });
}

int qmr_engine_enqueue(qmr_engine* engine, void* stream)
{
    return guarded([&] {
        need(engine, "engine");
        engine->engine->enqueue(static_cast<cudaStream_t>(stream));
    });
}

int qmr_session_open(const char* engine_dir, const char* plugin_library, int max_batch, qmr_session** out)
{
    return guarded([&] {
        need(engine_dir, "engine_dir");
        need(out, "out");
        *out = nullptr;
        auto s = std::make_unique<qmr_session>();
        s->session = std::make_unique<qmr::Session>(engine_dir, plugin_library ? plugin_library : "", max_batch);
        *out = s.release();
    });
}

void qmr_session_free(qmr_session* session)
{
    delete session;
}

int qmr_session_vocab(const qmr_session* session)
{
    return session ? session->session->vocab() : -1;
}

int qmr_session_prefill(qmr_session* session, const int64_t* ids, int batch, int seqlen, float* logits_out)
{
    return guarded([&] {
        need(session, "session");
        need(ids, "ids");
        need(logits_out, "logits_out");
        session->session->prefill(ids, batch, seqlen, logits_out);
    });
}

int qmr_session_decode(qmr_session* session, const int64_t* ids, float* logits_out, int use_graph)
{
    return guarded([&] {
        need(session, "session");
        need(ids, "ids");
        session->session->decode(ids, logits_out, use_graph != 0);
    });
}

int qmr_session_bench(qmr_session* session, int batch, int seqlen, int iters, int use_graph, double* prefill_ms,
    double* decode_ms)
{
    return guarded([&] {
        need(session, "session");
        need(prefill_ms, "prefill_ms");
        need(decode_ms, "decode_ms");
        session->session->bench(batch, seqlen, iters, use_graph != 0, *prefill_ms, *decode_ms);
    });
}

int qmr_session_profile(qmr_session* session, int batch, int seqlen, int iters, const char** report)
{
    return guarded([&] {
        need(session, "session");
        need(report, "report");
        session->profileReport = session->session->profile(batch, seqlen, iters);
        *report = session->profileReport.c_str();
    });
}

int qmr_session_read_state(const qmr_session* session, const char* name, void* host, size_t bytes)
{
    return guarded([&] {
        need(session, "session");
        need(name, "name");
        need(host, "host");
        session->session->readState(name, host, bytes);
    });
}

const char* qmr_session_state_names(const qmr_session* session)
{
    return session ? session->session->stateNames().c_str() : "";
}

} // extern "C"
