// ONNX -> TensorRT engine, with the qmamba plugins and one optimization profile over batch and sequence.
#include "engineBuilder.h"

#include "runnerCommon.h"

#include <NvOnnxParser.h>

#include <dlfcn.h>

#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <vector>

namespace qmr
{
namespace
{

std::string describeProfile(qmr_profile const& p)
{
    std::ostringstream os;
    os << "batch " << p.batch_min << ".." << p.batch_opt << ".." << p.batch_max << ", seq " << p.seq_min << ".."
       << p.seq_opt << ".." << p.seq_max;
    return os.str();
}

void checkProfile(qmr_profile const& p)
{
    bool const ok = p.batch_min >= 1 && p.batch_min <= p.batch_opt && p.batch_opt <= p.batch_max && p.seq_min >= 1
        && p.seq_min <= p.seq_opt && p.seq_opt <= p.seq_max;
    if (!ok)
    {
        throw BadInputError("bad profile (" + describeProfile(p) + "): need 1 <= min <= opt <= max for batch and seq");
    }
}

// Dynamic dimension 0 of an input is the batch and dimension 1 the sequence; others must be static.
nvinfer1::Dims profileDims(nvinfer1::ITensor const& input, qmr_profile const& p, int which)
{
    nvinfer1::Dims d = input.getDimensions();
    int64_t const batch[] = {p.batch_min, p.batch_opt, p.batch_max};
    int64_t const seq[] = {p.seq_min, p.seq_opt, p.seq_max};
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        if (d.d[i] >= 0)
        {
            continue;
        }
        if (i > 1)
        {
            throw BadInputError(std::string("input ") + input.getName() + " has a dynamic dimension " + std::to_string(i)
                + "; only dimension 0 (batch) and 1 (sequence) may be dynamic");
        }
        d.d[i] = static_cast<int32_t>(i == 0 ? batch[which] : seq[which]);
    }
    return d;
}

// The ONNX parser, loaded on first use with lazy binding rather than linked: libnvonnxparser pulls in
// libnvinfer_plugin, which names cuBLAS/cuDNN; a deployment without them (a runtime-only TensorRT
// install, or one without those libraries) can still load the runner and run engines.
nvonnxparser::IParser* createOnnxParser(nvinfer1::INetworkDefinition& network, nvinfer1::ILogger& logger)
{
    static void* lib = [] {
        std::string const major = "libnvonnxparser.so." + std::to_string(NV_TENSORRT_MAJOR);
        void* h = dlopen(major.c_str(), RTLD_LAZY | RTLD_GLOBAL);
        return h != nullptr ? h : dlopen("libnvonnxparser.so", RTLD_LAZY | RTLD_GLOBAL);
    }();
    if (lib == nullptr)
    {
        char const* err = dlerror();
        throw RunnerError(std::string("cannot load TensorRT's ONNX parser (libnvonnxparser.so.") + std::to_string(NV_TENSORRT_MAJOR)
            + "): " + (err ? err : "not found") + "; is TensorRT's lib/ on LD_LIBRARY_PATH?");
    }
    using CreateFn = void* (*) (void*, void*, int);
    auto create = reinterpret_cast<CreateFn>(dlsym(lib, "createNvOnnxParser_INTERNAL"));
    if (create == nullptr)
    {
        throw RunnerError("libnvonnxparser has no createNvOnnxParser_INTERNAL");
    }
    return static_cast<nvonnxparser::IParser*>(create(&network, &logger, NV_ONNX_PARSER_VERSION));
}

// The timing cache of an earlier build (trtexec --timingCacheFile): tactic timings are reused, so a rebuild
// of the same layers on the same GPU and TensorRT skips their measurement. A missing file starts empty.
std::unique_ptr<nvinfer1::ITimingCache> loadTimingCache(nvinfer1::IBuilderConfig& config, std::string const& path)
{
    std::vector<char> blob;
    std::ifstream in(path, std::ios::binary);
    if (in)
    {
        blob.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    std::unique_ptr<nvinfer1::ITimingCache> cache{config.createTimingCache(blob.data(), blob.size())};
    if (!cache)
    {
        failWithTrtErrors("cannot read the timing cache " + path);
    }
    // ignoreMismatch false: a cache of another GPU or TensorRT is refused rather than used.
    if (!config.setTimingCache(*cache, false))
    {
        failWithTrtErrors("the timing cache " + path + " is of another GPU or TensorRT version");
    }
    return cache;
}

void saveTimingCache(nvinfer1::IBuilderConfig const& config, std::string const& path)
{
    nvinfer1::ITimingCache const* cache = config.getTimingCache();
    std::unique_ptr<nvinfer1::IHostMemory> blob{cache ? cache->serialize() : nullptr};
    if (!blob)
    {
        throw RunnerError("cannot serialize the timing cache for " + path);
    }
    std::string const tmp = path + ".tmp";
    std::ofstream out(tmp, std::ios::binary);
    out.write(static_cast<char const*>(blob->data()), static_cast<std::streamsize>(blob->size()));
    out.close();
    if (!out || std::rename(tmp.c_str(), path.c_str()) != 0)
    {
        std::remove(tmp.c_str());
        throw RunnerError("cannot write the timing cache " + path);
    }
}

} // namespace

void buildEngine(std::string const& onnxPath, std::string const& pluginLibrary, qmr_build_options const& options,
    std::string const& enginePath)
{
    checkProfile(options.profile);
    std::string const pluginVersion = loadPluginLibrary(pluginLibrary);
    Logger& logger = Logger::instance();
    logger.takeErrors();
    std::unique_ptr<nvinfer1::IBuilder> builder{nvinfer1::createInferBuilder(logger)};
    if (!builder)
    {
        failWithTrtErrors("cannot create a TensorRT builder");
    }
#if NV_TENSORRT_MAJOR < 10
    uint32_t const flags = 1U << static_cast<uint32_t>(nvinfer1::NetworkDefinitionCreationFlag::kEXPLICIT_BATCH);
#else
    uint32_t const flags = 0;
#endif
    std::unique_ptr<nvinfer1::INetworkDefinition> network{builder->createNetworkV2(flags)};
    std::unique_ptr<nvonnxparser::IParser> parser{createOnnxParser(*network, logger)};
    if (!parser)
    {
        failWithTrtErrors("cannot create TensorRT's ONNX parser");
    }
    if (!parser->parseFromFile(onnxPath.c_str(), static_cast<int>(nvinfer1::ILogger::Severity::kWARNING)))
    {
        std::string errors;
        for (int32_t i = 0; i < parser->getNbErrors(); ++i)
        {
            auto const* e = parser->getError(i);
            errors += std::string(i ? "; " : "") + "node " + std::to_string(e->node()) + ": " + e->desc();
        }
        failWithTrtErrors("cannot parse " + onnxPath + ": " + errors);
    }
    std::unique_ptr<nvinfer1::IBuilderConfig> config{builder->createBuilderConfig()};
    if (options.workspace_bytes > 0)
    {
        config->setMemoryPoolLimit(nvinfer1::MemoryPoolType::kWORKSPACE, static_cast<size_t>(options.workspace_bytes));
    }
#if NV_TENSORRT_MAJOR < 10
    // Explicit quantization (Q/DQ) in TensorRT 8 needs INT8 enabled; 10+ takes the types from the network.
    config->setFlag(nvinfer1::BuilderFlag::kINT8);
    if (options.fp16)
    {
        config->setFlag(nvinfer1::BuilderFlag::kFP16);
    }
#endif
    // fp32 layers in fp32, as ONNX Runtime computes them: with TF32 (TensorRT's default on Ampere and
    // later) the Hadamard rotation's inputs lose 13 mantissa bits and the int8 rounding after it flips.
    config->clearFlag(nvinfer1::BuilderFlag::kTF32);
#if NV_TENSORRT_MAJOR < 10
    if (options.no_tactic_libraries)
    {
        // Only the libraries: TensorRT's own convolution sources (edge-mask tables, JIT fusion), through
        // which it also implements the int8 GEMMs of the Q/DQ MatMuls, stay on.
        uint32_t const libraries = 1U << static_cast<uint32_t>(nvinfer1::TacticSource::kCUBLAS)
            | 1U << static_cast<uint32_t>(nvinfer1::TacticSource::kCUBLAS_LT)
            | 1U << static_cast<uint32_t>(nvinfer1::TacticSource::kCUDNN);
        config->setTacticSources(config->getTacticSources() & ~libraries);
    }
#endif
    if (options.set_optimization_level)
    {
        if (options.optimization_level < 0 || options.optimization_level > 5)
        {
            throw BadInputError("optimization level " + std::to_string(options.optimization_level) + " is outside 0..5");
        }
        config->setBuilderOptimizationLevel(options.optimization_level);
    }
    std::string const timingCache = options.timing_cache ? options.timing_cache : "";
    std::unique_ptr<nvinfer1::ITimingCache> cache;
    if (!timingCache.empty())
    {
        cache = loadTimingCache(*config, timingCache);
    }
    nvinfer1::IOptimizationProfile* profile = builder->createOptimizationProfile();
    for (int32_t i = 0; i < network->getNbInputs(); ++i)
    {
        nvinfer1::ITensor* in = network->getInput(i);
        profile->setDimensions(in->getName(), nvinfer1::OptProfileSelector::kMIN, profileDims(*in, options.profile, 0));
        profile->setDimensions(in->getName(), nvinfer1::OptProfileSelector::kOPT, profileDims(*in, options.profile, 1));
        profile->setDimensions(in->getName(), nvinfer1::OptProfileSelector::kMAX, profileDims(*in, options.profile, 2));
    }
    config->addOptimizationProfile(profile);
    std::unique_ptr<nvinfer1::IHostMemory> plan{builder->buildSerializedNetwork(*network, *config)};
    if (!plan || plan->size() == 0)
    {
        failWithTrtErrors("TensorRT could not build an engine from " + onnxPath);
    }
    if (!timingCache.empty())
    {
        saveTimingCache(*config, timingCache);
    }
    std::ofstream out(enginePath, std::ios::binary);
    out.write(static_cast<char const*>(plan->data()), static_cast<std::streamsize>(plan->size()));
    if (!out)
    {
        throw RunnerError("cannot write " + enginePath);
    }
    GpuInfo const gpu = currentGpu();
    writeMetadata(enginePath + ".json",
        Metadata{{"onnx", onnxPath}, {"tensorrt", tensorrtVersion()}, {"plugin_library", pluginVersion},
            {"gpu", gpu.name}, {"compute_capability", std::to_string(gpu.major) + "." + std::to_string(gpu.minor)},
            {"profile", describeProfile(options.profile)}, {"fp16", options.fp16 ? "1" : "0"},
            {"optimization_level", options.set_optimization_level ? std::to_string(options.optimization_level) : "default"},
            {"plan_bytes", std::to_string(plan->size())}});
}

} // namespace qmr
