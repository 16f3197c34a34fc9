// A do-nothing IPluginV2DynamicExt for scripts/trt86_probe.py: its input and output types are fields, so
// small ONNX graphs can ask which type arrangements around a plugin TensorRT 8.6's explicit-quantization
// builder accepts (int8 from QuantizeLinear, float outputs, int8 between plugins, int8 network I/O).
// Not part of the product. Every type TensorRT proposes and every configuration it settles on is printed
// to stderr, prefixed "qmprobe".
//   fields: in_types, out_types (int32 arrays of nvinfer1::DataType: 0 float, 1 half, 2 int8, 3 int32;
//           -1 at an output: float, half or int8 accepted, declared float)
//   outputs have the shape of input 0; enqueue zero-fills them.
#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace
{
using namespace nvinfer1;

char const* typeName(DataType t)
{
    switch (t)
    {
    case DataType::kFLOAT: return "float";
    case DataType::kHALF: return "half";
    case DataType::kINT8: return "int8";
    case DataType::kINT32: return "int32";
    case DataType::kBOOL: return "bool";
    default: return "other";
    }
}

size_t typeSize(DataType t)
{
    switch (t)
    {
    case DataType::kFLOAT:
    case DataType::kINT32: return 4;
    case DataType::kHALF: return 2;
    default: return 1;
    }
}

constexpr int kANY = -1;
int gQueries = 0;

class Probe : public IPluginV2DynamicExt
{
public:
    Probe(std::vector<int> in, std::vector<int> out)
        : mIn(std::move(in))
        , mOut(std::move(out))
    {
    }

    char const* getPluginType() const noexcept override { return "QmProbe"; }
    char const* getPluginVersion() const noexcept override { return "1"; }
    void setPluginNamespace(char const* ns) noexcept override { mNs = ns ? ns : ""; }
    char const* getPluginNamespace() const noexcept override { return mNs.c_str(); }
    int32_t getNbOutputs() const noexcept override { return static_cast<int32_t>(mOut.size()); }
    int32_t initialize() noexcept override { return 0; }
    void terminate() noexcept override {}
    void destroy() noexcept override { delete this; }
    IPluginV2DynamicExt* clone() const noexcept override
    {
        auto* p = new Probe(mIn, mOut);
        p->mNs = mNs;
        return p;
    }

    DataType getOutputDataType(int32_t i, DataType const*, int32_t) const noexcept override
    {
        return mOut[i] == kANY ? DataType::kFLOAT : static_cast<DataType>(mOut[i]);
    }

    DimsExprs getOutputDimensions(int32_t, DimsExprs const* inputs, int32_t, IExprBuilder&) noexcept override
    {
        return inputs[0];
    }

    bool supportsFormatCombination(int32_t pos, PluginTensorDesc const* inOut, int32_t nbInputs, int32_t) noexcept override
    {
        int const want = pos < nbInputs ? mIn[pos] : mOut[pos - nbInputs];
        DataType const t = inOut[pos].type;
        bool const ok = inOut[pos].format == TensorFormat::kLINEAR
            && (want == kANY ? (t == DataType::kFLOAT || t == DataType::kHALF || t == DataType::kINT8)
                             : t == static_cast<DataType>(want));
        if (gQueries++ < 400)
        {
            std::fprintf(stderr, "qmprobe query pos %d type %s format %d -> %s\n", pos, typeName(t),
                static_cast<int>(inOut[pos].format), ok ? "yes" : "no");
        }
        return ok;
    }

    void configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbIn, DynamicPluginTensorDesc const* out,
        int32_t nbOut) noexcept override
    {
        std::string s = "qmprobe configured: in";
        for (int32_t i = 0; i < nbIn; ++i)
        {
            s += std::string(" ") + typeName(in[i].desc.type);
        }
        s += " | out";
        for (int32_t i = 0; i < nbOut; ++i)
        {
            s += std::string(" ") + typeName(out[i].desc.type);
        }
        std::fprintf(stderr, "%s\n", s.c_str());
    }

    size_t getWorkspaceSize(PluginTensorDesc const*, int32_t, PluginTensorDesc const*, int32_t) const noexcept override
    {
        return 0;
    }

    int32_t enqueue(PluginTensorDesc const*, PluginTensorDesc const* outputDesc, void const* const*,
        void* const* outputs, void*, cudaStream_t stream) noexcept override
    {
        for (size_t i = 0; i < mOut.size(); ++i)
        {
            size_t n = typeSize(outputDesc[i].type);
            for (int32_t d = 0; d < outputDesc[i].dims.nbDims; ++d)
            {
                n *= static_cast<size_t>(outputDesc[i].dims.d[d]);
            }
            if (cudaMemsetAsync(outputs[i], 0, n, stream) != cudaSuccess)
            {
                return -1;
            }
        }
        return 0;
    }

    size_t getSerializationSize() const noexcept override { return (2 + mIn.size() + mOut.size()) * sizeof(int); }
    void serialize(void* buffer) const noexcept override
    {
        int* p = static_cast<int*>(buffer);
        *p++ = static_cast<int>(mIn.size());
        *p++ = static_cast<int>(mOut.size());
        for (int v : mIn)
        {
            *p++ = v;
        }
        for (int v : mOut)
        {
            *p++ = v;
        }
    }

private:
    std::vector<int> mIn, mOut;
    std::string mNs;
};

class ProbeCreator : public IPluginCreator
{
public:
    ProbeCreator()
    {
        mFields = {PluginField{"in_types", nullptr, PluginFieldType::kINT32, 0},
            PluginField{"out_types", nullptr, PluginFieldType::kINT32, 0}};
        mCollection.nbFields = static_cast<int32_t>(mFields.size());
        mCollection.fields = mFields.data();
    }
    char const* getPluginName() const noexcept override { return "QmProbe"; }
    char const* getPluginVersion() const noexcept override { return "1"; }
    PluginFieldCollection const* getFieldNames() noexcept override { return &mCollection; }
    void setPluginNamespace(char const* ns) noexcept override { mNs = ns ? ns : ""; }
    char const* getPluginNamespace() const noexcept override { return mNs.c_str(); }

    IPluginV2* createPlugin(char const*, PluginFieldCollection const* fc) noexcept override
    {
        std::vector<int> in, out;
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
        {
            PluginField const& f = fc->fields[i];
            auto const* v = static_cast<int32_t const*>(f.data);
            std::vector<int>& dst = std::strcmp(f.name, "in_types") == 0 ? in : out;
            dst.assign(v, v + f.length);
        }
        if (in.empty() || out.empty())
        {
            std::fprintf(stderr, "qmprobe: in_types and out_types are required\n");
            return nullptr;
        }
        return new Probe(in, out);
    }

    IPluginV2* deserializePlugin(char const*, void const* data, size_t) noexcept override
    {
        int const* p = static_cast<int const*>(data);
        int const nIn = p[0], nOut = p[1];
        return new Probe(std::vector<int>(p + 2, p + 2 + nIn), std::vector<int>(p + 2 + nIn, p + 2 + nIn + nOut));
    }

private:
    std::vector<PluginField> mFields;
    PluginFieldCollection mCollection{};
    std::string mNs;
};

} // namespace

REGISTER_TENSORRT_PLUGIN(ProbeCreator);

// The runner loads a plugin library only if it names itself and its TensorRT major version.
extern "C" __attribute__((visibility("default"))) char const* qmamba_plugin_library_version()
{
    return "qmprobe; TensorRT 8.6 (V2)";
}
