"""Argument checks of the CUDA kernel launchers (libqmamba_kernels) and of their Python binding.

The C launchers check everything before their first CUDA call, so these run without a GPU wherever
the library was built (CI builds it with nvcc). The numerical checks are in test_kernels_gpu.py.
"""
from __future__ import annotations

import ctypes
import math

import pytest
import torch

import kernel_cases as kc
from qmamba.export.layer_sizes import LayerShape
from qmamba.export.validate import QMambaInputError
from qmamba.export import kernels
from qmamba.runtime import kernels as decode_kernels

needs_lib = pytest.mark.skipif(kernels.library_path() is None, reason="libqmamba_kernels not built")


def test_ptr_gives_the_tensors_device_address():
    # Every launcher passes its tensors through ptr(); the GPU tests are the only other callers.
    t = torch.arange(6.0)[2:]
    assert kernels.ptr(t) == t.data_ptr()
    assert kernels.ptr(None) is None


def assert_refused(lib, rc: int, status: int, launcher: str, text: str) -> None:
    """The launcher returned ``status`` and its message names it and says ``text``."""
    assert rc == status
    msg = lib.qmamba_last_error().decode()
    assert launcher in msg and text in msg, msg


def _conv_args(**over):
    p = kernels.ConvParams(x_scale=0.1, wx_scale=0.01, bx_scale=0.01, B_scale=0.1, wB_scale=0.01,
                           bB_scale=0.01, C_scale=0.1, wC_scale=0.01, bC_scale=0.01, ngroups=1,
                           nheads=8, headdim=64, d_state=64, d_conv=4, n_head_groups=4,
                           n_dim_groups=4)
    t = kernels.ConvTensors(*[256 * (i + 1) for i in range(13)])  # fake, distinct device addresses
    for k, v in over.items():
        setattr(t if k in dict(kernels.ConvTensors._fields_) else p, k, v)
    return p, t


@needs_lib
@pytest.mark.parametrize("over, status, text", [
    (dict(xBC=None), 1, "xBC is a null pointer"),
    (dict(conv_state_out=None), 1, "conv_state_out is a null pointer"),
    (dict(d_conv=5), 2, "d_conv (K) = 5 is not supported"),
    (dict(headdim=48), 2, "headdim = 48 is not supported"),
    (dict(d_state=8), 2, "d_state = 8 is not supported"),
    (dict(ngroups=3), 2, "ngroups = 3 does not divide nheads = 8"),
    (dict(n_dim_groups=9), 2, "n_dim_groups = 9 is not supported"),
    (dict(wx_scale=float("nan")), 3, "wx_scale must be finite and > 0"),
    (dict(bC_scale=0.0), 3, "bC_scale must be finite and > 0"),
])
def test_conv_launcher_refuses_bad_arguments(over, status, text):
    lib = kernels.load_library()
    p, t = _conv_args(**over)
    rc = lib.qmamba_quant_conv1d_silu_prefill(ctypes.byref(p), ctypes.byref(t), 2, 16, None)
    assert_refused(lib, rc, status, "qmamba_quant_conv1d_silu_prefill", text)


@needs_lib
def test_conv_launcher_refuses_bad_lengths_and_prefill_aliasing():
    lib = kernels.load_library()
    p, t = _conv_args()
    assert lib.qmamba_quant_conv1d_silu_prefill(ctypes.byref(p), ctypes.byref(t), 1, 65537, None) == 2
    assert "seqlen = 65537" in lib.qmamba_last_error().decode()
    assert lib.qmamba_quant_conv1d_silu_prefill(ctypes.byref(p), ctypes.byref(t), 0, 8, None) == 2
    assert "batch = 0" in lib.qmamba_last_error().decode()
    p, t = _conv_args(conv_state=512, conv_state_out=512)
    assert lib.qmamba_quant_conv1d_silu_prefill(ctypes.byref(p), ctypes.byref(t), 1, 8, None) == 3
    assert "aliases conv_state" in lib.qmamba_last_error().decode()


