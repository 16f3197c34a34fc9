"""The ``qmamba`` command line: one entry point, one module per subcommand.

Each subcommand module defines ``add_arguments(parser)`` and ``run(args) -> int``; they are imported
only when their command runs, so that optional dependencies (TensorRT, cuda-python) stay optional.

Errors are reported in one style, ``qmamba COMMAND: error: MESSAGE`` on stderr, and exit codes say
whose the problem is: 2 for bad input (arguments, files, feeds; ``qmamba.errors.BadInputError``,
``MissingFileError``, ``OutputExistsError`` and the built-in ``ValueError``, ``FileNotFoundError``,
``FileExistsError``), 1 for a failure of the work (``WorkFailedError``, ``RuntimeError``, ``OSError``
such as a full disk, anything unexpected), 130 when interrupted. The traceback is printed only with
``--debug`` (before or after the command) or ``QMAMBA_DEBUG=1``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from .errors import QmambaError, WorkFailedError

# name -> (module, one-line help)
COMMANDS = {
    "quickstart": ("qmamba.quickstart", "the main job on the built-in model: calibrate, quantize, report, export, check"),
    "calibrate": ("qmamba.export.calibrate", "float Mamba2 + text -> W8A8 model with group scales"),
    "inspect": ("qmamba.export.inspect", "scale report of a quantized or Quamba2 checkpoint"),
    "export": ("qmamba.export.onnx_export", "quantized model -> prefill.onnx + decode.onnx"),
    "check": ("qmamba.runtime.check", "PyTorch reference vs ONNX Runtime on real text"),
    "build": ("qmamba.runtime.build", "ONNX pair -> TensorRT engines"),
    "generate": ("qmamba.runtime.generate", "stream text from TensorRT engines or an exported ONNX pair (ONNX Runtime)"),
    "bench": ("qmamba.runtime.bench", "prefill latency and decode tokens/s of TensorRT engines"),
    "bisect": ("qmamba.runtime.bisect", "first tensor where a TensorRT engine departs from ONNX Runtime"),
    "bisect-build": ("qmamba.runtime.build_bisect", "first tensor of a graph whose computation TensorRT cannot build"),
    "eval": ("qmamba.runtime.evaluate", "bits per byte of a model on a text file"),
    "train": ("qmamba.export.train", "train the small byte-level Mamba2 shipped with qmamba"),
    "standin": ("qmamba.models.standin", "random weights with a real model's exact configuration (sizing, benchmarks)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qmamba", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


DEBUG_HELP = "print the traceback of an error (also QMAMBA_DEBUG=1)"
BAD_INPUT_EXIT = 2
WORK_FAILED_EXIT = 1
INTERRUPTED_EXIT = 130


def exit_code(error: BaseException) -> int:
    """2 for bad input, 1 for a failure of the work, 130 for an interrupt."""
    if isinstance(error, KeyboardInterrupt):
        return INTERRUPTED_EXIT
    if isinstance(error, WorkFailedError):
        return WORK_FAILED_EXIT
    # FileNotFoundError and FileExistsError are OSErrors: test them before the failures of the work.
    if isinstance(error, (ValueError, FileNotFoundError, FileExistsError)):
        return BAD_INPUT_EXIT
    return WORK_FAILED_EXIT


def error_line(command: str, error: BaseException) -> str:
    """The one line printed for ``error``; unexpected exception types are named, since their
    message alone (a KeyError's key) rarely says what happened."""
    if isinstance(error, KeyboardInterrupt):
        return f"qmamba {command}: interrupted"
    if isinstance(error, (QmambaError, ValueError, OSError, RuntimeError)):
        # Library functions name their command ("eval: ...") for Python callers; the line already does.
        message = str(error).removeprefix(f"{command}: ")
    else:
        message = f"unexpected {type(error).__name__}: {error} (rerun with --debug for the traceback)"
    return f"qmamba {command}: error: {message}"


def _take_debug_flags(argv: list[str]) -> tuple[list[str], bool]:
    """Removes the global ``--debug`` options written before the command."""
    debug = False
    while argv and argv[0] == "--debug":
        argv, debug = argv[1:], True
    return argv, debug


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    argv, debug = _take_debug_flags(argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        build_parser().parse_args(argv)  # prints help or the "invalid choice" error and exits
        return BAD_INPUT_EXIT
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"qmamba {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv[1:])  # argparse reports its errors as "qmamba NAME: error:", exit 2
    debug = debug or args.debug or os.environ.get("QMAMBA_DEBUG", "") not in ("", "0")
    try:
        return int(module.run(args) or 0)
    except (Exception, KeyboardInterrupt) as e:
        if debug:
            traceback.print_exc()
        print(error_line(name, e), file=sys.stderr)
        return exit_code(e)


if __name__ == "__main__":
    sys.exit(main())
