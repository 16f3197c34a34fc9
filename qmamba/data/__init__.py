"""Text the commands and tests read by default: excerpts of public corpora shipped with qmamba.

``text_file(name)`` finds a text by its relative name (``tinyshakespeare/input.txt``,
``wikitext-2/valid.txt``, ``wikitext-2/test.txt``). A folder named by ``QMAMBA_DATA`` that holds
the full corpora under the same names takes precedence, so figures over whole files need only
that variable; without it the excerpts here are used (README.md in this folder gives their
sources, licences and sizes).
"""
from __future__ import annotations

import os
from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent
DEFAULT_TEXT = "tinyshakespeare/input.txt"


def search_dirs() -> list[Path]:
    """The folders ``text_file`` looks in, first match wins: ``$QMAMBA_DATA`` (if set), then the
    shipped samples."""
    override = os.environ.get("QMAMBA_DATA")
    return [Path(override), SAMPLES_DIR] if override else [SAMPLES_DIR]


def text_file(name: str = DEFAULT_TEXT) -> Path:
    """Path of the text called ``name`` (relative, e.g. ``wikitext-2/valid.txt``)."""
    if Path(name).is_absolute():
        raise ValueError(f"qmamba.data: text name must be relative to a data folder, got {name!r}")
    dirs = search_dirs()
    for folder in dirs:
        if (folder / name).is_file():
            return folder / name
    looked = ", ".join(str(d) for d in dirs)
    raise FileNotFoundError(f"qmamba.data: no text {name!r} in {looked} "
                            "(set QMAMBA_DATA to a folder holding it)")


def read_text(path, command: str, min_bytes: int = 1) -> bytes:
    """The bytes of the user's text file ``path``; a missing, unreadable or too short file is
    refused naming it (``command`` starts the message, as the command line prints it)."""
    from qmamba.errors import BadInputError, MissingFileError

    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"{command}: text file {p} does not exist"
                               + (" (it is a folder)" if p.is_dir() else ""))
    data = p.read_bytes()
    if len(data) < min_bytes:
        raise BadInputError(f"{command}: {p} holds {len(data)} bytes; at least {min_bytes} are needed")
    return data
