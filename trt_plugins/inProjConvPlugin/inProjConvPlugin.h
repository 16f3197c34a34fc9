// The TensorRT plugin of QmambaInProjConv: its core (inProjConvCore.h) behind the plugin API of the TensorRT it is
// compiled against (common/pluginAdapter.h): IPluginV3 for TensorRT 10 and later, IPluginV2DynamicExt for 8.5 / 8.6.
#ifndef QMAMBA_IN_PROJ_CONV_PLUGIN_H
#define QMAMBA_IN_PROJ_CONV_PLUGIN_H

#include "inProjConvCore.h"
#include "pluginAdapter.h"

namespace qmamba
{
using InProjConvPlugin = Plugin<InProjConvCore>;
using InProjConvPluginCreator = PluginCreator<InProjConvCore>;
} // namespace qmamba

#endif // QMAMBA_IN_PROJ_CONV_PLUGIN_H
