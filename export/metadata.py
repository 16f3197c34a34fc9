"""The metadata files qmamba writes beside its graphs and engines, and their one reader and writer each.

- ``qmamba_onnx.json`` (``qmamba export`` DIR; copied into ``qmamba build`` ENGINES): format
  ``qmamba-onnx``, the model config, the two graphs (file, inputs, outputs, external data) and the
  state names and shapes of every layer (``export/onnx_export.metadata`` makes it), and
  ``tokenizer`` (``qmamba.tokenizer.tokenizer_record``: bytes, or the Hugging Face tokenizer whose
  files lie beside it; absent when none was carried).
- ``qmamba_engines.json`` (``qmamba build`` ENGINES): format ``qmamba-engines``, the config and
  states again, the profiles, the decode plugins used and the bytes a decode step reads
  (``runtime/build.build_engines`` makes it; ``qmamba bench`` reads it), and the export's
  ``tokenizer`` (its files are copied too).

Here rather than in ``runtime/`` so that both the exporter and the runtimes import it.
A reader fails with an error that names the file: missing, not JSON, another format, a missing key.
"""
from __future__ import annotations

import json
from pathlib import Path

from .validate import QMambaInputError

ONNX_METADATA = "qmamba_onnx.json"
ONNX_FORMAT = "qmamba-onnx"
ENGINES_METADATA = "qmamba_engines.json"
ENGINES_FORMAT = "qmamba-engines"

# Keys every reader of a file relies on.
ONNX_KEYS = ("format", "config", "graphs", "states")
ENGINES_KEYS = ("format", "config", "states", "profiles", "weight_bytes", "state_bytes_per_row")


def read_json_object(path: Path) -> dict:
    """The JSON object in ``path`` (also config.json for ``model_source``); errors name the file."""
    try:
        obj = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise QMambaInputError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(obj, dict):
        raise QMambaInputError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _read(path: Path, fmt: str, keys: tuple[str, ...], made_by: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent}: no {path.name} (not a `{made_by}` directory)")
    meta = read_json_object(path)
    if meta.get("format") != fmt:
        raise QMambaInputError(f"{path}: format is {meta.get('format')!r}, expected {fmt!r}")
    missing = [k for k in keys if k not in meta]
    if missing:
        raise QMambaInputError(f"{path}: key {missing[0]!r} is missing; write it again with `{made_by}`")
    return meta


def _write(path: Path, meta: dict) -> Path:
    path.write_text(json.dumps(meta, indent=2))
    return path


def read_onnx_metadata(onnx_dir) -> dict:
    """DIR/qmamba_onnx.json, checked to be qmamba's, with both graphs described."""
    path = Path(onnx_dir) / ONNX_METADATA
    meta = _read(path, ONNX_FORMAT, ONNX_KEYS, "qmamba export")
    for kind in ("prefill", "decode"):
        graph = meta["graphs"].get(kind) if isinstance(meta["graphs"], dict) else None
        if not isinstance(graph, dict) or "file" not in graph:
            raise QMambaInputError(f"{path}: graphs.{kind}.file is missing; write it again with `qmamba export`")
    return meta


def write_onnx_metadata(onnx_dir, meta: dict) -> Path:
    return _write(Path(onnx_dir) / ONNX_METADATA, meta)


def read_engines_metadata(engine_dir) -> dict:
    """ENGINES/qmamba_engines.json, checked to be qmamba's."""
    return _read(Path(engine_dir) / ENGINES_METADATA, ENGINES_FORMAT, ENGINES_KEYS, "qmamba build")


def write_engines_metadata(engine_dir, meta: dict) -> Path:
    return _write(Path(engine_dir) / ENGINES_METADATA, meta)
