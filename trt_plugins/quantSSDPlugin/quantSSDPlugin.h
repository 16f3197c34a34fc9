// The TensorRT plugin of QuantSSD: the op's core (quantSSDCore.h) behind the plugin API of the TensorRT
// it is compiled against (common/pluginAdapter.h): IPluginV3 (IPluginV3OneCore/Build/Runtime + IPluginCreatorV3One)
// for TensorRT 10 and later, IPluginV2DynamicExt + IPluginCreator for TensorRT 8.5 / 8.6.
#ifndef QMAMBA_QUANT_SSD_PLUGIN_H
#define QMAMBA_QUANT_SSD_PLUGIN_H

#include "pluginAdapter.h"
#include "quantSSDCore.h"

namespace qmamba
{
using QuantSSDPlugin = Plugin<QuantSSDCore>;
using QuantSSDPluginCreator = PluginCreator<QuantSSDCore>;
} // namespace qmamba

#endif // QMAMBA_QUANT_SSD_PLUGIN_H
