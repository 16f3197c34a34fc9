"""The plugin cores (fields, value checks, shape rules, V2 serialization) without TensorRT or a GPU:
compiles tests/trt_plugins/plugin_core_check.cpp with the cores and runs it. The kernels are not
called, so their symbols are left unresolved in this test program (QmambaGatedNorm's launcher is a
recording double there, which checks what its core's enqueue hands the C ABI). Skips without g++."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TP = ROOT / "trt_plugins"


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_plugin_cores(tmp_path):
    exe = tmp_path / "plugin_core_check"
    sources = [Path(__file__).with_name("plugin_core_check.cpp"), TP / "common" / "qmambaFields.cpp",
               TP / "common" / "qmambaShapes.cpp", TP / "quantConv1dSiLUPlugin" / "quantConv1dSiLUCore.cpp",
               TP / "quantSSDPlugin" / "quantSSDCore.cpp", TP / "bitsAsFloatPlugin" / "bitsAsFloatCore.cpp",
               TP / "w8a8LinearPlugin" / "w8a8LinearCore.cpp", TP / "decodeMixerPlugin" / "decodeMixerCore.cpp",
               TP / "gatedNormPlugin" / "gatedNormCore.cpp", TP / "inProjConvPlugin" / "inProjConvCore.cpp"]
    includes = [TP / "common", TP / "include", TP / "quantConv1dSiLUPlugin", TP / "quantSSDPlugin",
                TP / "bitsAsFloatPlugin", TP / "w8a8LinearPlugin", TP / "decodeMixerPlugin", TP / "gatedNormPlugin",
                TP / "inProjConvPlugin"]
    cmd = ["g++", "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", *[f"-I{i}" for i in includes],
           *map(str, sources), "-no-pie", "-Wl,--unresolved-symbols=ignore-all", "-o", str(exe)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([str(exe)], capture_output=True, text=True)
    assert r.returncode == 0 and "all checks passed" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
