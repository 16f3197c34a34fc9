// qmamba's TensorRT runner: a C ABI over TensorRT's C++ API (8.6 and 10+), for Python (ctypes, see
// runtime/trt_runner.py), Polygraphy and C/C++ deployments. Every function returns QMR_OK (0) on success,
// QMR_BAD_INPUT (-2) when what it was given cannot be taken (an argument, a shape outside the profile, an
// engine for another GPU, an empty or truncated engine file) or QMR_FAILED (-1) when the work itself failed
// (CUDA, TensorRT, a file that cannot be written), each with a readable message in qmr_last_error(); nothing
// aborts the process.
#ifndef QMAMBA_RUNNER_H
#define QMAMBA_RUNNER_H

#include <stddef.h>
#include <stdint.h>

// The library is built with hidden symbols; only these functions are exported.
#if defined(__GNUC__)
#define QMR_API __attribute__((visibility("default")))
#else
#define QMR_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

enum qmr_status { QMR_OK = 0, QMR_FAILED = -1, QMR_BAD_INPUT = -2 };

// Message of the last failure on the calling thread ("" if none).
QMR_API const char* qmr_last_error(void);
// "TensorRT <major.minor.patch>" of the library this runner was compiled against.
QMR_API const char* qmr_tensorrt_version(void);

// Element types of engine tensors (the same codes the Python wrapper maps to numpy).
enum qmr_dtype { QMR_FLOAT = 0, QMR_HALF = 1, QMR_INT8 = 2, QMR_INT32 = 3, QMR_INT64 = 4, QMR_BOOL = 5, QMR_OTHER = 99 };

// One optimization profile: every dynamic input dimension 0 is the batch, dimension 1 the sequence.
typedef struct qmr_profile {
  int64_t batch_min, batch_opt, batch_max;
  int64_t seq_min, seq_opt, seq_max;
} qmr_profile;

typedef struct qmr_build_options {
  qmr_profile profile;
  int32_t fp16;                 // allow fp16 kernels for the float parts
  int32_t no_tactic_libraries;  // exclude cuBLAS / cuBLASLt / cuDNN tactics (a TensorRT install without them)
  int64_t workspace_bytes;      // 0: TensorRT's default
  int32_t set_optimization_level;  // 0 (zero-initialized options): TensorRT's default level (3)
  int32_t optimization_level;   // 0..5 when set (trtexec --builderOptimizationLevel): lower levels time
                                // fewer tactics and build faster
  const char* timing_cache;     // NULL or a file: read when it exists, written back after the build
} qmr_build_options;

// ONNX file -> serialized engine at engine_path, plus engine_path + ".json" (TensorRT and plugin library
// versions, GPU, profile) which qmr_engine_load checks. plugin_library may be NULL when the model has no
// custom ops.
QMR_API int qmr_build_engine(const char* onnx_path, const char* plugin_library, const qmr_build_options* options,
                     const char* engine_path);

// ---- one engine: generic tensors, for Python/Polygraphy -----------------------------------------------
typedef struct qmr_engine qmr_engine;

// Loads the plugin library, checks engine_path + ".json" against this GPU, TensorRT and plugin library
// (a clear error for an engine of another GPU or library version), deserializes, makes a context.
QMR_API int qmr_engine_load(const char* engine_path, const char* plugin_library, qmr_engine** out);
QMR_API void qmr_engine_free(qmr_engine* engine);
QMR_API int qmr_engine_num_io(const qmr_engine* engine);
// dims: 8 entries, -1 for dynamic ones.
QMR_API int qmr_engine_io(const qmr_engine* engine, int index, const char** name, int* is_input, int* dtype, int* nbdims,
                  int64_t* dims);
// The profile's min / opt / max of an input (8 entries each).
QMR_API int qmr_engine_profile(const qmr_engine* engine, const char* name, int64_t* min, int64_t* opt, int64_t* max);
// Refuses shapes outside the profile with the name, dimension and range.
QMR_API int qmr_engine_set_input_shape(qmr_engine* engine, const char* name, int nbdims, const int64_t* dims);
// Shape of any tensor once all input shapes are set.
QMR_API int qmr_engine_shape(const qmr_engine* engine, const char* name, int* nbdims, int64_t* dims);
QMR_API int qmr_engine_set_address(qmr_engine* engine, const char* name, void* device_ptr);
// Queues the engine on stream (a cudaStream_t; NULL = legacy default stream).
QMR_API int qmr_engine_enqueue(qmr_engine* engine, void* stream);

// ---- a language model: prefill.engine + decode.engine in one directory -----------------------------
typedef struct qmr_session qmr_session;

// Loads ENGINE_DIR/prefill.engine and ENGINE_DIR/decode.engine and allocates device states for
// max_batch rows (states stay on the device between calls).
QMR_API int qmr_session_open(const char* engine_dir, const char* plugin_library, int max_batch, qmr_session** out);
QMR_API void qmr_session_free(qmr_session* session);
QMR_API int qmr_session_vocab(const qmr_session* session);
// ids: host [batch, seqlen]; logits_out: host [batch, vocab] float32, the last position's logits.
QMR_API int qmr_session_prefill(qmr_session* session, const int64_t* ids, int batch, int seqlen, float* logits_out);
// One token per row (the batch of the last prefill); use_graph replays a captured CUDA graph.
QMR_API int qmr_session_decode(qmr_session* session, const int64_t* ids, float* logits_out, int use_graph);
// Device-side timings: prefill of [batch, seqlen] (median ms over iters) and decode ms per step.
QMR_API int qmr_session_bench(qmr_session* session, int batch, int seqlen, int iters, int use_graph, double* prefill_ms,
                      double* decode_ms);
// TensorRT's layer profiler over a prefill of [batch, seqlen] and a decode step (iters runs each, no CUDA
// graph): one line per layer, slowest first. *report stays valid until the next
// qmr_session_profile call on the same qmr_session.
QMR_API int qmr_session_profile(qmr_session* session, int batch, int seqlen, int iters, const char** report);
// Copies one state tensor (as the decode engine names its input) of the current batch to host memory.
QMR_API int qmr_session_read_state(const qmr_session* session, const char* name, void* host, size_t bytes);
// Names of the decode engine's state inputs, '\n'-separated.
QMR_API const char* qmr_session_state_names(const qmr_session* session);

#ifdef __cplusplus
}
#endif

#endif  // QMAMBA_RUNNER_H
