"""export/ (the model, its ops and kernels, ONNX export) never imports runtime/ (what runs the exported
graphs and engines): the one allowed direction is runtime -> export, so neither package can be part of an
import cycle through the other."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

EXPORT = Path(__file__).resolve().parents[1] / "export"


def _runtime_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level >= 2:  # from ..runtime import x / from .. import runtime
                module = module or next((a.name for a in node.names if a.name == "runtime"), "")
                names = [f"qmamba.{module}"]
            elif node.level == 0:
                names = [module]
        found += [f"line {node.lineno}: {n}" for n in names if n == "qmamba.runtime" or n.startswith("qmamba.runtime.")]
    for call in (n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)):
        if any(isinstance(a, ast.Constant) and str(a.value).startswith("qmamba.runtime") for a in call.args):
            found.append(f"line {call.lineno}: {call.args[0].value} (dynamic import)")
    return found


@pytest.mark.parametrize("path", sorted(EXPORT.glob("*.py")), ids=lambda p: p.name)
def test_export_does_not_import_runtime(path):
    assert _runtime_imports(path) == []
