"""The plugin library compiles against both plugin APIs: TensorRT 11.1 headers (IPluginV3) and 8.6
headers (IPluginV2DynamicExt), and the runner against both. Needs the headers unpacked in
.deps/tensorrt-<version>/include and a C++ compiler with the CUDA headers; skips otherwise."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CUDA_INCLUDE = Path("/usr/local/cuda/include")
PLUGIN_SOURCES = ["common/qmambaFields.cpp", "common/qmambaShapes.cpp", "common/qmambaTrtUtils.cpp",
                  "common/qmambaPluginLibrary.cpp", "quantConv1dSiLUPlugin/quantConv1dSiLUCore.cpp",
                  "quantSSDPlugin/quantSSDCore.cpp", "bitsAsFloatPlugin/bitsAsFloatCore.cpp",
                  "w8a8LinearPlugin/w8a8LinearCore.cpp", "decodeMixerPlugin/decodeMixerCore.cpp"]
RUNNER_SOURCES = ["runnerCommon.cpp", "engine.cpp", "engineBuilder.cpp", "session.cpp", "sessionBench.cpp",
                  "sessionProfile.cpp", "runnerApi.cpp", "qmamba_trt.cpp"]


def _headers(version: str) -> Path:
    inc = ROOT / ".deps" / f"tensorrt-{version}" / "include"
    if not (inc / "NvInferVersion.h").exists() or shutil.which("g++") is None or not CUDA_INCLUDE.exists():
        pytest.skip(f"TensorRT {version} headers (.deps), g++ or the CUDA headers are missing")
    return inc


def _syntax_check(sources: list[Path], includes: list[Path]) -> None:
    cmd = ["g++", "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-Wno-deprecated-declarations"]
    for inc in includes:
        cmd += ["-isystem" if inc.is_relative_to(ROOT / ".deps") or inc == CUDA_INCLUDE else "-I", str(inc)]
    for src in sources:
        r = subprocess.run(cmd + [str(src)], capture_output=True, text=True)
        assert r.returncode == 0, f"{src.name}:\n{r.stderr[-3000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("version", ["11.1", "8.6"])
def test_plugins_compile(version):
    inc = _headers(version)
    tp = ROOT / "trt_plugins"
    _syntax_check([tp / s for s in PLUGIN_SOURCES],
                  [inc, CUDA_INCLUDE, tp / "common", tp / "include", tp / "quantConv1dSiLUPlugin",
                   tp / "quantSSDPlugin", tp / "bitsAsFloatPlugin", tp / "w8a8LinearPlugin", tp / "decodeMixerPlugin"])


@pytest.mark.slow
@pytest.mark.parametrize("version", ["11.1", "8.6"])
def test_runner_compiles(version):
    inc = _headers(version)
    cpp = ROOT / "runtime" / "cpp"
    _syntax_check([cpp / s for s in RUNNER_SOURCES], [inc, CUDA_INCLUDE, cpp])
