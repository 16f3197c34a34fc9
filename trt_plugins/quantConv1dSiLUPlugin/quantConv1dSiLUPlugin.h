// The TensorRT plugin of QuantConv1dSiLU: the op's core (quantConv1dSiLUCore.h) behind the plugin API of the TensorRT
// it is compiled against (common/pluginAdapter.h): IPluginV3 (IPluginV3OneCore/Build/Runtime + IPluginCreatorV3One)
// for TensorRT 10 and later, IPluginV2DynamicExt + IPluginCreator for TensorRT 8.5 / 8.6.
#ifndef QMAMBA_QUANT_CONV1D_SILU_PLUGIN_H
#define QMAMBA_QUANT_CONV1D_SILU_PLUGIN_H

#include "pluginAdapter.h"
#include "quantConv1dSiLUCore.h"

namespace qmamba
{
using QuantConv1dSiLUPlugin = Plugin<QuantConv1dSiLUCore>;
using QuantConv1dSiLUPluginCreator = PluginCreator<QuantConv1dSiLUCore>;
} // namespace qmamba

#endif // QMAMBA_QUANT_CONV1D_SILU_PLUGIN_H
