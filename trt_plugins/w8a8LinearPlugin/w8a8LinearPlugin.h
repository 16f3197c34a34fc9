// The plugin QmambaW8A8Linear (w8a8LinearCore.h) behind the plugin API of the TensorRT it is compiled
// against (IPluginV3 for 10+, IPluginV2DynamicExt for 8.5/8.6).
#ifndef QMAMBA_W8A8_LINEAR_PLUGIN_H
#define QMAMBA_W8A8_LINEAR_PLUGIN_H

#include "pluginAdapter.h"
#include "w8a8LinearCore.h"

namespace qmamba
{
using W8A8LinearPlugin = Plugin<W8A8LinearCore>;
using W8A8LinearPluginCreator = PluginCreator<W8A8LinearCore>;
} // namespace qmamba

#endif // QMAMBA_W8A8_LINEAR_PLUGIN_H