def _ssd_args(**over):
    p = kernels.SSDParams(dt_scale=0.02, dt_min=0.0, dt_max=math.inf, ngroups=2, nheads=8,
                          headdim=64, d_state=128, n_head_groups=2, n_dim_groups=4, out_fp16=0,
                          chunk_size=0)
    t = kernels.SSDTensors(*[256 * (i + 1) for i in range(16)])
    for k, v in over.items():
        setattr(t if k in dict(kernels.SSDTensors._fields_) else p, k, v)
    return p, t


@needs_lib
@pytest.mark.parametrize("launcher", ["prefill", "decode"])
@pytest.mark.parametrize("over, status, text", [
    (dict(ssm_state_scale=None), 1, "ssm_state_scale is a null pointer"),
    (dict(y=None), 1, "y is a null pointer"),
    (dict(dt_scale=-1.0), 3, "dt_scale must be finite and > 0"),
    (dict(dt_min=0.5, dt_max=0.5), 3, "need 0 <= dt_min < dt_max"),
    (dict(dt_max=float("nan")), 3, "need 0 <= dt_min < dt_max"),
    (dict(out_fp16=2), 3, "out_fp16 must be 0"),
    (dict(d_state=300), 2, "d_state = 300 is not supported"),
    (dict(headdim=96), 2, "headdim = 96 is not supported"),
    (dict(n_head_groups=5), 2, "n_head_groups = 5 exceeds the 4 heads of an SSD group"),
])
def test_ssd_launchers_refuse_bad_arguments(launcher, over, status, text):
    lib = kernels.load_library()
    p, t = _ssd_args(**over)
    if launcher == "prefill":
        rc = lib.qmamba_quant_ssd_prefill(ctypes.byref(p), ctypes.byref(t), 1, 16, None, 0, None)
    else:
        rc = lib.qmamba_quant_ssd_decode(ctypes.byref(p), ctypes.byref(t), 1, None)
    assert_refused(lib, rc, status, f"qmamba_quant_ssd_{launcher}", text)


