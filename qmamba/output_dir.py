"""``atomic_output_dir``: a command's output folder appears whole or not at all.

A command that writes a folder (a checkpoint, an ONNX export, engines) writes into a temporary
sibling of the output and renames it into place only when the work succeeded. A failed or
interrupted run therefore leaves no half-written output, and an output it was allowed to replace
(``--force``) stays intact until the new one is complete::

    with atomic_output_dir(args.out, force=args.force, inputs=[args.model]) as tmp:
        save_quantized(model, tmp)
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from .errors import BadInputError, OutputExistsError


def _overlaps(output: Path, given: Path) -> bool:
    """Whether writing ``output`` could replace ``given`` or anything inside it."""
    return output == given or output in given.parents or given in output.parents


def check_output_dir(path, force: bool = False, inputs: Iterable = ()) -> Path:
    """Refuses an output that exists (unless ``force``) or that overlaps one of ``inputs``;
    returns the output path made absolute."""
    out = Path(path).expanduser().resolve()
    for given in inputs:
        given = Path(given).expanduser().resolve()
        if _overlaps(out, given):
            raise BadInputError(f"output {path} would overwrite the input {given}; "
                                f"write the output to another folder")
    if out.exists() and not force:
        if not out.is_dir():
            raise OutputExistsError(f"output {path} exists and is not a folder; "
                                    f"pass --force to replace it or choose another output")
        if any(out.iterdir()):
            raise OutputExistsError(f"output folder {path} exists and is not empty; "
                                    f"pass --force to replace it or choose another output")
    return out


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


@contextlib.contextmanager
def atomic_output_dir(path, force: bool = False, inputs: Iterable = ()) -> Iterator[Path]:
    """Yields an empty temporary folder next to ``path``; on success it becomes ``path``.

    Refused before any work (``check_output_dir``): an existing non-empty ``path`` without
    ``force`` (OutputExistsError) and a ``path`` equal to, inside or above one of ``inputs``
    (BadInputError). On an error or KeyboardInterrupt inside the block the temporary folder is
    removed (with the parent folders it created) and the previous output, if any, is left as it
    was. On success a previous output is moved aside, the new one renamed into place, and only then
    the previous one deleted.
    """
    out = check_output_dir(path, force, inputs)
    created = [p for p in reversed(out.parents) if not p.exists()]   # outermost first
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for parent in reversed(created):   # a failed run leaves no empty folders behind either
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise
    old = None
    if out.exists() or out.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent)) / out.name
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)      # put the previous output back before reporting the failure
            old.parent.rmdir()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        _remove(old)
        old.parent.rmdir()


def carry_over(old_dir, new_dir, names: Iterable[str]) -> list[Path]:
    """Copies the files ``names`` that the previous output ``old_dir`` holds into ``new_dir``
    (the temporary folder of ``atomic_output_dir``), for what a rewrite should keep, e.g. the
    TensorRT timing cache of an engine folder rebuilt with ``--force``. Missing names are skipped;
    returns the copies made."""
    old_dir, new_dir = Path(old_dir), Path(new_dir)
    copied = []
    for name in names:
        if (old_dir / name).is_file():
            copied.append(Path(shutil.copy2(old_dir / name, new_dir / name)))
    return copied
