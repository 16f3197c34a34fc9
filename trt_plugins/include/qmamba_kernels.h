// qmamba CUDA kernels: a C ABI with no TensorRT dependency.
//
// Every launcher validates its arguments first and returns QMAMBA_ERR_* with a readable message
// (qmamba_last_error()) instead of launching; on success the work is queued on `stream` and
// QMAMBA_OK is returned (launch errors are reported as QMAMBA_ERR_CUDA). The math is defined by
// docs/ops.md; tensor layouts are those of the tables there, all contiguous, row-major.
#ifndef QMAMBA_KERNELS_H
#define QMAMBA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct CUstream_st* qmamba_stream_t;  // the same type as cudaStream_t

enum qmamba_status {
  QMAMBA_OK = 0,
  QMAMBA_ERR_NULL_POINTER = 1,
  QMAMBA_ERR_BAD_SIZE = 2,      // a size outside what the kernel supports
  QMAMBA_ERR_BAD_VALUE = 3,     // a scalar attribute out of range (non-finite or non-positive scale ...)
  QMAMBA_ERR_CUDA = 4,          // the launch itself failed
  QMAMBA_ERR_WORKSPACE = 5      // workspace missing or too small
};

// Message of the last error raised on the calling thread ("" if none).
const char* qmamba_last_error(void);

// Scalar attributes of QuantConv1dSiLU (docs/ops.md, "Attributes").
typedef struct qmamba_conv_params {
  float x_scale, wx_scale, bx_scale;
  float B_scale, wB_scale, bB_scale;
  float C_scale, wC_scale, bC_scale;
  int32_t ngroups, nheads, headdim, d_state;
  int32_t d_conv;            // K, 2..4
  int32_t n_head_groups;     // nhg (shape of x_out_scales)
  int32_t n_dim_groups;      // ndg
} qmamba_conv_params;

// Device tensors of QuantConv1dSiLU; conv_state may be NULL (zeros). Outputs x, B, C and
// conv_state_out must not alias the inputs.
typedef struct qmamba_conv_tensors {
  const int8_t* xBC;                 // [batch, seqlen, conv_dim]
  const int8_t* weight;              // [conv_dim, K]
  const int8_t* bias;                // [conv_dim]
  const float* x_out_scales;         // [g, nhg, ndg]
  const float* B_out_scales;         // [g]
  const float* C_out_scales;         // [g]
  const int32_t* x_head_group_range; // [g, nhg]
  const int32_t* x_dim_group_range;  // [g, nhg, ndg]
  const int8_t* conv_state;          // [batch, K-1, conv_dim] or NULL
  int8_t* x;                         // [batch, seqlen, d_ssm]
  int8_t* B;                         // [batch, seqlen, g*n]
  int8_t* C;                         // [batch, seqlen, g*n]
  int8_t* conv_state_out;            // [batch, K-1, conv_dim]
} qmamba_conv_tensors;

// Whole sequence (any seqlen >= 1).
int qmamba_quant_conv1d_silu_prefill(const qmamba_conv_params* params, const qmamba_conv_tensors* t,
                                     int64_t batch, int64_t seqlen, qmamba_stream_t stream);
// QuantConv1dSiLU's prefill with xBC quantized from in_proj's float output as it is read (what `qmamba build`
// fuses into the prefill's QmambaInProjConv): for channel c of segment x, B or C (input scale s_in = x_scale,
// B_scale or C_scale), xBC[b, t, c] = Q(fp32(zxbcdt[b, t, xbc_offset + c] * col_scale[c]), s_in) (col_scale
// NULL: the value as it is), then the op as above. t->xBC is not read.
typedef struct qmamba_conv_float_input {
  const float* zxbcdt;     // [batch, seqlen, row_width]: in_proj's output (z | xBC | dt)
  const float* col_scale;  // [conv_dim] or NULL: in_proj's output scale of the xBC columns
  int64_t row_width;       // floats a token's row, >= xbc_offset + conv_dim
  int64_t xbc_offset;      // the column of xBC's first channel
} qmamba_conv_float_input;

int qmamba_quant_conv1d_silu_prefill_from_float(const qmamba_conv_params* params, const qmamba_conv_float_input* in,
                                                const qmamba_conv_tensors* t, int64_t batch, int64_t seqlen,
                                                qmamba_stream_t stream);
// One token per batch row (seqlen == 1); conv_state may equal conv_state_out (in place).
int qmamba_quant_conv1d_silu_decode(const qmamba_conv_params* params, const qmamba_conv_tensors* t,
                                    int64_t batch, qmamba_stream_t stream);

// Scalar attributes of QuantSSD.
typedef struct qmamba_ssd_params {
  float dt_scale, dt_min, dt_max;
  int32_t ngroups, nheads, headdim, d_state;
  int32_t n_head_groups, n_dim_groups;
  int32_t out_fp16;          // 0: y is float32, 1: y is float16
  int32_t chunk_size;        // prefill chunk length (tuning); 0 picks the default
} qmamba_ssd_params;

