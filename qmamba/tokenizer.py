"""Tokenizers behind one interface: raw bytes, or a Hugging Face tokenizer.

``Tokenizer.encode(text) -> list[int]``, ``encode_bytes(data)`` (a file's bytes: byte models take
them as they are, others decode UTF-8 first), ``decode(ids) -> str``, ``vocab_size`` (the ids it can
produce), ``eos_token_id`` / ``pad_token_id`` / ``bos_token_id`` (None when it has none).

- ``ByteTokenizer``: UTF-8 bytes, vocabulary 256 (qmamba's shipped models).
- ``HFTokenizer``: a directory with ``tokenizer_config.json`` (transformers' ``AutoTokenizer``) or
  only ``tokenizer.json`` (the ``tokenizers`` library), or a hub id (transformers downloads it).

``find_tokenizer(model_dir, tokenizer_arg)`` picks the tokenizer of a model: the one named on the
command line, else the files in the model directory, else bytes when the model's vocabulary is
256. ``carry_tokenizer`` (``copy_tokenizer_files`` for a directory) writes the tokenizer into
checkpoint, export and build outputs so an engine directory is self-contained, and
``tokenizer_record`` is what their metadata says of it. A model's vocabulary is often padded past the tokenizer's (50 277 ->
50 288): ``mask_padding_logits`` keeps those rows from ever being chosen.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from qmamba.export.validate import QMambaInputError

BYTES = "bytes"
# Files that make up a Hugging Face tokenizer (whichever of them a directory holds).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model",
                   "chat_template.jinja")


class Tokenizer:
    name: str
    vocab_size: int
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_bytes(self, data: bytes) -> list[int]:
        """Token ids of a file's bytes (invalid UTF-8 is replaced by U+FFFD before encoding)."""
        return self.encode(data.decode("utf-8", errors="replace"))

    def decode(self, ids) -> str:
        raise NotImplementedError


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as tokens; undecodable byte sequences decode to U+FFFD."""
    name = BYTES
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_bytes(self, data: bytes) -> list[int]:
        return list(data)

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class HFTokenizer(Tokenizer):
    """A ``transformers`` tokenizer or a bare ``tokenizers.Tokenizer`` (tokenizer.json only)."""

    def __init__(self, backend, name: str, special: dict[str, int | None], directory: Path | None = None):
        from tokenizers import Tokenizer as RawTokenizer

        self._backend = backend
        self.name = name
        self.directory = directory          # the files it was read from; None for a hub id
        self._is_transformers = not isinstance(backend, RawTokenizer)
        self.vocab_size = len(backend) if self._is_transformers else backend.get_vocab_size(with_added_tokens=True)
        self.bos_token_id = special.get("bos_token_id")
        self.eos_token_id = special.get("eos_token_id")
        self.pad_token_id = special.get("pad_token_id")

    def encode(self, text: str) -> list[int]:
        if self._is_transformers:
            return list(self._backend.encode(text, add_special_tokens=False))
        return list(self._backend.encode(text, add_special_tokens=False).ids)

    def decode(self, ids) -> str:
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=False)


def has_tokenizer(directory) -> bool:
    d = Path(directory)
    return d.is_dir() and any((d / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))


def _special_ids_of_file(directory: Path, backend) -> dict[str, int | None]:
    """bos/eos/pad ids of a bare tokenizer.json from the token strings its sibling files name."""
    names: dict = {}
    for f in ("special_tokens_map.json", "tokenizer_config.json"):
        p = directory / f
        if p.is_file():
            for k, v in json.loads(p.read_text()).items():
                if k in ("bos_token", "eos_token", "pad_token"):
                    names.setdefault(k, v.get("content") if isinstance(v, dict) else v)
    return {f"{k}_id": (backend.token_to_id(v) if isinstance(v, str) else None)
            for k, v in ((k, names.get(k)) for k in ("bos_token", "eos_token", "pad_token"))}


def _from_transformers(spec: str, local_files_only: bool) -> HFTokenizer:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec, local_files_only=local_files_only)
    directory = Path(spec) if Path(spec).is_dir() else None
    return HFTokenizer(tok, spec, {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                                   "pad_token_id": tok.pad_token_id}, directory)


def load_tokenizer(spec: str, local_files_only: bool = False) -> Tokenizer:
    """``"bytes"``, a tokenizer directory or a Hugging Face hub id -> Tokenizer."""
    if spec == BYTES:
        return ByteTokenizer()
    d = Path(spec)
    if d.is_dir():
        if (d / "tokenizer_config.json").is_file():
            return _from_transformers(str(d), local_files_only=True)
        if (d / "tokenizer.json").is_file():
            from tokenizers import Tokenizer as RawTokenizer

            backend = RawTokenizer.from_file(str(d / "tokenizer.json"))
            return HFTokenizer(backend, str(d), _special_ids_of_file(d, backend), d)
        raise QMambaInputError(f"tokenizer {spec}: the directory holds neither tokenizer.json nor "
                               f"tokenizer_config.json")
    try:
        return _from_transformers(spec, local_files_only)
    except (OSError, ValueError) as e:
        raise QMambaInputError(f"tokenizer {spec!r}: not a local directory, and the Hugging Face hub "
                               f"could not provide it ({type(e).__name__}); download it where the "
                               f"network allows and pass its directory") from e


def _model_vocab_size(model_dir: Path) -> int | None:
    """The vocabulary a model directory's config.json declares (transformers, mamba_ssm, Quamba2
    or qmamba's own format), or None when it declares none."""
    p = model_dir / "config.json"
    if not p.is_file():
        return None
    try:
        conf = json.loads(p.read_text())
    except json.JSONDecodeError:
        return None
    conf = conf.get("config", conf) if isinstance(conf, dict) else {}
    v = conf.get("vocab_size") if isinstance(conf, dict) else None
    return int(v) if isinstance(v, int) else None


