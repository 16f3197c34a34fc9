"""``qmamba quickstart``: the main job end to end on the shipped model, no user files needed.

float Mamba2 -> calibrate (group scales) -> checkpoint + scale report -> ONNX export ->
PyTorch reference vs ONNX Runtime (per-tensor agreement, greedy tokens).

``--model`` takes any MODEL of ``qmamba.export.model_source`` (the shipped model by default): a
float one is calibrated as above; a W8A8 checkpoint (qmamba's or Quamba2's) is already quantized,
so its own scales are reported and exported. A model whose vocabulary is not bytes uses its
tokenizer (``qmamba.tokenizer``: its folder's, else ``--tokenizer``), carried into the checkpoint
and the ONNX folder.

Text: the samples of ``qmamba.data`` (Tiny Shakespeare for calibration, WikiText-2 valid for the
check; ``QMAMBA_DATA`` points at full corpora), or ``--text``; the run says which it used.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

CHECK_OFFSET, CHECK_LENGTH = 4096, 256


def default_texts() -> tuple[bytes, bytes, str]:
    """(calibration text, check text, where they came from)."""
    from qmamba.data import text_file

    calib, check = text_file("tinyshakespeare/input.txt"), text_file("wikitext-2/valid.txt")
    return calib.read_bytes(), check.read_bytes(), f"{calib} / {check}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from qmamba import models

    parser.add_argument("--model", default=models.DEFAULT_MODEL,
                        help=f"any MODEL (shipped: {', '.join(models.available())}; a float or W8A8 "
                             f"checkpoint directory; a hub id); default %(default)s")
    parser.add_argument("--tokenizer", metavar="DIR_OR_ID", default=None,
                        help="tokenizer when the model folder holds none and its vocabulary is not bytes")
    parser.add_argument("--text", default=None, help="calibration and check text (default: the shipped samples, Tiny "
                                                          "Shakespeare to calibrate and WikiText-2 valid to check)")
    parser.add_argument("-o", "--out", default="qmamba-quickstart", help="output directory (default %(default)s)")
    parser.add_argument("--observer", choices=("minmax", "percentile"), default="minmax")
    parser.add_argument("--hadamard", action="store_true", help="rotate the out_proj input")
    parser.add_argument("--num-samples", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--force", action="store_true", help="replace an existing output directory")


def run(args) -> int:
    from qmamba.data import read_text
    from qmamba.errors import BadInputError
    from qmamba.export.calibrate import calibrate_model
    from qmamba.export.checkpoint import save_quantized
    from qmamba.export.inspect import format_report, report
    from qmamba.export.model_source import identify, load_float, load_w8a8
    from qmamba.export.onnx_export import export_onnx
    from qmamba.output_dir import atomic_output_dir
    from qmamba.runtime.check import check, prompt_tokens
    from qmamba.tokenizer import carry_tokenizer, find_tokenizer

    need = CHECK_OFFSET + CHECK_LENGTH + 1
    if args.text:
        calib_text = check_text = read_text(args.text, "quickstart", min_bytes=need)
        source = args.text
    else:
        calib_text, check_text, source = default_texts()
        if len(check_text) < need:
            raise BadInputError(f"quickstart: the check needs {need} bytes of text, {source} holds "
                                f"{len(check_text)}; pass a longer --text")
    src = identify(args.model)
    tok = find_tokenizer(src.path, args.tokenizer)
    tokens = prompt_tokens(check_text, CHECK_OFFSET, CHECK_LENGTH, tok, f"quickstart: {source}")
    print(f"model {args.model}: {src.kind} in {src.path}; tokenizer {tok.name} ({tok.vocab_size} tokens)")
    out = Path(args.out)
    inputs = [src.path] + ([args.text] if args.text else [])
    with atomic_output_dir(out, force=args.force, inputs=inputs) as tmp:
        if src.w8a8:
            model = load_w8a8(src, "quickstart")
            scales, shown = src.path, src.path
            print(f"[1/4] {args.model} is already W8A8 ({src.kind}): no calibration; its own scales are used")
        else:
            print(f"[1/4] calibrating {args.model} ({args.observer}, 4 x 4 head/dim groups) on {source}")
            data = torch.tensor(tok.encode_bytes(calib_text), dtype=torch.int64)
            model = calibrate_model(load_float(src, "quickstart"), data, observer=args.observer,
                                    hadamard=args.hadamard, num_samples=args.num_samples,
                                    seq_len=args.seq_len)
            scales, shown = tmp / "checkpoint", out / "checkpoint"
            save_quantized(model, scales)
            carry_tokenizer(tok, scales)
            print(f"      wrote the W8A8 checkpoint {shown}")
        print(f"[2/4] scale report of {shown}")
        print(format_report(report(scales)))
        export_onnx(model, tmp / "onnx", tokenizer=tok)
        print(f"[3/4] exported {out / 'onnx'}/prefill.onnx and {out / 'onnx'}/decode.onnx "
              f"(tokenizer {tok.name} carried)")
        rows, greedy_ok, ref, got = check(model, tmp / "onnx", tokens)
    print(f"[4/4] PyTorch reference vs ONNX Runtime, {CHECK_LENGTH} tokens + 1 decode step")
    for r in rows:
        print(r.row())
    print(f"greedy 32 tokens: {'identical' if greedy_ok else 'DIFFER'}: {tok.decode(ref[0].tolist())!r}")
    failed = [r.name for r in rows if not r.ok]
    print(f"{len(rows) - len(failed)}/{len(rows)} tensors within their bars")
    return 0 if greedy_ok and not failed else 1
