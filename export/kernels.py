"""ctypes binding of libqmamba_kernels (trt_plugins/include/qmamba_kernels.h) for torch CUDA tensors.

``quant_conv1d_silu`` and ``quant_ssd`` take the arguments of their reference twins in
``qmamba.export.ops`` and return the same outputs, computed by the CUDA kernels: a sequence of one
token runs the decode kernel, longer ones the prefill kernel. Inputs are checked with the reference's
own validators first, so a bad call fails with the same message on either path; anything the C
launchers refuse comes back as a ``KernelError`` carrying ``qmamba_last_error()``. The decode
plugins' kernels (QmambaW8A8Linear, QmambaDecodeMixer) and the prefill's QmambaGatedNorm are bound in
``qmamba.runtime.kernels`` on top of this module, next to their reference twins.

The library is found through ``QMAMBA_KERNELS_LIB`` (a path to the .so), else in the installed
package (``qmamba/lib``, where the CMake install puts it).
"""
from __future__ import annotations

import ctypes
import math
import os
import pathlib
import sysconfig

import torch

from .ops import check_conv_call, check_ssd_inputs, out_dtype_of
from .validate import QMambaInputError, check_tensor

LIB_NAME = "libqmamba_kernels.so"
STATUS = {0: "OK", 1: "NULL_POINTER", 2: "BAD_SIZE", 3: "BAD_VALUE", 4: "CUDA", 5: "WORKSPACE"}


class KernelError(RuntimeError):
    """A launcher refused its arguments or the launch failed; the text is qmamba_last_error()."""


class ConvParams(ctypes.Structure):
    _fields_ = [(name, ctypes.c_float) for name in (
        "x_scale", "wx_scale", "bx_scale", "B_scale", "wB_scale", "bB_scale",
        "C_scale", "wC_scale", "bC_scale")] + [(name, ctypes.c_int32) for name in (
            "ngroups", "nheads", "headdim", "d_state", "d_conv", "n_head_groups", "n_dim_groups")]


class ConvTensors(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in (
        "xBC", "weight", "bias", "x_out_scales", "B_out_scales", "C_out_scales",
        "x_head_group_range", "x_dim_group_range", "conv_state", "x", "B", "C", "conv_state_out")]


class ConvFloatInput(ctypes.Structure):
    _fields_ = [("zxbcdt", ctypes.c_void_p), ("col_scale", ctypes.c_void_p), ("row_width", ctypes.c_int64),
                ("xbc_offset", ctypes.c_int64)]


class SSDParams(ctypes.Structure):
    _fields_ = [(name, ctypes.c_float) for name in ("dt_scale", "dt_min", "dt_max")] + [
        (name, ctypes.c_int32) for name in (
            "ngroups", "nheads", "headdim", "d_state", "n_head_groups", "n_dim_groups",
            "out_fp16", "chunk_size")]


class SSDTensors(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in (
        "x", "dt", "B", "C", "A_log", "D", "dt_bias", "x_out_scales", "B_out_scales",
        "C_out_scales", "x_head_group_range", "x_dim_group_range", "ssm_state_scale", "ssm_state",
        "y", "ssm_state_out")]


class LinearParams(ctypes.Structure):
    _fields_ = [("in_features", ctypes.c_int32), ("out_features", ctypes.c_int32), ("norm", ctypes.c_int32),
                ("eps", ctypes.c_float), ("norm_group", ctypes.c_int32), ("rotation_first", ctypes.c_int32),
                ("rotation_last", ctypes.c_int32)]


class LinearTensors(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in (
        "x", "weight", "out_scale", "input_scale", "norm_weight", "residual", "y", "rotation_first", "workspace")]


class GatedNormParams(ctypes.Structure):
    _fields_ = [("channels", ctypes.c_int32), ("group_size", ctypes.c_int32), ("eps", ctypes.c_float),
                ("z_scale", ctypes.c_float), ("rotation_first", ctypes.c_int32), ("rotation_last", ctypes.c_int32),
                ("z_row_width", ctypes.c_int32)]


class GatedNormTensors(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in ("y", "z", "z_col_scale", "weight", "rotation_first", "out")]


class MixerParams(ctypes.Structure):
    _fields_ = [("conv", ConvParams)] + [(name, ctypes.c_float) for name in ("z_scale", "dt_scale", "dt_min", "dt_max")]


class MixerTensors(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in (
        "zxbcdt", "conv_weight", "conv_bias", "x_out_scales", "B_out_scales", "C_out_scales",
        "x_head_group_range", "x_dim_group_range", "A_log", "D", "dt_bias", "ssm_state_scale",
        "conv_state", "ssm_state", "gated", "conv_state_out", "ssm_state_out")]


