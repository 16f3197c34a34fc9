"""The plugin library compiles against both plugin APIs: TensorRT 10+ headers (IPluginV3) and 8.x
headers (IPluginV2DynamicExt), and the runner against both. Takes the newest headers of each API that
trt_headers finds (QMAMBA_TRT_INCLUDE_DIRS, TensorRT_INCLUDE_DIR, an installed TensorRT) and needs g++
with the CUDA headers; skips otherwise."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from trt_headers import ENV_HINT, newest_headers

ROOT = Path(__file__).resolve().parents[2]


def _cuda_include() -> Path | None:
    """The CUDA toolkit's include folder: $CUDA_HOME's, the one beside nvcc, or the toolkit's default
    install location."""
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    roots += [Path(nvcc).resolve().parents[1] if nvcc else None, "/usr/local/cuda"]
    found = [Path(r) / "include" for r in roots if r and (Path(r) / "include" / "cuda_runtime_api.h").is_file()]
    return found[0] if found else None


CUDA_INCLUDE = _cuda_include()
PLUGIN_SOURCES = ["common/qmambaFields.cpp", "common/qmambaShapes.cpp", "common/qmambaTrtUtils.cpp",
                  "common/qmambaPluginLibrary.cpp", "quantConv1dSiLUPlugin/quantConv1dSiLUCore.cpp",
                  "quantSSDPlugin/quantSSDCore.cpp", "bitsAsFloatPlugin/bitsAsFloatCore.cpp",
                  "w8a8LinearPlugin/w8a8LinearCore.cpp", "decodeMixerPlugin/decodeMixerCore.cpp",
                  "gatedNormPlugin/gatedNormCore.cpp", "inProjConvPlugin/inProjConvCore.cpp"]
RUNNER_SOURCES = ["runnerCommon.cpp", "engine.cpp", "engineProfile.cpp", "engineBuilder.cpp", "session.cpp",
                  "sessionBench.cpp", "sessionProfile.cpp", "runnerApi.cpp", "qmamba_trt.cpp"]


API_NAMES = {"V3": "TensorRT 10+", "V2": "TensorRT 8"}


def _headers(plugin_api: str) -> Path:
    if shutil.which("g++") is None or CUDA_INCLUDE is None:
        pytest.skip("g++ or the CUDA headers are missing")
    found = newest_headers(plugin_api)
    if found is None:
        pytest.skip(f"no {API_NAMES[plugin_api]} headers found: {ENV_HINT}")
    return found[1]


def _syntax_check(sources: list[Path], trt_include: Path, includes: list[Path]) -> None:
    """g++ -fsyntax-only with qmamba's warnings as errors; TensorRT's and CUDA's headers are system headers."""
    cmd = ["g++", "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-Wno-deprecated-declarations",
           "-isystem", str(trt_include), "-isystem", str(CUDA_INCLUDE)]
    for inc in includes:
        cmd += ["-I", str(inc)]
    for src in sources:
        r = subprocess.run(cmd + [str(src)], capture_output=True, text=True)
        assert r.returncode == 0, f"{src.name}:\n{r.stderr[-3000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("plugin_api", ["V3", "V2"])
def test_plugins_compile(plugin_api):
    inc = _headers(plugin_api)
    tp = ROOT / "trt_plugins"
    _syntax_check([tp / s for s in PLUGIN_SOURCES], inc,
                  [tp / "common", tp / "include", tp / "quantConv1dSiLUPlugin",
                   tp / "quantSSDPlugin", tp / "bitsAsFloatPlugin", tp / "w8a8LinearPlugin", tp / "decodeMixerPlugin",
                   tp / "gatedNormPlugin", tp / "inProjConvPlugin"])


@pytest.mark.slow
@pytest.mark.parametrize("plugin_api", ["V3", "V2"])
def test_runner_compiles(plugin_api):
    inc = _headers(plugin_api)
    cpp = ROOT / "runtime" / "cpp"
    _syntax_check([cpp / s for s in RUNNER_SOURCES], inc, [cpp])
