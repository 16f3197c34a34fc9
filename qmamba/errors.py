"""qmamba's exception types.

Every error qmamba raises on purpose is a ``QmambaError``. The ones caused by what the user gave
(arguments, files, feeds, graph parameters) also derive from the built-in type a Python caller
would catch for that mistake (``ValueError``, ``FileNotFoundError``, ``FileExistsError``), so code
written against the built-in types keeps working. The command line maps them to exit codes:
2 for bad input, 1 for a failure of the work itself (see ``qmamba.cli``).

Messages say what is wrong, where (the file, argument, node or tensor) and what to do about it,
e.g. ``"prefill.onnx: initializer layers.0.mixer.A_log holds NaN; re-export the model"``.
"""
from __future__ import annotations


class QmambaError(Exception):
    """Base of every error qmamba raises on purpose."""


class BadInputError(QmambaError, ValueError):
    """An argument, file content, feed or parameter that qmamba cannot accept."""


class MissingFileError(QmambaError, FileNotFoundError):
    """A file or directory the user named does not exist (or is not the kind expected)."""


class OutputExistsError(QmambaError, FileExistsError):
    """The output path exists and would be replaced; the user must pass ``--force``."""


class WorkFailedError(QmambaError, RuntimeError):
    """The input was accepted but the work failed (a runtime, a build, the file system)."""
