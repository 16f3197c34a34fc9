// Shared pieces of the runner: errors, the TensorRT logger, CUDA checks, plugin library loading and
// the engine's metadata file (what it was built with and for).
#ifndef QMAMBA_RUNNER_COMMON_H
#define QMAMBA_RUNNER_COMMON_H

#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace qmr
{

class RunnerError : public std::runtime_error
{
public:
    using std::runtime_error::runtime_error;
};

// What the caller gave that the runner cannot take: an argument, a shape outside the engine's profile, a batch
// above the session's, an engine or plugin library made for another GPU, TensorRT or qmamba, an empty,
// truncated or unreadable file. The C ABI returns QMR_BAD_INPUT for it (every other RunnerError: QMR_FAILED).
class BadInputError : public RunnerError
{
public:
    using RunnerError::RunnerError;
};

// Prints warnings and errors to stderr and keeps the recent errors, so that a failed TensorRT call is
// reported with what TensorRT (and the plugins, through getLogger()) said about it.
class Logger : public nvinfer1::ILogger
{
public:
    void log(Severity severity, char const* msg) noexcept override;
    // The errors logged since the last call, joined by "; " (empty if none).
    std::string takeErrors();
    static Logger& instance();

private:
    std::mutex mMutex;
    std::vector<std::string> mErrors;
};

// Throws RunnerError("<what>: <CUDA error>") unless status is cudaSuccess.
void checkCuda(cudaError_t status, char const* what);

// Throws RunnerError with `message` and the TensorRT errors logged meanwhile.
[[noreturn]] void failWithTrtErrors(std::string const& message);

// dlopen()s the plugin library once (its creators register themselves) and returns its version string
// (qmamba_plugin_library_version), or "" when path is empty.
std::string loadPluginLibrary(std::string const& path);

std::string tensorrtVersion();

// "<name>|<major>.<minor>" of the current GPU.
struct GpuInfo
{
    std::string name;
    int major{0};
    int minor{0};
};
GpuInfo currentGpu();

// The metadata file beside an engine (engine + ".json"): flat string values only.
using Metadata = std::map<std::string, std::string>;
void writeMetadata(std::string const& path, Metadata const& m);
Metadata readMetadata(std::string const& path); // empty map if there is no file
// Checks an engine's metadata against this GPU, TensorRT and plugin library; throws a clear error.
void checkMetadata(std::string const& enginePath, Metadata const& m, std::string const& pluginVersion);

std::vector<char> readFile(std::string const& path);

} // namespace qmr

#endif // QMAMBA_RUNNER_COMMON_H
