// The TensorRT plugin of QuantConv1dSiLU: the op's core (quantConv1dSiLUCore.h) behind the plugin API of the TensorRT
// it is compiled against: IPluginV3 (IPluginV3OneCore/Build/Runtime + IPluginCreatorV3One) for
// TensorRT 10 and later, IPluginV2DynamicExt + IPluginCreator for TensorRT 8.5 / 8.6.
#ifndef QMAMBA_QUANT_CONV1D_SILU_PLUGIN_H
#define QMAMBA_QUANT_CONV1D_SILU_PLUGIN_H

#include "quantConv1dSiLUCore.h"

#include <NvInferVersion.h>

#if NV_TENSORRT_MAJOR >= 10
#include "pluginV3Adapter.h"
#else
#include "pluginV2Adapter.h"
#endif

namespace qmamba
{
#if NV_TENSORRT_MAJOR >= 10
using QuantConv1dSiLUPlugin = PluginV3<QuantConv1dSiLUCore>;
using QuantConv1dSiLUPluginCreator = PluginCreatorV3<QuantConv1dSiLUCore>;
#else
using QuantConv1dSiLUPlugin = PluginV2<QuantConv1dSiLUCore>;
using QuantConv1dSiLUPluginCreator = PluginCreatorV2<QuantConv1dSiLUCore>;
#endif
} // namespace qmamba

#endif // QMAMBA_QUANT_CONV1D_SILU_PLUGIN_H
