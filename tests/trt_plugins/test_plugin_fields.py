"""The TensorRT plugin creators declare exactly docs/ops.md's attribute tables (names, types,
defaults, order), their tensor positions follow its input/output tables, and the plugin name,
version and namespace are what the ONNX exporter writes. Parses the C++ sources: no TensorRT needed."""
from __future__ import annotations

import importlib
import importlib.util
import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# tests/test_contract.py parses docs/ops.md; loaded by path so that `pytest` from any directory finds it.
_spec = importlib.util.spec_from_file_location("qmamba_test_contract", ROOT / "tests" / "test_contract.py")
_contract = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_contract)
CONTRACT = _contract.CONTRACT
CORES = {
    "QuantConv1dSiLU": ROOT / "trt_plugins" / "quantConv1dSiLUPlugin" / "quantConv1dSiLUCore",
    "QuantSSD": ROOT / "trt_plugins" / "quantSSDPlugin" / "quantSSDCore",
}
ROW = re.compile(r'\{"(\w+)", FieldKind::k(Float|Int), (true|false), ([^}]+)\}')


def creator_fields(op: str, core: Path | None = None) -> list[tuple[str, str, str]]:
    """(name, type, default) rows of the field table in ``core``.cpp (default: the op's core), in the
    docs' notation."""
    src = (core or CORES[op]).with_suffix(".cpp").read_text()
    table = re.search(r"FieldSpec const \w+::kFIELDS\[kNB_FIELDS\] = \{(.*?)\n\};", src, re.S)
    assert table, f"{op}: no kFIELDS table"
    rows = []
    for name, kind, required, default in ROW.findall(table.group(1)):
        if required == "true":
            d = "required"
        elif default.strip() == "kInf":
            d = "inf"
        else:
            d = default.strip()
        rows.append((name, kind.lower(), d))
    return rows


def _same_default(doc: str, mine: str) -> bool:
    if doc in ("required", "inf") or mine in ("required", "inf"):
        return doc == mine
    return math.isclose(float(doc), float(mine))


@pytest.mark.parametrize("op", list(CORES))
def test_creator_fields_match_docs(op):
    rows = creator_fields(op)
    attrs = CONTRACT[op]["attributes"]
    assert [r[0] for r in rows] == list(attrs), f"{op}: field names/order differ from docs/ops.md"
    for name, kind, default in rows:
        doc_type, doc_default = attrs[name]
        assert kind == doc_type, f"{op}.{name}: plugin type {kind}, docs {doc_type}"
        assert _same_default(doc_default, default), f"{op}.{name}: plugin default {default}, docs {doc_default}"


@pytest.mark.parametrize("op", list(CORES))
def test_tensor_positions_match_docs(op):
    header = CORES[op].with_suffix(".h").read_text()
    consts = {m[0]: int(m[1]) for m in re.findall(r"static constexpr int32_t (k(?:IN|OUT)_\w+) = (\d+);", header)}
    for kind, prefix in (("inputs", "kIN_"), ("outputs", "kOUT_")):
        names = [n for n, _ in CONTRACT[op][kind]]
        for pos, name in enumerate(names):
            const = prefix + re.sub(r"(?<=[a-z])(?=[A-Z][a-z_])", "_", name).upper()
            assert consts.get(const) == pos, f"{op}: {const} should be {pos} ({name})"


@pytest.mark.parametrize("op", list(CORES))
def test_name_version_namespace(op):
    header = CORES[op].with_suffix(".h").read_text()
    assert f'kNAME = "{op}"' in header
    assert 'kVERSION = "1"' in header
    adapters = (ROOT / "trt_plugins" / "common" / "pluginV3Adapter.h").read_text()
    assert 'getPluginNamespace() const noexcept override { return ""; }' in adapters


# TensorRT-side plugins that are not ONNX ops of the export: their field tables live in their READMEs.
BUILD_PLUGINS = {
    "QmambaBitsAsFloat": ROOT / "trt_plugins" / "bitsAsFloatPlugin" / "bitsAsFloatCore",
    "QmambaW8A8Linear": ROOT / "trt_plugins" / "w8a8LinearPlugin" / "w8a8LinearCore",
    "QmambaDecodeMixer": ROOT / "trt_plugins" / "decodeMixerPlugin" / "decodeMixerCore",
    "QmambaGatedNorm": ROOT / "trt_plugins" / "gatedNormPlugin" / "gatedNormCore",
    "QmambaInProjConv": ROOT / "trt_plugins" / "inProjConvPlugin" / "inProjConvCore",
}
# Their Python modules, whose FIELDS are what `qmamba build` writes.
TWINS = {"QmambaW8A8Linear": "qmamba.runtime.w8a8_linear", "QmambaDecodeMixer": "qmamba.runtime.decode_mixer",
         "QmambaGatedNorm": "qmamba.runtime.prefill_fusion", "QmambaInProjConv": "qmamba.runtime.in_proj_conv"}