def find_tokenizer(model_dir, tokenizer_arg: str | None = None, local_files_only: bool = False,
                   vocab_size: int | None = None) -> Tokenizer:
    """The tokenizer for a model: ``tokenizer_arg`` (a directory, hub id or "bytes") when given,
    else the tokenizer files in ``model_dir``, else bytes for a vocabulary of 256 (or an unknown
    one); any other vocabulary without a tokenizer is an error that says what to pass.
    ``vocab_size`` is the model's vocabulary where ``model_dir`` has no config.json (an export
    or engine directory)."""
    if tokenizer_arg:
        return load_tokenizer(tokenizer_arg, local_files_only)
    d = Path(model_dir)
    if has_tokenizer(d):
        return load_tokenizer(str(d), local_files_only=True)
    vocab = vocab_size if vocab_size is not None else _model_vocab_size(d)
    if vocab is None or vocab == ByteTokenizer.vocab_size:
        return ByteTokenizer()
    raise QMambaInputError(f"{d}: the model has a vocabulary of {vocab} tokens but no tokenizer "
                           f"files; pass --tokenizer DIR_OR_HUB_ID")


def copy_tokenizer_files(src_dir, dst_dir) -> list[Path]:
    """Copies the tokenizer files ``src_dir`` holds into ``dst_dir``; returns the copies."""
    src, dst = Path(src_dir), Path(dst_dir)
    copied = []
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            dst.mkdir(parents=True, exist_ok=True)
            copied.append(Path(shutil.copy2(src / name, dst / name)))
    return copied


def carry_tokenizer(tok: Tokenizer, dst_dir) -> list[Path]:
    """Writes ``tok`` into ``dst_dir`` so that ``find_tokenizer(dst_dir)`` finds it again: the
    files of its directory, or transformers' own files for one read from the hub. Bytes need none."""
    if isinstance(tok, ByteTokenizer):
        return []
    if tok.directory is not None:
        return copy_tokenizer_files(tok.directory, dst_dir)
    dst = Path(dst_dir)
    before = {p.name for p in dst.iterdir()} if dst.is_dir() else set()
    tok._backend.save_pretrained(str(dst))
    return sorted(p for p in dst.iterdir() if p.name not in before and p.name in TOKENIZER_FILES)


def tokenizer_record(tok: Tokenizer) -> dict:
    """What export and build metadata say of the tokenizer their directory carries."""
    if isinstance(tok, ByteTokenizer):
        return {"kind": BYTES, "vocab_size": tok.vocab_size}
    return {"kind": "huggingface", "source": tok.name, "vocab_size": tok.vocab_size,
            "eos_token_id": tok.eos_token_id}


def mask_padding_logits(logits, real_vocab: int):
    """``logits[..., real_vocab:] = -inf`` on a copy (torch or numpy): the rows a padded
    vocabulary adds past the tokenizer's never win greedy search or sampling."""
    if real_vocab < 1:
        raise ValueError(f"real_vocab must be >= 1, got {real_vocab}")
    if logits.shape[-1] <= real_vocab:
        return logits
    masked = logits.clone() if hasattr(logits, "clone") else logits.copy()
    masked[..., real_vocab:] = float("-inf")
    return masked