def library_path() -> pathlib.Path | None:
    """Where libqmamba_kernels is: $QMAMBA_KERNELS_LIB, else the installed package's lib/."""
    env = os.environ.get("QMAMBA_KERNELS_LIB")
    if env:
        return pathlib.Path(env)
    import qmamba
    roots = [pathlib.Path(p) for p in qmamba.__path__]
    roots.append(pathlib.Path(sysconfig.get_paths()["platlib"]) / "qmamba")
    for root in roots:
        cand = root / "lib" / LIB_NAME
        if cand.is_file():
            return cand
    return None


_LIB = None


def load_library() -> ctypes.CDLL:
    """Loads the library once; FileNotFoundError says where it was looked for."""
    global _LIB
    if _LIB is None:
        path = library_path()
        if path is None or not path.is_file():
            raise FileNotFoundError(
                f"{LIB_NAME} not found (set QMAMBA_KERNELS_LIB, or install qmamba on a machine "
                f"with nvcc so that CMake builds it); looked at {path or 'qmamba/lib'}")
        lib = ctypes.CDLL(str(path))
        lib.qmamba_last_error.restype = ctypes.c_char_p
        for name in ("qmamba_quant_conv1d_silu_prefill", "qmamba_quant_conv1d_silu_decode",
                     "qmamba_quant_ssd_prefill", "qmamba_quant_ssd_decode"):
            getattr(lib, name).restype = ctypes.c_int
        lib.qmamba_quant_conv1d_silu_prefill.argtypes = [
            ctypes.POINTER(ConvParams), ctypes.POINTER(ConvTensors), ctypes.c_int64, ctypes.c_int64,
            ctypes.c_void_p]
        if hasattr(lib, "qmamba_quant_conv1d_silu_prefill_from_float"):  # an earlier library (a benchmark's) has none
            lib.qmamba_quant_conv1d_silu_prefill_from_float.restype = ctypes.c_int
            lib.qmamba_quant_conv1d_silu_prefill_from_float.argtypes = [
                ctypes.POINTER(ConvParams), ctypes.POINTER(ConvFloatInput), ctypes.POINTER(ConvTensors),
                ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        lib.qmamba_quant_conv1d_silu_decode.argtypes = [
            ctypes.POINTER(ConvParams), ctypes.POINTER(ConvTensors), ctypes.c_int64, ctypes.c_void_p]
        lib.qmamba_quant_ssd_prefill_workspace.restype = ctypes.c_size_t
        lib.qmamba_quant_ssd_prefill_workspace.argtypes = [
            ctypes.POINTER(SSDParams), ctypes.c_int64, ctypes.c_int64]
        lib.qmamba_quant_ssd_prefill.argtypes = [
            ctypes.POINTER(SSDParams), ctypes.POINTER(SSDTensors), ctypes.c_int64, ctypes.c_int64,
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        lib.qmamba_quant_ssd_decode.argtypes = [
            ctypes.POINTER(SSDParams), ctypes.POINTER(SSDTensors), ctypes.c_int64, ctypes.c_void_p]
        lib.qmamba_w8a8_linear.restype = ctypes.c_int
        lib.qmamba_w8a8_linear.argtypes = [ctypes.POINTER(LinearParams), ctypes.POINTER(LinearTensors),
                                           ctypes.c_int64, ctypes.c_void_p]
        lib.qmamba_gated_norm.restype = ctypes.c_int
        lib.qmamba_gated_norm.argtypes = [ctypes.POINTER(GatedNormParams), ctypes.POINTER(GatedNormTensors),
                                          ctypes.c_int64, ctypes.c_void_p]
        lib.qmamba_decode_mixer.restype = ctypes.c_int
        lib.qmamba_decode_mixer.argtypes = [ctypes.POINTER(MixerParams), ctypes.POINTER(MixerTensors),
                                            ctypes.c_int64, ctypes.c_void_p]
        lib.qmamba_copy_async.restype = ctypes.c_int
        lib.qmamba_copy_async.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        _LIB = lib
    return _LIB


def check_status(rc: int, lib: ctypes.CDLL | None = None) -> None:
    """Raises KernelError with the library's message for a non-zero status."""
    if rc != 0:
        lib = lib or load_library()
        msg = lib.qmamba_last_error().decode(errors="replace")
        raise KernelError(f"{msg} (status {STATUS.get(rc, rc)})")


def ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def on_cuda(op: str, **tensors: torch.Tensor | None) -> torch.device:
    """Every given tensor must be a contiguous CUDA tensor on one device."""
    devices = set()
    for name, t in tensors.items():
        if t is None:
            continue
        if not t.is_cuda:
            raise QMambaInputError(f"{op}: {name} must be a CUDA tensor, got {t.device}")
        if not t.is_contiguous():
            raise QMambaInputError(f"{op}: {name} must be contiguous")
        devices.add(t.device)
    if len(devices) != 1:
        raise QMambaInputError(f"{op}: tensors are on several devices: {sorted(map(str, devices))}")
    return devices.pop()


def conv_params(call, K: int, x_out_scales) -> ConvParams:
    """The C params of a checked QuantConv1dSiLU call (``ops.check_conv_call``): its attributes, the conv width
    K and the group counts x_out_scales' shape gives."""
    return ConvParams(**{k: float(v) for k, v in call.scalars.items()}, **call.shape, d_conv=K,
                      n_head_groups=x_out_scales.shape[1], n_dim_groups=x_out_scales.shape[2])


def quant_conv1d_silu(xBC, weight, bias, x_out_scales, B_out_scales, C_out_scales,
                      x_head_group_range, x_dim_group_range, conv_state=None, *,
                      state_in_place=False, out=None, **attributes):
    """QuantConv1dSiLU on the GPU; same arguments and outputs as ``quant_conv1d_silu_ref``, whose
    thirteen attributes (``x_scale`` ... ``d_state``) come by name in ``attributes``.

    ``state_in_place`` (decode only, L == 1): the new state is written into ``conv_state``, which
    is also returned as ``conv_state_out``. ``out``: optional preallocated (x, B, C) to write into.
    """
    op = "QuantConv1dSiLU"
    call = check_conv_call(xBC, weight, bias, x_out_scales, B_out_scales, C_out_scales,
                           x_head_group_range, x_dim_group_range, conv_state, **attributes)
    bt, L, K, d_ssm, gn, conv_dim = call.sizes
    dev = on_cuda(op, xBC=xBC, weight=weight, bias=bias, x_out_scales=x_out_scales,
                   B_out_scales=B_out_scales, C_out_scales=C_out_scales,
                   x_head_group_range=x_head_group_range, x_dim_group_range=x_dim_group_range,
                   conv_state=conv_state)
    decode = L == 1
    if state_in_place and (not decode or conv_state is None):
        raise QMambaInputError(f"{op}: state_in_place needs a decode step (L == 1) with a conv_state")

    if out is None:
        x = torch.empty(bt, L, d_ssm, dtype=torch.int8, device=dev)
        B = torch.empty(bt, L, gn, dtype=torch.int8, device=dev)
        C = torch.empty(bt, L, gn, dtype=torch.int8, device=dev)
    else:
        x, B, C = out
        check_tensor(op, "out x", x, torch.int8, (bt, L, d_ssm))
        check_tensor(op, "out B", B, torch.int8, (bt, L, gn))
        check_tensor(op, "out C", C, torch.int8, (bt, L, gn))
        on_cuda(op, xBC=xBC, out_x=x, out_B=B, out_C=C)
    state_out = conv_state if state_in_place else torch.empty(bt, K - 1, conv_dim, dtype=torch.int8, device=dev)
    params = conv_params(call, K, x_out_scales)
    tensors = ConvTensors(
        ptr(xBC), ptr(weight), ptr(bias), ptr(x_out_scales), ptr(B_out_scales),
        ptr(C_out_scales), ptr(x_head_group_range), ptr(x_dim_group_range), ptr(conv_state),
        ptr(x), ptr(B), ptr(C), ptr(state_out))
    lib = load_library()
    stream = ctypes.c_void_p(torch.cuda.current_stream(dev).cuda_stream)
    with torch.cuda.device(dev):
        if decode:
            rc = lib.qmamba_quant_conv1d_silu_decode(ctypes.byref(params), ctypes.byref(tensors), bt, stream)
        else:
            rc = lib.qmamba_quant_conv1d_silu_prefill(ctypes.byref(params), ctypes.byref(tensors), bt, L, stream)
    check_status(rc, lib)
    return x, B, C, state_out


def quant_ssd(x, dt, B, C, A_log, D, dt_bias, x_out_scales, B_out_scales, C_out_scales,
              x_head_group_range, x_dim_group_range, ssm_state_scale, ssm_state=None, *,
              dt_scale, dt_min=0.0, dt_max=math.inf, ngroups, nheads, headdim, d_state,
              out_dtype=torch.float32, chunk_size=128, state_in_place=False, out=None):
    """QuantSSD on the GPU; same arguments and outputs as ``quant_ssd_ref``.

    L == 1 runs the decode kernel (the reference's order of operations, state equal but at ties);
    longer sequences run the chunk-parallel prefill (int8 and f16 tensor cores, error bound in
    docs/kernels.md) with the workspace it asks for. ``chunk_size`` is a speed parameter (the
    kernel uses a multiple of 32 from 32 to 256).
    ``state_in_place``: ssm_state_out is written into ``ssm_state`` (and returned).
    ``out``: optional preallocated y to write into.
    """
    op = "QuantSSD"
    ydt = out_dtype_of(out_dtype)
    bt, L = check_ssd_inputs(x, dt, B, C, A_log, D, dt_bias, x_out_scales, B_out_scales,
                             C_out_scales, x_head_group_range, x_dim_group_range, ssm_state_scale,
                             ssm_state, dt_scale, dt_min, dt_max, ngroups, nheads, headdim, d_state)
    if chunk_size < 1:
        raise QMambaInputError(f"{op}: chunk_size must be >= 1, got {chunk_size}")
    h, p, n, g = nheads, headdim, d_state, ngroups
    nhg, ndg = x_out_scales.shape[1], x_out_scales.shape[2]
    if state_in_place and ssm_state is None:
        raise QMambaInputError(f"{op}: state_in_place needs an ssm_state")
    dev = on_cuda(op, x=x, dt=dt, B=B, C=C, A_log=A_log, D=D, dt_bias=dt_bias,
                   x_out_scales=x_out_scales, B_out_scales=B_out_scales, C_out_scales=C_out_scales,
                   x_head_group_range=x_head_group_range, x_dim_group_range=x_dim_group_range,
                   ssm_state_scale=ssm_state_scale, ssm_state=ssm_state)

    if out is None:
        y = torch.empty(bt, L, h * p, dtype=ydt, device=dev)
    else:
        y = check_tensor(op, "out y", out, ydt, (bt, L, h * p))
        on_cuda(op, x=x, out_y=y)
    state_out = ssm_state if state_in_place else torch.empty(bt, h, p, n, dtype=torch.int8, device=dev)
    params = SSDParams(dt_scale=float(dt_scale), dt_min=float(dt_min), dt_max=float(dt_max),
                       ngroups=g, nheads=h, headdim=p, d_state=n, n_head_groups=nhg,
                       n_dim_groups=ndg, out_fp16=int(ydt == torch.float16),
                       chunk_size=min(int(chunk_size), 1 << 30))
    tensors = SSDTensors(
        ptr(x), ptr(dt), ptr(B), ptr(C), ptr(A_log), ptr(D), ptr(dt_bias),
        ptr(x_out_scales), ptr(B_out_scales), ptr(C_out_scales), ptr(x_head_group_range),
        ptr(x_dim_group_range), ptr(ssm_state_scale), ptr(ssm_state), ptr(y), ptr(state_out))
    lib = load_library()
    stream = ctypes.c_void_p(torch.cuda.current_stream(dev).cuda_stream)
    with torch.cuda.device(dev):
        if L == 1:
            rc = lib.qmamba_quant_ssd_decode(ctypes.byref(params), ctypes.byref(tensors), bt, stream)
        else:
            ws_bytes = lib.qmamba_quant_ssd_prefill_workspace(ctypes.byref(params), bt, L)
            ws = torch.empty(ws_bytes, dtype=torch.uint8, device=dev) if ws_bytes else None
            rc = lib.qmamba_quant_ssd_prefill(ctypes.byref(params), ctypes.byref(tensors), bt, L,
                                              ptr(ws), ws_bytes, stream)
    check_status(rc, lib)
    return y, state_out


def launcher(dev: torch.device, call, tensors):
    """A no-argument launch (for graph capture): ``call(lib, stream)`` on ``dev``'s current stream at each
    call, its status checked (KernelError with the library's message). The launch holds ``tensors``, the
    ones whose addresses ``call`` passes, so that none is freed (and its memory handed out again) while
    the launch can still run, whatever the caller keeps."""
    lib = load_library()

    def launch():
        stream = ctypes.c_void_p(torch.cuda.current_stream(dev).cuda_stream)
        with torch.cuda.device(dev):
            rc = call(lib, stream)
        check_status(rc, lib)

    launch.tensors = tensors
    return launch
