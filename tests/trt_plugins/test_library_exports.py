"""Each native library exports its C entry points and nothing else (CMake's qmamba_export_only).

A toolchain may link libstdc++ or cudart statically (some CUDA toolchains do). A library that re-exported
them then interposed on every library loaded after it: in a Python process the plugin library's iostreams
ran the kernels library's private libstdc++ copy and every engine open crashed. And TensorRT's
`IPluginRegistry::loadLibrary` / `trtexec --dynamicPlugins` find the plugin library only through its
exported getCreators (V3) or getPluginCreators (V2). Reads the dynamic symbol tables with `nm`; checks
the libraries this installation has (the kernels everywhere nvcc is; the plugins and runner where
TensorRT is) and skips the others."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What TensorRT's plugin loaders look up, and qmamba's own queries (qmambaPluginLibrary.h).
PLUGIN_ENTRY_POINTS = {"setLoggerFinder", "qmamba_plugin_library_version", "qmamba_plugin_fields"}
CREATOR_ENTRY_POINTS = {"V2": "getPluginCreators", "V3": "getCreators"}


def declared(header: Path, prefix: str) -> set[str]:
    """The C functions a header declares whose names start with prefix."""
    return set(re.findall(rf"\b({prefix}\w+)\s*\(", header.read_text()))


def dynamic_symbols(lib: Path) -> set[str]:
    """Names of the symbols lib defines in its dynamic symbol table (what other libraries can bind to)."""
    if shutil.which("nm") is None:
        pytest.skip("nm (binutils) is not installed")
    out = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True)
    return {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}


def check_plugin_library_exports(lib: Path) -> str:
    """Checks that lib exports TensorRT's entry points and qmamba's queries alone; returns which plugin
    API (V2 or V3) its one creator entry point belongs to."""
    symbols = dynamic_symbols(lib)
    found = [api for api, name in CREATOR_ENTRY_POINTS.items() if name in symbols]
    assert len(found) == 1, f"{lib} exports {len(found)} of {sorted(CREATOR_ENTRY_POINTS.values())}"
    assert symbols == PLUGIN_ENTRY_POINTS | {CREATOR_ENTRY_POINTS[found[0]]}
    return found[0]


def _installed(find) -> Path:
    try:
        path = find()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    if path is None or not Path(path).is_file():
        pytest.skip("library not built on this machine")
    return Path(path)


def test_kernels_library_exports_its_c_abi_only():
    from qmamba.export import kernels

    lib = _installed(kernels.library_path)
    api = declared(ROOT / "trt_plugins" / "include" / "qmamba_kernels.h", "qmamba_")
    assert len(api) >= 9
    assert dynamic_symbols(lib) == api


@pytest.mark.tensorrt
def test_plugin_library_exports_tensorrt_entry_points_only():
    from qmamba.runtime import trt_runner

    check_plugin_library_exports(_installed(trt_runner.plugin_library))


@pytest.mark.tensorrt
def test_runner_library_exports_its_c_abi_only():
    from qmamba.runtime import trt_runner

    lib = _installed(lambda: trt_runner._find_library("QMAMBA_RUNNER_LIB", "libqmamba_runner.so"))
    assert dynamic_symbols(lib) == declared(ROOT / "runtime" / "cpp" / "qmamba_runner.h", "qmr_")
