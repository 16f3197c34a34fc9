"""The IPluginV3 build of libqmamba_trt_plugins.so inside TensorRT-RTX on the CPU: the creators
register on load with docs/ops.md's fields (the decode graphs' QmambaW8A8Linear and QmambaDecodeMixer and the
prefill graphs' QmambaGatedNorm with their Python modules' FIELDS), createPlugin makes plugins whose core reports the
exporter's name/version/namespace, and refuses missing or bad fields and plans of another plugin
format with messages naming them. Builds the library against the newest TensorRT 10+ headers that
trt_headers finds (slow: the kernels are compiled too); skips without such headers, nvcc or TensorRT-RTX.

(TensorRT-RTX cannot go further: its network has no plugin layers, and parsing a model whose custom
nodes find these creators aborts inside its ONNX parser; see docs/tensorrt.md.)"""
from __future__ import annotations

import ctypes
import importlib
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from trt_headers import ENV_HINT, newest_headers

ROOT = Path(__file__).resolve().parents[2]
_V3 = newest_headers("V3")
HEADERS = _V3[1] if _V3 else None

pytestmark = [pytest.mark.tensorrt, pytest.mark.slow,
              pytest.mark.skipif(HEADERS is None, reason=f"needs TensorRT 10+ headers: {ENV_HINT}"),
              pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx_bindings") is None
                                 or shutil.which("nvcc") is None or shutil.which("cmake") is None,
                                 reason="needs TensorRT-RTX (tensorrt-rtx-cu13), nvcc and cmake")]

_spec = importlib.util.spec_from_file_location("qmamba_test_contract", ROOT / "tests" / "test_contract.py")
_contract = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_contract)
CONTRACT = _contract.CONTRACT
_spec = importlib.util.spec_from_file_location("qmamba_test_exports", ROOT / "tests" / "trt_plugins" / "test_library_exports.py")
_exports = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_exports)
# The plugin library's serialization format (qmambaSerialize.h), which V3 plans carry as a field.
FORMAT = int(re.search(r"kSERIAL_FORMAT = (\d+)u;", (ROOT / "trt_plugins" / "common" / "qmambaSerialize.h")
                       .read_text()).group(1))
# Plugins that `qmamba build` puts into graphs, with their Python modules (FIELDS: the creators' tables).
BUILD_PLUGINS = {"QmambaW8A8Linear": "qmamba.runtime.w8a8_linear", "QmambaDecodeMixer": "qmamba.runtime.decode_mixer",
                 "QmambaGatedNorm": "qmamba.runtime.prefill_fusion"}


@pytest.fixture(scope="module")
def v3_library(tmp_path_factory) -> Path:
    build = tmp_path_factory.mktemp("v3")
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), f"-DTensorRT_INCLUDE_DIR={HEADERS}",
                    "-DCMAKE_CUDA_ARCHITECTURES=90"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j", str(os.cpu_count() or 2), "--target",
                    "qmamba_trt_plugins"], check=True, capture_output=True)
    return build / "trt_plugins" / "libqmamba_trt_plugins.so"


@pytest.fixture(scope="module")
def trt(v3_library):
    import tensorrt_rtx_bindings as trt
    import tensorrt_rtx_libs

    ctypes.CDLL(str(Path(tensorrt_rtx_libs.__file__).parent / "libtensorrt_rtx.so.1"), mode=ctypes.RTLD_GLOBAL)
    ctypes.CDLL(str(v3_library), mode=ctypes.RTLD_GLOBAL)
    yield trt
    # Leave TensorRT-RTX's registry as it was: with qmamba's creators registered, its ONNX parser takes
    # them for the custom nodes and then aborts the process (docs/tensorrt.md), which would end later
    # tests of this process that parse exported graphs (tests/runtime/test_trt_rtx_parse.py).
    registry = trt.get_plugin_registry()
    for creator in list(registry.all_creators):
        if creator.name in CONTRACT or creator.name in BUILD_PLUGINS:
            registry.deregister_creator(creator)


# The PluginFields (and the arrays they point into) of every collection _fields made: the collection keeps
# only the fields' C structs, whose data pointers dangle once the Python fields are collected.
_ALIVE: list = []


def _fields(trt, **values):
    out = []
    for name, v in values.items():
        if isinstance(v, float):
            out.append(trt.PluginField(name, np.array([v], np.float32), trt.PluginFieldType.FLOAT32))
        else:
            out.append(trt.PluginField(name, np.array([v], np.int32), trt.PluginFieldType.INT32))
    _ALIVE.append(out)
    return trt.PluginFieldCollection(out)


SSD = dict(dt_scale=0.02, ngroups=1, nheads=8, headdim=32, d_state=16)


@pytest.mark.parametrize("op", ["QuantConv1dSiLU", "QuantSSD"])
def test_creators_register_with_the_docs_fields(trt, op):
    creator = trt.get_plugin_registry().get_creator(op, "1", "")
    assert creator is not None and creator.name == op and creator.plugin_namespace == ""
    kinds = {trt.PluginFieldType.FLOAT32: "float", trt.PluginFieldType.INT32: "int"}
    fields = [(f.name, kinds[f.type]) for f in creator.field_names]
    assert fields == [(n, t) for n, (t, _) in CONTRACT[op]["attributes"].items()]


def test_create_plugin_reports_name_version_namespace(trt):
    creator = trt.get_plugin_registry().get_creator("QuantSSD", "1", "")
    plugin = creator.create_plugin("ssd", _fields(trt, **SSD), trt.TensorRTPhase.BUILD)
    core = plugin.get_capability_interface(trt.PluginCapabilityType.CORE)
    assert (core.plugin_name, core.plugin_version, core.plugin_namespace) == ("QuantSSD", "1", "")
    assert plugin.get_capability_interface(trt.PluginCapabilityType.BUILD).num_outputs == 2


