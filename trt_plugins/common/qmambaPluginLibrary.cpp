// Registration of qmamba's plugins: statically on load (REGISTER_TENSORRT_PLUGIN: dlopen, ctypes,
// `polygraphy --plugins`, `trtexec --staticPlugins`) and through the entry points that
// IPluginRegistry::loadLibrary and `trtexec --dynamicPlugins` look up.
#include "qmambaPluginLibrary.h"

#include "bitsAsFloatPlugin.h"
#include "decodeMixerPlugin.h"
#include "gatedNormPlugin.h"
#include "inProjConvPlugin.h"
#include "qmambaSerialize.h"
#include "qmambaTrtUtils.h"
#include "quantConv1dSiLUPlugin.h"
#include "quantSSDPlugin.h"
#include "w8a8LinearPlugin.h"

#include <NvInferRuntime.h>
#include <NvInferVersion.h>

#include <cmath>
#include <sstream>
#include <string>

#ifndef QMAMBA_VERSION
#define QMAMBA_VERSION "0.0.0"
#endif

using qmamba::QuantConv1dSiLUPluginCreator;
using qmamba::QuantSSDPluginCreator;
using qmamba::DecodeMixerPluginCreator;
using qmamba::GatedNormPluginCreator;
using qmamba::InProjConvPluginCreator;
using qmamba::W8A8LinearPluginCreator;

REGISTER_TENSORRT_PLUGIN(QuantConv1dSiLUPluginCreator);
REGISTER_TENSORRT_PLUGIN(QuantSSDPluginCreator);
// Not exported ops: `qmamba build` puts them into decode graphs (runtime/w8a8_linear.py, runtime/decode_mixer.py)
// and prefill graphs (runtime/prefill_fusion.py).
REGISTER_TENSORRT_PLUGIN(W8A8LinearPluginCreator);
REGISTER_TENSORRT_PLUGIN(DecodeMixerPluginCreator);
REGISTER_TENSORRT_PLUGIN(GatedNormPluginCreator);
REGISTER_TENSORRT_PLUGIN(InProjConvPluginCreator);
#if NV_TENSORRT_MAJOR < 10
// TensorRT 8 only: QuantSSD's y leaves the V2 plugin as int32 words (pluginV2Adapter.h, carriedAsInt32).
using qmamba::BitsAsFloatPluginCreator;
REGISTER_TENSORRT_PLUGIN(BitsAsFloatPluginCreator);
#endif

namespace
{

#if NV_TENSORRT_MAJOR >= 10
using CreatorBase = nvinfer1::IPluginCreatorInterface;
#else
using CreatorBase = nvinfer1::IPluginCreator;
#endif

// loadLibrary refuses a library whose plugins are already registered, and ours registered themselves
// when the library was loaded: drop those registrations so loadLibrary can register these creators.
template <typename Creator>
void dropStaticRegistration(Creator const& mine)
{
    nvinfer1::IPluginRegistry* registry = getPluginRegistry();
    if (registry == nullptr)
    {
        return;
    }
#if NV_TENSORRT_MAJOR >= 10
    auto* registered = registry->getCreator(mine.getPluginName(), mine.getPluginVersion(), "");
#else
    auto* registered = registry->getPluginCreator(mine.getPluginName(), mine.getPluginVersion(), "");
#endif
    if (registered != nullptr && registered != static_cast<CreatorBase const*>(&mine))
    {
        registry->deregisterCreator(*registered);
    }
}

CreatorBase* const* libraryCreators(int32_t& nbCreators)
{
    static QuantConv1dSiLUPluginCreator conv;
    static QuantSSDPluginCreator ssd;
    static W8A8LinearPluginCreator linear;
    static DecodeMixerPluginCreator mixer;
    static GatedNormPluginCreator norm;
    static InProjConvPluginCreator inProjConv;
    dropStaticRegistration(conv);
    dropStaticRegistration(ssd);
    dropStaticRegistration(linear);
    dropStaticRegistration(mixer);
    dropStaticRegistration(norm);
    dropStaticRegistration(inProjConv);
#if NV_TENSORRT_MAJOR < 10
    static BitsAsFloatPluginCreator bits;
    dropStaticRegistration(bits);
    static CreatorBase* const creators[] = {&conv, &ssd, &linear, &mixer, &norm, &inProjConv, &bits};
#else
    static CreatorBase* const creators[] = {&conv, &ssd, &linear, &mixer, &norm, &inProjConv};
#endif
    nbCreators = static_cast<int32_t>(sizeof(creators) / sizeof(creators[0]));
    return creators;
}

template <typename Core>
void describeFields(std::ostringstream& os)
{
    for (size_t i = 0; i < Core::kNB_FIELDS; ++i)
    {
        qmamba::FieldSpec const& f = Core::kFIELDS[i];
        os << Core::kNAME << ' ' << f.name << ' ' << (f.kind == qmamba::FieldKind::kFloat ? "float" : "int") << ' ';
        if (f.required)
        {
            os << "required";
        }
        else if (std::isinf(f.defaultValue))
        {
            os << "default=inf";
        }
        else
        {
            os << "default=" << f.defaultValue;
        }
        os << '\n';
    }
}

} // namespace

extern "C" TENSORRTAPI QMAMBA_PLUGIN_API void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    qmamba::setPluginLogger(finder != nullptr ? finder->findLogger() : nullptr);
}

#if NV_TENSORRT_MAJOR >= 10
extern "C" TENSORRTAPI QMAMBA_PLUGIN_API nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    return libraryCreators(nbCreators);
}
#else
extern "C" TENSORRTAPI QMAMBA_PLUGIN_API nvinfer1::IPluginCreator* const* getPluginCreators(int32_t& nbCreators)
{
    return libraryCreators(nbCreators);
}
#endif

extern "C" const char* qmamba_plugin_library_version(void)
{
    static std::string const version = [] {
        std::ostringstream os;
        os << "qmamba-trt-plugins " << QMAMBA_VERSION << "; format " << qmamba::kSERIAL_FORMAT << "; TensorRT "
           << NV_TENSORRT_MAJOR << '.' << NV_TENSORRT_MINOR << '.' << NV_TENSORRT_PATCH
           << (NV_TENSORRT_MAJOR >= 10 ? " (V3)" : " (V2)");
        return os.str();
    }();
    return version.c_str();
}

extern "C" const char* qmamba_plugin_fields(void)
{
    static std::string const table = [] {
        std::ostringstream os;
        describeFields<qmamba::QuantConv1dSiLUCore>(os);
        describeFields<qmamba::QuantSSDCore>(os);
        describeFields<qmamba::W8A8LinearCore>(os);
        describeFields<qmamba::DecodeMixerCore>(os);
        describeFields<qmamba::GatedNormCore>(os);
        describeFields<qmamba::InProjConvCore>(os);
#if NV_TENSORRT_MAJOR < 10
        describeFields<qmamba::BitsAsFloatCore>(os);
#endif
        return os.str();
    }();
    return table.c_str();
}
