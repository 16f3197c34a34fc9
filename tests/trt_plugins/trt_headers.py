"""TensorRT header folders for the compile checks, found where a TensorRT user has them.

Looked at, in this order (the first folder of each TensorRT version wins):

- ``QMAMBA_TRT_INCLUDE_DIRS``: folders separated by ``os.pathsep``, e.g. one per installed TensorRT;
- ``TensorRT_INCLUDE_DIR``, then ``TensorRT_ROOT``/include (the variables the package build reads);
- the include folder of an installed TensorRT: beside the ``tensorrt_libs`` / ``tensorrt`` Python
  packages, or the system's (``/usr/include/<multiarch>``, ``/usr/include``).

Each folder's NvInferVersion.h says its version.
"""
from __future__ import annotations

import importlib.util
import os
import platform
import re
from pathlib import Path

ENV_HINT = ("set QMAMBA_TRT_INCLUDE_DIRS (os.pathsep-separated TensorRT include folders) or "
            "TensorRT_INCLUDE_DIR")


def header_version(include: Path) -> tuple[int, int] | None:
    """(major, minor) of the TensorRT headers in ``include``, None if it holds no NvInferVersion.h."""
    try:
        text = (include / "NvInferVersion.h").read_text(errors="replace")
    except OSError:
        return None
    defines = dict(re.findall(r"^#define\s+(\w+)\s+(\w+)", text, re.M))

    def value(name: str) -> int | None:
        v = defines.get(name)
        v = defines.get(v, v)  # TensorRT 10+: NV_TENSORRT_MAJOR is TRT_MAJOR_ENTERPRISE (or _RTX)
        return int(v) if v is not None and v.isdigit() else None

    major, minor = value("NV_TENSORRT_MAJOR"), value("NV_TENSORRT_MINOR")
    return None if major is None or minor is None else (major, minor)


def _installed_include_dirs() -> list[Path]:
    dirs = []
    for package in ("tensorrt_libs", "tensorrt"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            folder = Path(next(iter(spec.submodule_search_locations)))
            dirs += [folder / "include", folder.parent / "include"]
    multiarch = f"{platform.machine()}-linux-gnu"
    return dirs + [Path("/usr/include") / multiarch, Path("/usr/include")]


def candidate_dirs() -> list[Path]:
    """Every folder looked at, in order (see the module's docstring)."""
    dirs = [Path(p) for p in os.environ.get("QMAMBA_TRT_INCLUDE_DIRS", "").split(os.pathsep) if p]
    if os.environ.get("TensorRT_INCLUDE_DIR"):
        dirs.append(Path(os.environ["TensorRT_INCLUDE_DIR"]))
    if os.environ.get("TensorRT_ROOT"):
        dirs.append(Path(os.environ["TensorRT_ROOT"]) / "include")
    return dirs + _installed_include_dirs()


def found_headers() -> dict[tuple[int, int], Path]:
    """(major, minor) -> include folder, for every TensorRT version found."""
    found: dict[tuple[int, int], Path] = {}
    for d in candidate_dirs():
        version = header_version(d)
        if version is not None:
            found.setdefault(version, d)
    return found


def newest_headers(plugin_api: str) -> tuple[tuple[int, int], Path] | None:
    """The newest headers of one plugin API: "V3" (TensorRT 10 and later) or "V2" (TensorRT 8.5, 8.6)."""
    wanted = {"V3": lambda major: major >= 10, "V2": lambda major: major == 8}[plugin_api]
    found = found_headers()
    versions = sorted(v for v in found if wanted(v[0]))
    return (versions[-1], found[versions[-1]]) if versions else None
