// The TensorRT 8.5/8.6 plugin QmambaBitsAsFloat (bitsAsFloatCore.h) behind IPluginV2DynamicExt: it turns
// the int32 words the V2 adapter carries QuantSSD's y in back into float values. TensorRT 10 and later
// take QuantSSD's float y directly and do not register it.
#ifndef QMAMBA_BITS_AS_FLOAT_PLUGIN_H
#define QMAMBA_BITS_AS_FLOAT_PLUGIN_H

#include "bitsAsFloatCore.h"
#include "pluginAdapter.h"

namespace qmamba
{
using BitsAsFloatPlugin = Plugin<BitsAsFloatCore>;
using BitsAsFloatPluginCreator = PluginCreator<BitsAsFloatCore>;
} // namespace qmamba

#endif // QMAMBA_BITS_AS_FLOAT_PLUGIN_H
