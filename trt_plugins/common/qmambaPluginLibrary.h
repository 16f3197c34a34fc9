// C entry points of libqmamba_trt_plugins.so beside TensorRT's own (getCreators / getPluginCreators,
// setLoggerFinder): what the runner and tests ask the library about itself.
#ifndef QMAMBA_PLUGIN_LIBRARY_H
#define QMAMBA_PLUGIN_LIBRARY_H

// The library is built with hidden symbols; these and TensorRT's entry points are exported.
#if defined(__GNUC__)
#define QMAMBA_PLUGIN_API __attribute__((visibility("default")))
#else
#define QMAMBA_PLUGIN_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

// "qmamba-trt-plugins <version>; format <serialization format>; TensorRT <major.minor.patch> (V2|V3)":
// the version an engine's plugins were built with must match the library that runs it.
QMAMBA_PLUGIN_API const char* qmamba_plugin_library_version(void);

// The creators' field tables, one line per field: "<plugin> <field> <float|int> <required|default=<v>>".
QMAMBA_PLUGIN_API const char* qmamba_plugin_fields(void);

#ifdef __cplusplus
}
#endif

#endif // QMAMBA_PLUGIN_LIBRARY_H
