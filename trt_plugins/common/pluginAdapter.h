// The plugin API of the TensorRT qmamba is compiled against, for every op: Plugin<Core> and
// PluginCreator<Core> are IPluginV3 (IPluginV3OneCore/Build/Runtime + IPluginCreatorV3One) for
// TensorRT 10 and later, IPluginV2DynamicExt + IPluginCreator for TensorRT 8.5 / 8.6.
#ifndef QMAMBA_PLUGIN_ADAPTER_H
#define QMAMBA_PLUGIN_ADAPTER_H

#include <NvInferVersion.h>

#if NV_TENSORRT_MAJOR >= 10
#include "pluginV3Adapter.h"
#else
#include "pluginV2Adapter.h"
#endif

namespace qmamba
{
#if NV_TENSORRT_MAJOR >= 10
template <typename Core>
using Plugin = PluginV3<Core>;
template <typename Core>
using PluginCreator = PluginCreatorV3<Core>;
#else
template <typename Core>
using Plugin = PluginV2<Core>;
template <typename Core>
using PluginCreator = PluginCreatorV2<Core>;
#endif
} // namespace qmamba

#endif // QMAMBA_PLUGIN_ADAPTER_H