typedef struct qmamba_ssd_tensors {
  const int8_t* x;                   // [batch, seqlen, h*p]
  const int8_t* dt;                  // [batch, seqlen, h]
  const int8_t* B;                   // [batch, seqlen, g*n]
  const int8_t* C;                   // [batch, seqlen, g*n]
  const float* A_log;                // [h]
  const float* D;                    // [h]
  const float* dt_bias;              // [h]
  const float* x_out_scales;         // [g, nhg, ndg]
  const float* B_out_scales;         // [g]
  const float* C_out_scales;         // [g]
  const int32_t* x_head_group_range; // [g, nhg]
  const int32_t* x_dim_group_range;  // [g, nhg, ndg]
  const float* ssm_state_scale;      // [g, nhg, ndg, n]
  const int8_t* ssm_state;           // [batch, h, p, n] or NULL
  void* y;                           // [batch, seqlen, h*p], float or half per out_fp16
  int8_t* ssm_state_out;             // [batch, h, p, n]
} qmamba_ssd_tensors;

// Bytes of device workspace the prefill needs for these sizes (0 is a valid answer).
size_t qmamba_quant_ssd_prefill_workspace(const qmamba_ssd_params* params, int64_t batch, int64_t seqlen);
int qmamba_quant_ssd_prefill(const qmamba_ssd_params* params, const qmamba_ssd_tensors* t,
                             int64_t batch, int64_t seqlen, void* workspace, size_t workspace_bytes,
                             qmamba_stream_t stream);
// One token per batch row; ssm_state may equal ssm_state_out (in place).
int qmamba_quant_ssd_decode(const qmamba_ssd_params* params, const qmamba_ssd_tensors* t,
                            int64_t batch, qmamba_stream_t stream);

// Scalar attributes of QmambaW8A8Linear (trt_plugins/w8a8LinearPlugin/README.md): the W8A8 linear of a decode step.
typedef struct qmamba_linear_params {
  int32_t in_features;       // K
  int32_t out_features;      // N
  int32_t norm;              // 1: RMSNorm of each row before quantizing it (norm_weight, eps); 0: none
  float eps;                 // RMSNorm epsilon (norm == 1)
  int32_t norm_group;        // channels per RMSNorm group (norm == 1): 0 (or K) the whole row, else a
                             //   divisor of K (the gated norm's groups of d_ssm / ngroups channels)
  int32_t rotation_first;    // f0: order of the dense factor F_0 of a Hadamard rotation after the norm (0 or 1: none)
  int32_t rotation_last;     // f1: order of the normalized Sylvester factor (a power of two; 0 or 1: none); with
                             //   either > 1 a rotation, K = f0 * f1, norm = 1 (qmamba_gated_norm's orders)
} qmamba_linear_params;

// Device tensors of QmambaW8A8Linear. y must not alias x; it may alias residual.
typedef struct qmamba_linear_tensors {
  const float* x;              // [rows, K]
  const int32_t* weight;       // [N, ceil(K/4)]: each row's int8 weights, 4 per word (byte j of word w is
                               //   column 4w + j), zero-padded: the int8 [N, K] matrix's bytes
  const float* out_scale;      // [N]: fp32(input_scale * weight_scale[n])
  const float* input_scale;    // [1]: the activation scale of Q(x)
  const float* norm_weight;    // [K] when norm == 1, else ignored
  const float* residual;       // [rows, N] or NULL
  float* y;                    // [rows, N]
  const float* rotation_first; // F_0 [f0, f0] when f0 > 1, else ignored
  float* workspace;            // [rows, K] floats, 16-byte aligned, not overlapping x, with a rotation
} qmamba_linear_tensors;

// y[m, n] = float(sum_k Q(v[m, k], input_scale) * W[n, k]) * out_scale[n] (+ residual[m, n]), where v is
// x, or with norm its RMSNorm x * rsqrt(mean(x^2) + eps) * norm_weight (mean over k's norm group), and with a
// rotation that row times F_0 (x) S_f1 (the row as [f0, f1] matrix V: F_0^T V S_f1, S_f1 the normalized Sylvester
// matrix; export/hadamard.py), made in the workspace first by qmamba_gated_norm without a gate. Reads the weights
// once per pass of up to 8 rows: a matrix-vector kernel for decode (few rows), any row count accepted.
int qmamba_w8a8_linear(const qmamba_linear_params* params, const qmamba_linear_tensors* t, int64_t rows,
                       qmamba_stream_t stream);

