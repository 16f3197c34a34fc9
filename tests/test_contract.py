"""docs/ops.md is the one contract: the torch reference, the ONNX schemas, the TensorRT plugin
creators and the README must all say the same thing about each op."""
from __future__ import annotations

import inspect
import math
import re
from pathlib import Path

import pytest

from qmamba.export import ops

ROOT = Path(__file__).resolve().parents[1]
OP_NAMES = ("QuantConv1dSiLU", "QuantSSD")


def _table_rows(section: str, heading: str) -> list[list[str]]:
    m = re.search(rf"### {heading}\n\n(\|.*?\n)\n", section + "\n\n", re.S)
    assert m, f"docs/ops.md: no '### {heading}' table"
    lines = [ln for ln in m.group(1).strip().splitlines()[2:]]
    return [[c.strip().strip("`") for c in ln.strip("|").split("|")] for ln in lines]


def contract() -> dict:
    """{op: {"inputs": [(name, dtype)], "outputs": [(name, dtype)], "attributes": {name: (type, default)}}}"""
    text = (ROOT / "docs" / "ops.md").read_text()
    out = {}
    for op in OP_NAMES:
        m = re.search(rf"\n## {op}\n(.*?)(?=\n## |\Z)", text, re.S)
        assert m, f"docs/ops.md: no section for {op}"
        sec = m.group(1)
        out[op] = {
            "inputs": [(r[1], r[2]) for r in _table_rows(sec, "Inputs")],
            "outputs": [(r[1], r[2]) for r in _table_rows(sec, "Outputs")],
            "attributes": {r[0]: (r[1], r[2]) for r in _table_rows(sec, "Attributes")},
        }
    return out


CONTRACT = contract()


def test_contract_parses():
    assert [n for n, _ in CONTRACT["QuantConv1dSiLU"]["inputs"]][:3] == ["xBC", "weight", "bias"]
    assert CONTRACT["QuantSSD"]["attributes"]["out_dtype"] == ("int", "1")


def _default(value: str):
    if value == "required":
        return inspect.Parameter.empty
    return math.inf if value == "inf" else float(value)


@pytest.mark.parametrize("op,fns", [("QuantConv1dSiLU", [ops.quant_conv1d_silu_ref]),
                                    ("QuantSSD", [ops.quant_ssd_ref, ops.quant_ssd_chunked])])
def test_torch_reference_matches_contract(op, fns):
    spec = CONTRACT[op]
    for fn in fns:
        params = inspect.signature(fn).parameters.values()
        positional = [p.name for p in params if p.kind == p.POSITIONAL_OR_KEYWORD]
        keyword = {p.name: p.default for p in params if p.kind == p.KEYWORD_ONLY}
        assert positional == [n for n, _ in spec["inputs"]], fn.__name__
        assert set(keyword) == set(spec["attributes"]), fn.__name__
        for name, (_, default) in spec["attributes"].items():
            got = keyword[name]
            if name == "out_dtype":  # torch dtype standing for the ONNX code of the table
                got = {"torch.float32": 1.0, "torch.float16": 10.0}[str(got)]
            if name == "chunk_size" and fn is ops.quant_ssd_ref:
                continue  # accepted for a shared signature, ignored by the sequential reference
            assert got == _default(default), (fn.__name__, name, got, default)


def _num(v):
    return math.inf if v == "inf" else float(v)


@pytest.mark.parametrize("op", OP_NAMES)
def test_onnx_spec_matches_contract(op):
    from qmamba.export.onnx_ops import OPS

    spec, doc = OPS[op], CONTRACT[op]
    assert [(t.name, t.dtype) for t in spec.inputs] == doc["inputs"]
    dtype_of = {"float32 or float16": "float32 or float16"}
    assert [(t.name, dtype_of.get(t.dtype, t.dtype)) for t in spec.outputs] == doc["outputs"]
    assert set(spec.attributes) == set(doc["attributes"])
    for name, (typ, default) in doc["attributes"].items():
        a = spec.attributes[name]
        assert a.type == typ, name
        if default == "required":
            assert a.default is None, name
        else:
            assert a.default is not None and float(a.default) == _num(default), name


def test_readme_lists_each_ops_attributes():
    readme = (ROOT / "README.md").read_text()
    for op in OP_NAMES:
        row = re.search(rf"^\| {op} \| (.*) \|$", readme, re.M)
        assert row, f"README has no attribute row for {op}"
        assert [a.strip() for a in row.group(1).split(",")] == list(CONTRACT[op]["attributes"])