def _readme_table(op: str, heading: str) -> list[list[str]]:
    """The rows (cells) of the table under ``## heading`` in the plugin's README.md."""
    readme = BUILD_PLUGINS[op].parent / "README.md"
    doc = readme.read_text()
    rows = re.search(rf"## {heading}\n\n(?:[^|\n].*\n\n)*\|.*?\n\|.*?\n((?:\|.*\n)+)", doc)
    assert rows, f"{readme}: no '## {heading}' table"
    return [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in rows.group(1).strip().splitlines()]


@pytest.mark.parametrize("op", list(BUILD_PLUGINS))
def test_build_plugin_fields_match_docs(op):
    core = BUILD_PLUGINS[op]
    mine = creator_fields(op, core)
    docs = [row[:3] for row in _readme_table(op, "Parameters")]
    assert [d[0] for d in docs] == [m[0] for m in mine]
    for (name, kind, default), (_, doc_kind, doc_default) in zip(mine, docs):
        assert kind == doc_kind.removesuffix("32") and _same_default(doc_default, default), name
    assert f'kNAME = "{op}"' in core.with_suffix(".h").read_text()


@pytest.mark.parametrize("op", list(TWINS))
def test_python_fields_match_the_plugin(op):
    """runtime/w8a8_linear.py's, runtime/decode_mixer.py's and runtime/prefill_fusion.py's FIELDS (what
    `qmamba build` writes; None: required) are the plugins' tables."""
    twin = importlib.import_module(TWINS[op])
    assert twin.OP_NAME == op
    mine = creator_fields(op, BUILD_PLUGINS[op])
    assert [(n, t) for n, t, _ in twin.FIELDS] == [(n, t) for n, t, _ in mine]
    for (name, _, d), (_, _, m) in zip(twin.FIELDS, mine):
        doc = "required" if d is None else "inf" if d == math.inf else str(d)
        assert _same_default(doc, m), f"{op}.{name}: Python default {d}, plugin {m}"


@pytest.mark.parametrize("op, counts", [("QmambaDecodeMixer", (14, 14, 3)), ("QmambaGatedNorm", (2, 5, 1)),
                                        ("QmambaInProjConv", (8, 9, 4))])
def test_build_plugin_tensor_positions_match_docs(op, counts):
    """The kIN_* / kOUT_* constants of QmambaDecodeMixer, QmambaGatedNorm and QmambaInProjConv follow their READMEs'
    input and output tables; the input and output counts are the tables' (an optional input last; QmambaGatedNorm's
    z is optional too, gate = 0, and so is its z_col_scale)."""
    header = BUILD_PLUGINS[op].with_suffix(".h").read_text()
    consts = {m[0]: int(m[1]) for m in re.findall(r"static constexpr int32_t (k(?:IN|OUT)_\w+) = (\d+);", header)}
    for kind, prefix in (("Inputs", "kIN_"), ("Outputs", "kOUT_")):
        rows = _readme_table(op, kind)
        assert [int(r[0]) for r in rows] == list(range(len(rows))), f"{op} {kind}: numbering"
        for pos, name in enumerate(r[1] for r in rows):
            const = prefix + re.sub(r"(?<=[a-z])(?=[A-Z][a-z_])", "_", name).upper()
            assert consts.get(const) == pos, f"{op}: {const} should be {pos} ({name})"
    nb = {m[0]: int(m[1]) for m in re.findall(r"static constexpr int32_t (kMIN_INPUTS|kMAX_INPUTS|kNB_OUTPUTS) = (\d+);",
                                              header)}
    assert nb == dict(zip(("kMIN_INPUTS", "kMAX_INPUTS", "kNB_OUTPUTS"), counts))
    assert (counts[1], counts[2]) == tuple(len(_readme_table(op, kind)) for kind in ("Inputs", "Outputs"))