// Scalar attributes of QmambaGatedNorm (trt_plugins/gatedNormPlugin/README.md): a prefill Mamba2 mixer's gated
// RMSNorm with the Hadamard rotation after it (export/hadamard.py), from QuantSSD's y and in_proj's z to the
// float input of out_proj's quantization.
typedef struct qmamba_gated_norm_params {
  int32_t channels;          // K = d_ssm, channels a row
  int32_t group_size;        // channels per norm group (K / ngroups); divides K
  float eps;                 // RMSNorm epsilon
  float z_scale;             // > 0: z is quantized and dequantized with this scale before the gate; 0: z as is
  int32_t rotation_first;    // f0: order of the dense factor F_0 (1: none)
  int32_t rotation_last;     // f1: order of the normalized Sylvester factor (power of two; 1: none); K = f0 * f1
                             //   when either is > 1
  int32_t z_row_width;       // 0: z is [rows, K]; W >= K: z is [rows, W] and its first K columns are the gate's
                             //   (in_proj's whole output z | x | B | C | dt, read without a copy of the z piece)
} qmamba_gated_norm_params;

// Device tensors of QmambaGatedNorm; out must not alias y, z or z_col_scale.
typedef struct qmamba_gated_norm_tensors {
  const float* y;              // [rows, K]
  const float* z;              // [rows, K] (or [rows, z_row_width]), or NULL: no gate (g = y; z_scale ignored)
  const float* z_col_scale;    // [K] or NULL: z is multiplied by it first (z * z_col_scale[k], one fp32 product,
                               //   as the graph's Mul); ignored without z
  const float* weight;         // [K]
  const float* rotation_first; // F_0 [f0, f0] when f0 > 1, else ignored
  float* out;                  // [rows, K]
} qmamba_gated_norm_tensors;

// out = (gated RMSNorm of y and z) times F_0 (x) S_f1 (the row as [f0, f1] matrix V: F_0^T V S_f1, S_f1 the
// normalized Sylvester matrix), fp32; any number of rows.
int qmamba_gated_norm(const qmamba_gated_norm_params* params, const qmamba_gated_norm_tensors* t, int64_t rows,
                      qmamba_stream_t stream);

// Scalar attributes of QmambaDecodeMixer (trt_plugins/decodeMixerPlugin/README.md): one decode step of a Mamba2 mixer from
// in_proj's float output to the gated norm's input. conv holds QuantConv1dSiLU's attributes; its
// x_scale, B_scale and C_scale are also the scales the x, B and C segments are quantized with.
typedef struct qmamba_mixer_params {
  qmamba_conv_params conv;
  float z_scale;             // Q scale of the z segment (the gate)
  float dt_scale;            // Q scale of the dt segment, = QuantSSD's dt_scale
  float dt_min, dt_max;      // QuantSSD's dt clamp
} qmamba_mixer_params;

// Device tensors of QmambaDecodeMixer: one token per batch row. The states are int8 bytes in
// QuantConv1dSiLU's and QuantSSD's layouts; outputs must not alias inputs.
typedef struct qmamba_mixer_tensors {
  const float* zxbcdt;               // [batch, 2*d_ssm + 2*g*n + h]: in_proj's output, z | x | B | C | dt
  const int8_t* conv_weight;         // [conv_dim, K]
  const int8_t* conv_bias;           // [conv_dim]
  const float* x_out_scales;         // [g, nhg, ndg]
  const float* B_out_scales;         // [g]
  const float* C_out_scales;         // [g]
  const int32_t* x_head_group_range; // [g, nhg]
  const int32_t* x_dim_group_range;  // [g, nhg, ndg]
  const float* A_log;                // [h]
  const float* D;                    // [h]
  const float* dt_bias;              // [h]
  const float* ssm_state_scale;      // [g, nhg, ndg, n]
  const int8_t* conv_state;          // [batch, K-1, conv_dim]
  const int8_t* ssm_state;           // [batch, h, p, n]
  float* gated;                      // [batch, d_ssm]: y * (z' * sigmoid(z')), z' = z dequantized
  int8_t* conv_state_out;            // [batch, K-1, conv_dim]
  int8_t* ssm_state_out;             // [batch, h, p, n]
} qmamba_mixer_tensors;

// x, B, C, z, dt = Q(segment, its scale); QuantConv1dSiLU decode step of xBC with conv_state;
// QuantSSD decode step (y float32) with ssm_state; gated = y * (z' * sigmoid(z')). The same
// arithmetic as the two ops' kernels, in one launch.
int qmamba_decode_mixer(const qmamba_mixer_params* params, const qmamba_mixer_tensors* t, int64_t batch,
                        qmamba_stream_t stream);

// Copies `bytes` from src to dst (both device memory) on `stream`.
int qmamba_copy_async(void* dst, const void* src, size_t bytes, qmamba_stream_t stream);

#ifdef __cplusplus
}
#endif

#endif  // QMAMBA_KERNELS_H
