// The plugin QmambaGatedNorm (gatedNormCore.h) behind the plugin API of the TensorRT it is compiled against
// (IPluginV3 for 10+, IPluginV2DynamicExt for 8.5/8.6). No tensor is int8, so the V2 adapter carries no output
// as int32 words (carriedAsInt32): out leaves it as float32.
#ifndef QMAMBA_GATED_NORM_PLUGIN_H
#define QMAMBA_GATED_NORM_PLUGIN_H

#include "gatedNormCore.h"
#include "pluginAdapter.h"

namespace qmamba
{
using GatedNormPlugin = Plugin<GatedNormCore>;
using GatedNormPluginCreator = PluginCreator<GatedNormCore>;
} // namespace qmamba

#endif // QMAMBA_GATED_NORM_PLUGIN_H
