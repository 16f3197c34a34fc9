#ifndef QMAMBA_ENGINE_BUILDER_H
#define QMAMBA_ENGINE_BUILDER_H

#include "qmamba_runner.h"

#include <string>

namespace qmr
{
// Parses onnxPath (plugins from pluginLibrary), builds with one profile, writes the plan and its metadata.
void buildEngine(std::string const& onnxPath, std::string const& pluginLibrary, qmr_build_options const& options,
    std::string const& enginePath);
} // namespace qmr

#endif // QMAMBA_ENGINE_BUILDER_H
