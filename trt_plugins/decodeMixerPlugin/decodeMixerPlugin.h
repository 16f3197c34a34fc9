// The plugin QmambaDecodeMixer (decodeMixerCore.h) behind the plugin API of the TensorRT it is compiled
// against (IPluginV3 for 10+, IPluginV2DynamicExt for 8.5/8.6). No input is int8, so the V2 adapter
// carries no output as int32 words (carriedAsInt32): gated leaves it as float32.
#ifndef QMAMBA_DECODE_MIXER_PLUGIN_H
#define QMAMBA_DECODE_MIXER_PLUGIN_H

#include "decodeMixerCore.h"
#include "pluginAdapter.h"

namespace qmamba
{
using DecodeMixerPlugin = Plugin<DecodeMixerCore>;
using DecodeMixerPluginCreator = PluginCreator<DecodeMixerCore>;
} // namespace qmamba

#endif // QMAMBA_DECODE_MIXER_PLUGIN_H
