#include "runnerCommon.h"

#include <NvInferVersion.h>

#include <dlfcn.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>

namespace qmr
{

namespace
{
// QMAMBA_TRT_LOG=error|warning|info|verbose (default warning): how much of TensorRT's log is printed, as
// trtexec's --verbose; "verbose" shows the builder's layer, fusion and format decisions.
nvinfer1::ILogger::Severity printedSeverity()
{
    using S = nvinfer1::ILogger::Severity;
    char const* env = std::getenv("QMAMBA_TRT_LOG");
    std::string const level = env ? env : "warning";
    if (level == "error")
    {
        return S::kERROR;
    }
    if (level == "info")
    {
        return S::kINFO;
    }
    if (level == "verbose")
    {
        return S::kVERBOSE;
    }
    return S::kWARNING;
}

char const* severityName(nvinfer1::ILogger::Severity s)
{
    using S = nvinfer1::ILogger::Severity;
    return s <= S::kERROR ? "error" : s == S::kWARNING ? "warning" : s == S::kINFO ? "info" : "verbose";
}
} // namespace

void Logger::log(Severity severity, char const* msg) noexcept
{
    try
    {
        static Severity const printed = printedSeverity();
        if (severity > printed)
        {
            return;
        }
        // Seconds since the first message: where a build spends its time shows in the log itself.
        using Clock = std::chrono::steady_clock;
        static Clock::time_point const start = Clock::now();
        double const seconds = std::chrono::duration<double>(Clock::now() - start).count();
        std::fprintf(stderr, "[TensorRT %s %.3fs] %s\n", severityName(severity), seconds, msg);
        if (severity <= Severity::kERROR)
        {
            std::lock_guard<std::mutex> lock(mMutex);
            mErrors.emplace_back(msg);
        }
    }
    catch (...)
    {
    }
}

std::string Logger::takeErrors()
{
    std::lock_guard<std::mutex> lock(mMutex);
    std::string out;
    for (auto const& e : mErrors)
    {
        out += (out.empty() ? "" : "; ") + e;
    }
    mErrors.clear();
    return out;
}

Logger& Logger::instance()
{
    static Logger logger;
    return logger;
}

void checkCuda(cudaError_t status, char const* what)
{
    if (status != cudaSuccess)
    {
        throw RunnerError(std::string(what) + ": " + cudaGetErrorString(status));
    }
}

void failWithTrtErrors(std::string const& message)
{
    std::string const errors = Logger::instance().takeErrors();
    std::string hint;
    if (errors.find("filterQDQFormats") != std::string::npos)
    {
        // TensorRT 8's Q/DQ rules around plugins: the graph needs the rewrite `qmamba build` makes.
        hint = "; TensorRT 8 takes qmamba's plugins only from a graph rewritten for its Q/DQ rules, as "
               "`qmamba build` does (runtime/build.py trt_graph; `qmamba build --keep-onnx` keeps it; "
               "docs/tensorrt.md)";
    }
    throw RunnerError(errors.empty() ? message + hint : message + " (TensorRT: " + errors + ")" + hint);
}

std::string loadPluginLibrary(std::string const& path)
{
    if (path.empty())
    {
        return "";
    }
    static std::mutex mutex;
    static std::map<std::string, std::string> loaded;
    std::lock_guard<std::mutex> lock(mutex);
    auto it = loaded.find(path);
    if (it != loaded.end())
    {
        return it->second;
    }
    // Global symbols: the plugin library resolves TensorRT's symbols from the libnvinfer already loaded.
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (handle == nullptr)
    {
        char const* err = dlerror();
        throw RunnerError("cannot load plugin library " + path + ": " + (err ? err : "unknown error"));
    }
    using VersionFn = char const* (*) ();
    auto version = reinterpret_cast<VersionFn>(dlsym(handle, "qmamba_plugin_library_version"));
    if (version == nullptr)
    {
        throw BadInputError(path + " is not a qmamba plugin library (no qmamba_plugin_library_version)");
    }
    std::string const v = version();
    std::string const mine = tensorrtVersion();
    // "...; TensorRT 8.6.0 (V2)": the library must be compiled for the TensorRT this runner uses.
    std::string const major = mine.substr(0, mine.find('.'));
    if (v.find(major + ".") == std::string::npos)
    {
        throw BadInputError("plugin library " + path + " (" + v + ") was compiled for another TensorRT than this runner ("
            + mine + ")");
    }
    loaded[path] = v;
    return v;
}

std::string tensorrtVersion()
{
    std::ostringstream os;
    os << "TensorRT " << NV_TENSORRT_MAJOR << '.' << NV_TENSORRT_MINOR << '.' << NV_TENSORRT_PATCH;
    return os.str();
}

GpuInfo currentGpu()
{
    int dev = 0;
    checkCuda(cudaGetDevice(&dev), "cudaGetDevice");
    cudaDeviceProp prop{};
    checkCuda(cudaGetDeviceProperties(&prop, dev), "cudaGetDeviceProperties");
    return GpuInfo{prop.name, prop.major, prop.minor};
}

namespace
{
std::string escape(std::string const& s)
{
    std::string out;
    for (char c : s)
    {
        if (c == '"' || c == '\\')
        {
            out += '\\';
        }
        out += c;
    }
    return out;
}
} // namespace

void writeMetadata(std::string const& path, Metadata const& m)
{
    std::ofstream f(path);
    if (!f)
    {
        throw RunnerError("cannot write " + path);
    }
    f << "{\n";
    size_t i = 0;
    for (auto const& kv : m)
    {
        f << "  \"" << escape(kv.first) << "\": \"" << escape(kv.second) << '"' << (++i < m.size() ? ",\n" : "\n");
    }
    f << "}\n";
}

Metadata readMetadata(std::string const& path)
{
    Metadata m;
    std::ifstream f(path);
    if (!f)
    {
        return m;
    }
    // A flat JSON object of string values (writeMetadata's, or Python's json.dump of it): its strings,
    // in order, alternate key and value whatever the layout.
    std::string const text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    std::vector<std::string> strings;
    std::string cur;
    bool inString = false;
    for (size_t i = 0; i < text.size(); ++i)
    {
        char const c = text[i];
        if (inString && c == '\\' && i + 1 < text.size())
        {
            cur += text[++i];
        }
        else if (c == '"')
        {
            if (inString)
            {
                strings.push_back(cur);
                cur.clear();
            }
            inString = !inString;
        }
        else if (inString)
        {
            cur += c;
        }
    }
    if (inString || strings.size() % 2 != 0)
    {
        throw BadInputError(path + " is not a flat JSON object of strings (the engine metadata qmamba writes)");
    }
    for (size_t i = 0; i + 1 < strings.size(); i += 2)
    {
        m[strings[i]] = strings[i + 1];
    }
    return m;
}

void checkMetadata(std::string const& enginePath, Metadata const& m, std::string const& pluginVersion)
{
    if (m.empty())
    {
        std::fprintf(stderr, "qmamba runner: warning: %s.json is missing; the engine's GPU and versions are not checked\n",
            enginePath.c_str());
        return;
    }
    auto get = [&](char const* key) {
        auto it = m.find(key);
        return it == m.end() ? std::string() : it->second;
    };
    GpuInfo const gpu = currentGpu();
    std::string const cc = std::to_string(gpu.major) + "." + std::to_string(gpu.minor);
    if (get("compute_capability") != cc)
    {
        throw BadInputError("engine " + enginePath + " was built for another GPU (" + get("gpu") + ", compute capability "
            + get("compute_capability") + "); this GPU is " + gpu.name + " (compute capability " + cc
            + "): rebuild the engine on this GPU");
    }
    if (get("tensorrt") != tensorrtVersion())
    {
        throw BadInputError("engine " + enginePath + " was built with " + get("tensorrt") + ", this runner uses "
            + tensorrtVersion() + ": rebuild the engine");
    }
    if (get("plugin_library") != pluginVersion)
    {
        throw BadInputError("engine " + enginePath + " was built with plugin library '" + get("plugin_library")
            + "', the library given is '" + pluginVersion + "': use the library the engine was built with, or rebuild it");
    }
}

std::vector<char> readFile(std::string const& path)
{
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    if (!f)
    {
        throw BadInputError("cannot read " + path);
    }
    std::streamsize const size = f.tellg();
    f.seekg(0);
    std::vector<char> data(static_cast<size_t>(size));
    if (!f.read(data.data(), size))
    {
        throw BadInputError("cannot read " + path);
    }
    return data;
}

} // namespace qmr
