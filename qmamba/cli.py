"""The ``qmamba`` command line: one entry point, one module per subcommand.

Each subcommand module defines ``add_arguments(parser)`` and ``run(args) -> int``; they are imported
only when their command runs, so that optional dependencies (TensorRT, cuda-python) stay optional.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS = {
    "quickstart": ("qmamba.quickstart", "the main job on the built-in model: calibrate, quantize, report, export, check"),
    "calibrate": ("qmamba.export.calibrate", "float Mamba2 + text -> W8A8 model with group scales"),
    "inspect": ("qmamba.export.inspect", "scale report of a quantized or Quamba2 checkpoint"),
    "export": ("qmamba.export.onnx_export", "quantized model -> prefill.onnx + decode.onnx"),
    "check": ("qmamba.runtime.check", "PyTorch reference vs ONNX Runtime on real text"),
    "build": ("qmamba.runtime.build", "ONNX pair -> TensorRT engines"),
    "generate": ("qmamba.runtime.generate", "stream text from TensorRT engines"),
    "bench": ("qmamba.runtime.bench", "prefill latency and decode tokens/s of TensorRT engines"),
    "bisect": ("qmamba.runtime.bisect", "first tensor where a TensorRT engine departs from ONNX Runtime"),
    "eval": ("qmamba.runtime.evaluate", "bits per byte of a model on a text file"),
    "train": ("qmamba.export.train", "train the small byte-level Mamba2 shipped with qmamba"),
    "standin": ("qmamba.models.standin", "random weights with a real model's exact configuration (sizing, benchmarks)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qmamba", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        build_parser().parse_args(argv)  # prints help or the "invalid choice" error and exits
        return 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"qmamba {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        # Bad input is reported as one clear line, not a traceback.
        print(f"qmamba {name}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
