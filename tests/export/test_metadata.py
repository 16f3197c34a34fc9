"""The metadata files' one reader: every way a file can be wrong is named with the file."""
from __future__ import annotations

import json

import pytest

from qmamba.export import metadata

ONNX_META = {"format": "qmamba-onnx", "config": {}, "states": [],
             "graphs": {"prefill": {"file": "prefill.onnx"}, "decode": {"file": "decode.onnx"}}}


def test_round_trip(tmp_path):
    metadata.write_onnx_metadata(tmp_path, ONNX_META)
    assert metadata.read_onnx_metadata(tmp_path) == ONNX_META
    engines = {"format": "qmamba-engines", "config": {}, "states": [], "profiles": {}, "weight_bytes": 1,
               "state_bytes_per_row": 2}
    metadata.write_engines_metadata(tmp_path, engines)
    assert metadata.read_engines_metadata(tmp_path) == engines


def test_missing_file_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="no qmamba_onnx.json \\(not a `qmamba export` directory\\)"):
        metadata.read_onnx_metadata(tmp_path)
    with pytest.raises(FileNotFoundError, match="no qmamba_engines.json \\(not a `qmamba build` directory\\)"):
        metadata.read_engines_metadata(tmp_path)


@pytest.mark.parametrize("text,message", [
    ('{"format": "qmamba-onnx", ', "not valid JSON"),
    ("[]", "expected a JSON object, got list"),
    ('{"format": "qmamba-engines"}', "format is 'qmamba-engines', expected 'qmamba-onnx'"),
    (json.dumps({k: v for k, v in ONNX_META.items() if k != "states"}), "key 'states' is missing"),
    (json.dumps({**ONNX_META, "graphs": {"prefill": {"file": "prefill.onnx"}}}), "graphs.decode.file is missing"),
])
def test_bad_file_is_named(tmp_path, text, message):
    (tmp_path / metadata.ONNX_METADATA).write_text(text)
    with pytest.raises(ValueError, match=message) as e:
        metadata.read_onnx_metadata(tmp_path)
    assert str(tmp_path / metadata.ONNX_METADATA) in str(e.value)