@pytest.mark.parametrize("change,message", [
    (dict(dt_scale=None), "required field dt_scale is missing"),
    (dict(dt_scale=-1.0), "dt_scale must be finite and > 0"),
    (dict(nheads=7, ngroups=2), "nheads = 7 must be divisible by ngroups = 2"),
    (dict(out_dtype=3), "out_dtype must be 1 (float32) or 10 (float16)"),
    (dict(headdim=32.0), "field headdim must be an int, got a float"),
])
def test_bad_fields_are_refused_with_their_name(trt, capfd, change, message):
    values = {k: v for k, v in {**SSD, **change}.items() if v is not None}
    creator = trt.get_plugin_registry().get_creator("QuantSSD", "1", "")
    assert creator.create_plugin("ssd", _fields(trt, **values), trt.TensorRTPhase.BUILD) is None
    assert message in capfd.readouterr().err


def test_plan_of_another_plugin_format_is_refused(trt, capfd):
    creator = trt.get_plugin_registry().get_creator("QuantSSD", "1", "")
    assert creator.create_plugin("ssd", _fields(trt, **SSD), trt.TensorRTPhase.RUNTIME) is None
    assert "built with another version of the qmamba plugin library" in capfd.readouterr().err
    same = creator.create_plugin("ssd", _fields(trt, **SSD, qmamba_plugin_format=FORMAT), trt.TensorRTPhase.RUNTIME)
    assert same is not None
    for other in (FORMAT - 1, FORMAT + 1):
        assert creator.create_plugin("ssd", _fields(trt, **SSD, qmamba_plugin_format=other),
                                     trt.TensorRTPhase.RUNTIME) is None


@pytest.mark.parametrize("op", list(BUILD_PLUGINS))
def test_build_plugins_register_with_their_twins_fields(trt, op):
    creator = trt.get_plugin_registry().get_creator(op, "1", "")
    assert creator is not None and creator.name == op and creator.plugin_namespace == ""
    kinds = {trt.PluginFieldType.FLOAT32: "float", trt.PluginFieldType.INT32: "int"}
    fields = [(f.name, kinds[f.type]) for f in creator.field_names]
    assert fields == [(n, t) for n, t, _ in importlib.import_module(BUILD_PLUGINS[op]).FIELDS]


MIXER = dict(x_scale=0.01, wx_scale=0.01, bx_scale=0.01, B_scale=0.01, wB_scale=0.01, bB_scale=0.01, C_scale=0.01,
             wC_scale=0.01, bC_scale=0.01, ngroups=1, nheads=8, headdim=32, d_state=16, d_conv=4, z_scale=0.05,
             dt_scale=0.02)


NORM = dict(channels=384, group_size=192, eps=1e-5, z_scale=0.05, rotation_first=12, rotation_last=32, gate=1,
            z_col_scale=0)
# Good fields and output count of the plugins `qmamba build` puts into graphs (QmambaW8A8Linear's fields all
# have defaults).
GOOD = {"QmambaDecodeMixer": (MIXER, 3), "QmambaGatedNorm": (NORM, 1)}


@pytest.mark.parametrize("op, bad, message", [
    ("QmambaDecodeMixer", {"d_conv": 5}, "field d_conv must be 2..4, got 5"),
    ("QmambaDecodeMixer", {"nheads": 1, "headdim": 33}, "must be a multiple of 4 (conv_state travels as int32 words)"),
    ("QmambaGatedNorm", {"rotation_last": 48}, "field rotation_last must be a power of two in 1..128"),
    ("QmambaGatedNorm", {"group_size": 100}, "field group_size = 100 must divide channels = 384"),
    ("QmambaGatedNorm", {"gate": 2}, "field gate must be 0 (no z: a plain RMSNorm) or 1"),
    ("QmambaGatedNorm", {"gate": 0}, "field z_scale = 0.050000 needs gate = 1"),
    ("QmambaGatedNorm", {"z_col_scale": 2}, "field z_col_scale must be 0 (z as it comes) or 1"),
    ("QmambaGatedNorm", {"gate": 0, "z_scale": 0.0, "z_col_scale": 1}, "field z_col_scale = 1 needs gate = 1"),
])
def test_build_plugins_create_and_refuse_bad_fields(trt, capfd, op, bad, message):
    good, nb_outputs = GOOD[op]
    creator = trt.get_plugin_registry().get_creator(op, "1", "")
    plugin = creator.create_plugin(op, _fields(trt, **good), trt.TensorRTPhase.BUILD)
    assert plugin.get_capability_interface(trt.PluginCapabilityType.BUILD).num_outputs == nb_outputs
    assert creator.create_plugin(op, _fields(trt, **{**good, **bad}), trt.TensorRTPhase.BUILD) is None
    assert message in capfd.readouterr().err


def test_load_library_registers_every_creator(trt, v3_library):
    """IPluginRegistry::loadLibrary (what `trtexec --dynamicPlugins` calls) finds the library's getCreators
    and registers all its creators; the library exports nothing but its entry points."""
    assert _exports.check_plugin_library_exports(v3_library) == "V3"
    registry = trt.get_plugin_registry()
    handle = registry.load_library(str(v3_library))
    assert handle is not None, "loadLibrary did not find getCreators"
    try:
        assert set(CONTRACT) | set(BUILD_PLUGINS) <= {c.name for c in registry.all_creators}
    finally:
        registry.deregister_library(handle)
