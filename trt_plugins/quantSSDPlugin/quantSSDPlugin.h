// The TensorRT plugin of QuantSSD: the op's core (quantSSDCore.h) behind the plugin API of the TensorRT
// it is compiled against: IPluginV3 (IPluginV3OneCore/Build/Runtime + IPluginCreatorV3One) for
// TensorRT 10 and later, IPluginV2DynamicExt + IPluginCreator for TensorRT 8.5 / 8.6.
#ifndef QMAMBA_QUANT_SSD_PLUGIN_H
#define QMAMBA_QUANT_SSD_PLUGIN_H

#include "quantSSDCore.h"

#include <NvInferVersion.h>

#if NV_TENSORRT_MAJOR >= 10
#include "pluginV3Adapter.h"
#else
#include "pluginV2Adapter.h"
#endif

namespace qmamba
{
#if NV_TENSORRT_MAJOR >= 10
using QuantSSDPlugin = PluginV3<QuantSSDCore>;
using QuantSSDPluginCreator = PluginCreatorV3<QuantSSDCore>;
#else
using QuantSSDPlugin = PluginV2<QuantSSDCore>;
using QuantSSDPluginCreator = PluginCreatorV2<QuantSSDCore>;
#endif
} // namespace qmamba

#endif // QMAMBA_QUANT_SSD_PLUGIN_H