@needs_lib
def test_prefill_asks_for_its_workspace_and_refuses_to_run_without_it():
    lib = kernels.load_library()
    p, t = _ssd_args()  # 8 heads of 64 x 128, chunk_size 0: chunks of 128 tokens, shorter on a small GPU
    ws = lib.qmamba_quant_ssd_prefill_workspace(ctypes.byref(p), 8, 4096)
    assert ws >= 8 * (4096 // 128) * 8 * 64 * 128 * 4  # an fp32 state per (batch row, chunk, head)
    assert lib.qmamba_quant_ssd_prefill(ctypes.byref(p), ctypes.byref(t), 8, 4096, None, 0, None) == 5
    msg = lib.qmamba_last_error().decode()
    assert "qmamba_quant_ssd_prefill" in msg and f"needs a workspace of {ws} bytes" in msg, msg
    assert lib.qmamba_quant_ssd_prefill(ctypes.byref(p), ctypes.byref(t), 8, 4096, 4104, ws, None) == 5
    assert "16-byte aligned" in lib.qmamba_last_error().decode()


def test_binding_refuses_cpu_tensors_by_name():
    gen = torch.Generator().manual_seed(1)
    t, a = kc.conv_case(LayerShape(ngroups=1, nheads=4, headdim=32, d_state=16), 1, 3, gen, device="cpu")
    with pytest.raises(QMambaInputError, match="QuantConv1dSiLU: xBC must be a CUDA tensor"):
        kernels.quant_conv1d_silu(**t, **a)


def test_binding_refuses_bad_group_ranges_before_launch():
    gen = torch.Generator().manual_seed(2)
    t, a = kc.conv_case(LayerShape(ngroups=1, nheads=8, headdim=32, d_state=16), 1, 3, gen, device="cpu")
    t["x_dim_group_range"] = t["x_dim_group_range"].flip(-1).contiguous()
    with pytest.raises(QMambaInputError, match=r"x_dim_group_range\[0, 0\].*strictly increasing"):
        kernels.quant_conv1d_silu(**t, **a)


def _bad_mixer(change: str):
    t, f = kc.mixer_case(LayerShape(ngroups=2, nheads=8, headdim=32, d_state=16), 2, torch.Generator().manual_seed(3),
                         device="cpu")
    if change == "flipped dim ranges":
        t["x_dim_group_range"] = t["x_dim_group_range"].flip(-1).contiguous()
    elif change == "zero state scale":
        t["ssm_state_scale"] = t["ssm_state_scale"].clone().fill_(0.0)
    elif change == "NaN A_log":
        t["A_log"] = t["A_log"].clone().fill_(float("nan"))
    elif change == "short ssm_state":
        t["ssm_state"] = t["ssm_state"][:1]
    elif change == "NaN z_scale":
        f["z_scale"] = float("nan")
    elif change == "dt_min >= dt_max":
        f.update(dt_min=1.0, dt_max=0.5)
    elif change == "missing dt_scale":
        f["dt_scale"] = None
    elif change == "d_conv field vs weight":
        f["d_conv"] = 3
    return t, f


@pytest.mark.parametrize("change, message", [
    ("flipped dim ranges", r"x_dim_group_range\[0, 0\].*strictly increasing"),
    ("zero state scale", "ssm_state_scale must be > 0"),
    ("NaN A_log", "A_log has non-finite values"),
    ("short ssm_state", r"ssm_state must have shape \[2, 8, 32, 16\]"),
    ("NaN z_scale", "scale z_scale must be finite"),
    ("dt_min >= dt_max", "dt_min < dt_max"),
    ("missing dt_scale", r"missing fields \['dt_scale'\]"),
    ("d_conv field vs weight", r"conv_weight must be \[conv_dim, d_conv = 3\]"),
])
def test_mixer_binding_and_twin_refuse_the_same(change, message):
    """The mixer's binding runs the twin's checks (decode_mixer.check_mixer_inputs) before anything touches
    the GPU: a bad range is an error, not a clamped lookup and a wrong answer."""
    from qmamba.runtime.decode_mixer import decode_mixer_ref

    t, f = _bad_mixer(change)
    with pytest.raises(QMambaInputError, match=message):
        decode_mixer_ref(**t, **f)
    with pytest.raises(QMambaInputError, match=message):
        decode_kernels.decode_mixer(**t, **f)


@needs_lib
@pytest.mark.parametrize("dst, src, text", [(None, 256, "dst is a null pointer"), (256, None, "src is a null pointer")])
def test_copy_refuses_null_pointers(dst, src, text):
    lib = kernels.load_library()
    assert lib.qmamba_copy_async(dst, src, 16, None) == 1
    assert text in lib.qmamba_last_error().decode()
    assert lib.qmamba_copy_async(None, None, 0, None) == 0  # nothing to copy


def _linear_args(params=(), tensors=()):
    """QmambaW8A8Linear's C arguments at 2.7b's out_proj with its rotation (40 x 128, norm over the row, a residual),
    with fake distinct device addresses 16-byte aligned, far enough apart for 4 rows."""
    p = kernels.LinearParams(in_features=5120, out_features=2560, norm=1, eps=1e-5, norm_group=0, rotation_first=40,
                             rotation_last=128)
    return _changed(p, params), _changed(kernels.LinearTensors(*[1 << (24 + i) for i in range(9)]), tensors)


def _changed(struct, fields):
    """The ctypes struct with the given fields set."""
    for k, v in dict(fields).items():
        setattr(struct, k, v)
    return struct


@needs_lib
@pytest.mark.parametrize("params, tensors, status, text", [
    (dict(norm=0), {}, 3, "a rotation needs norm = 1"),
    (dict(rotation_first=-1), {}, 2, "rotation_first = -1 is not supported"),
    ({}, dict(rotation_first=None), 1, "rotation_first is a null pointer"),
    ({}, dict(workspace=None), 1, "workspace is a null pointer"),
    ({}, dict(workspace=(1 << 32) + 4), 5, "workspace must be 16-byte aligned"),
    ({}, dict(workspace=1 << 30), 3, "workspace must not alias y or residual"),  # y's address
    # the orders and the overlap with x are the gated norm's checks, refused before anything is launched
    (dict(in_features=96 * 53, rotation_first=53, rotation_last=96), {}, 2,
     "rotation pass: qmamba_gated_norm: rotation_last = 96 is not a power of two"),
    (dict(rotation_first=20), {}, 2, "rotation pass: qmamba_gated_norm: rotation orders f0 = 20, f1 = 128"),
    ({}, dict(workspace=(1 << 24) + 16), 3, "rotation pass: qmamba_gated_norm: out must not alias y"),  # inside x
])
def test_linear_launcher_refuses_bad_rotations(params, tensors, status, text):
    lib = kernels.load_library()
    p, t = _linear_args(params, tensors)
    assert_refused(lib, lib.qmamba_w8a8_linear(ctypes.byref(p), ctypes.byref(t), 4, None), status,
                   "qmamba_w8a8_linear", text)


def _norm_args(params=(), tensors=()):
    """QmambaGatedNorm's C arguments at 2.7b's row (40 x 128, one group), with fake distinct device addresses."""
    p = kernels.GatedNormParams(channels=5120, group_size=5120, eps=1e-5, z_scale=0.05, rotation_first=40,
                                rotation_last=128)
    return _changed(p, params), _changed(kernels.GatedNormTensors(*[1 << (20 + i) for i in range(6)]), tensors)


@needs_lib
@pytest.mark.parametrize("params, tensors, status, text", [
    ({}, dict(y=None), 1, "y is a null pointer"),
    ({}, dict(weight=None), 1, "weight is a null pointer"),
    ({}, dict(out=None), 1, "out is a null pointer"),
    ({}, dict(rotation_first=None), 1, "rotation_first is a null pointer"),
    (dict(channels=65537, group_size=1, rotation_first=1, rotation_last=1), {}, 2, "channels = 65537 is not supported"),
    (dict(channels=0), {}, 2, "channels = 0 is not supported"),
    (dict(group_size=7), {}, 2, "group_size = 7 does not divide channels = 5120"),
    (dict(group_size=0), {}, 2, "group_size = 0 is not supported"),
    (dict(channels=96 * 53, group_size=96, rotation_first=53, rotation_last=96), {}, 2,
     "rotation_last = 96 is not a power of two"),
    (dict(rotation_first=20, rotation_last=256), {}, 2, "rotation_last = 256 is not supported"),
    (dict(channels=129 * 32, group_size=129, rotation_first=129, rotation_last=32), {}, 2,
     "rotation_first = 129 is not supported"),
    (dict(rotation_last=64), {}, 2, "f0 = 40, f1 = 64 do not make channels = 5120"),
    (dict(rotation_first=1), {}, 2, "f0 = 1, f1 = 128 do not make channels = 5120"),
    (dict(eps=-1e-5), {}, 3, "eps must be finite and >= 0"),
    (dict(eps=float("nan")), {}, 3, "eps must be finite and >= 0"),
    (dict(z_scale=-0.05), {}, 3, "z_scale must be finite and >= 0"),
    (dict(z_scale=float("inf")), {}, 3, "z_scale must be finite and >= 0"),
    ({}, dict(out=1 << 20), 3, "out must not alias y"),
    ({}, dict(out=(1 << 21) + 4 * 5120 * 3), 3, "out must not alias z"),  # inside z's 4 rows
    # without z (no gate) z_scale is not read: the checks go on to the next error
    (dict(z_scale=float("nan")), dict(z=None, out=1 << 20), 3, "out must not alias y"),
    ({}, dict(out=(1 << 22) - 4 * 100), 3, "out must not alias z_col_scale"),  # out's last 100 floats over it
])
def test_gated_norm_launcher_refuses_bad_arguments(params, tensors, status, text):
    lib = kernels.load_library()
    p, t = _norm_args(params, tensors)
    assert_refused(lib, lib.qmamba_gated_norm(ctypes.byref(p), ctypes.byref(t), 4, None), status, "qmamba_gated_norm",
                   text)


@needs_lib
def test_gated_norm_launcher_takes_zero_rows_and_refuses_negative_ones():
    lib = kernels.load_library()
    p, t = _norm_args()
    assert lib.qmamba_gated_norm(None, ctypes.byref(t), 4, None) == 1
    assert "params is a null pointer" in lib.qmamba_last_error().decode()
    assert lib.qmamba_gated_norm(ctypes.byref(p), None, 4, None) == 1
    assert lib.qmamba_gated_norm(ctypes.byref(p), ctypes.byref(t), -1, None) == 2
    assert "rows = -1 is not supported" in lib.qmamba_last_error().decode()
    _, empty = _norm_args(tensors=dict(y=None, z=None, z_col_scale=None, weight=None, rotation_first=None, out=None))
    assert lib.qmamba_gated_norm(ctypes.byref(p), ctypes.byref(empty), 0, None) == 0  # nothing to do
    assert lib.qmamba_last_error().decode() == ""


@pytest.mark.parametrize("change, message", [
    ("group_size 7", "group_size must divide K = 192"),
    ("f0 x f1 != K", "f0 = 4 .* must make K = 192"),
    ("f1 not a power of two", "f1 must be a power of two"),
    ("F_0 shape", r"F_0 must have shape \[3, 3\]"),
    ("z shape", r"z must have shape \[7, 1, 192\]"),
    ("z_col_scale shape", r"z_col_scale must have shape \[192\]"),
    ("negative eps", "eps must be finite and >= 0"),
    ("NaN z_scale", "z_scale must be finite and >= 0"),
    ("NaN weight", "weight has non-finite values"),
])
def test_gated_norm_binding_and_twin_refuse_the_same(change, message):
    """The binding runs the twin's checks (gated_norm.check_gated_norm_inputs) before anything touches the GPU."""
    from qmamba.runtime.gated_norm import gated_norm_ref

    t, a = kc.gated_norm_case(*kc.GATED_NORM_CASES["dense-3x64-8-groups"])
    f0, f1, first = a["rotation"]
    if change == "group_size 7":
        a["group_size"] = 7
    elif change == "f0 x f1 != K":
        a["rotation"] = (4, f1, first)
    elif change == "f1 not a power of two":
        a["rotation"] = (2, 96, first)
    elif change == "F_0 shape":
        a["rotation"] = (f0, f1, first[:, :2])
    elif change == "z shape":
        t["z"] = t["z"][:, :, :100]
    elif change == "z_col_scale shape":
        t["z_col_scale"] = torch.ones(100)
    elif change == "negative eps":
        a["eps"] = -1.0
    elif change == "NaN z_scale":
        a["z_scale"] = float("nan")
    elif change == "NaN weight":
        t["weight"] = t["weight"].clone().fill_(float("nan"))
    with pytest.raises(QMambaInputError, match=message):
        gated_norm_ref(**t, **a)
    with pytest.raises(QMambaInputError, match=message):
        decode_kernels.gated_norm(**t, **a)


def test_gated_norm_binding_refuses_cpu_tensors_by_name():
    t, a = kc.gated_norm_case(*kc.GATED_NORM_CASES["plain-24-groups-of-4"])
    with pytest.raises(QMambaInputError, match="QmambaGatedNorm: y must be a CUDA tensor"):
        decode_kernels.gated_norm(**t, **a)
