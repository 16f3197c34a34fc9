"""``qmamba generate DIR --prompt TEXT``: prefill the prompt, then decode token by token, streaming
the text as it comes.

DIR is a ``qmamba build`` engine directory (TensorRT: states stay on the device; decode steps replay
a CUDA graph) or a ``qmamba export`` directory (ONNX Runtime on the CPU, ``ort.OrtStepper``: no GPU
needed); ``--backend`` chooses, by default from the metadata file DIR holds. Text is tokenized with
the tokenizer DIR carries (``qmamba.tokenizer.find_tokenizer``; byte-level models need none), else
``--tokenizer``. Logits over a padded vocabulary's extra rows (past the tokenizer's ids) never win.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from qmamba.export.metadata import ENGINES_METADATA, ONNX_METADATA
from qmamba.tokenizer import Tokenizer, find_tokenizer, mask_padding_logits

BACKENDS = ("auto", "tensorrt", "onnxruntime")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("engine_dir", metavar="DIR",
                        help="output directory of `qmamba build` (TensorRT) or `qmamba export` (ONNX Runtime)")
    parser.add_argument("--prompt", required=True, help="text to continue")
    parser.add_argument("--tokens", type=int, default=200, help="tokens to generate (default 200)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k most likely (0 = all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="auto: tensorrt for an engine directory, onnxruntime for an export directory")
    parser.add_argument("--tokenizer", metavar="DIR_OR_ID", default=None,
                        help="tokenizer when DIR carries none and the vocabulary is not bytes")
    parser.add_argument("--plugins", metavar="LIB", help="libqmamba_trt_plugins.so (default: the built one)")
    parser.add_argument("--no-graph", action="store_true", help="decode without CUDA graphs")


def pick(logits: np.ndarray, temperature: float, top_k: int, rng: np.random.Generator) -> np.ndarray:
    """Next token per row: argmax, or a sample at `temperature` among the top_k."""
    if temperature <= 0:
        return logits.argmax(-1)
    z = logits.astype(np.float64) / temperature
    if 0 < top_k < z.shape[-1]:
        kth = np.partition(z, -top_k, axis=-1)[:, -top_k][:, None]
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.array([rng.choice(p.shape[-1], p=row) for row in p])


def generate(session, prompt_ids, tokens: int, *, temperature: float = 0.0, top_k: int = 0, seed: int = 0,
             use_graph: bool = True, real_vocab: int | None = None):
    """Yields generated token ids one at a time (batch 1). ``session`` is a ``trt_runner.TrtSession``
    or an ``ort.OrtStepper``; ``real_vocab`` masks the logits of padding rows past it."""
    if len(prompt_ids) == 0:
        raise ValueError("generate: the prompt is empty")
    if tokens < 1:
        raise ValueError(f"generate: --tokens must be >= 1, got {tokens}")
    rng = np.random.default_rng(seed)
    logits = session.prefill(np.asarray(prompt_ids, dtype=np.int64)[None])
    for i in range(tokens):
        if real_vocab is not None:
            logits = mask_padding_logits(logits, real_vocab)
        nxt = pick(logits, temperature, top_k, rng)
        yield int(nxt[0])
        if i + 1 < tokens:
            logits = session.decode(nxt, use_graph=use_graph)


def stream_text(tokenizer: Tokenizer, ids):
    """The text of the token ids as it grows: each piece once it decodes completely (a token that
    ends inside a UTF-8 sequence waits for the tokens that finish it)."""
    seen, shown = [], ""
    for token in ids:
        seen.append(token)
        text = tokenizer.decode(seen)
        if not text.endswith("\ufffd"):
            yield text[len(shown):]
            shown = text
    text = tokenizer.decode(seen)
    if text != shown:
        yield text[len(shown):]


def open_session(directory, backend: str = "auto", plugins=None):
    """(session, model vocabulary rows) of an engine or export directory."""
    d = Path(directory)
    if backend == "auto":
        if (d / ENGINES_METADATA).is_file():
            backend = "tensorrt"
        elif (d / ONNX_METADATA).is_file():
            backend = "onnxruntime"
        else:
            raise FileNotFoundError(f"generate: {d} holds no engines ({d / 'prefill.engine'} does not exist; "
                                    f"`qmamba build` makes them) and no export ({ONNX_METADATA}; `qmamba export`)")
    if backend == "onnxruntime":
        from .ort import OrtModel, OrtStepper

        session = OrtStepper(OrtModel(d))
    else:
        from . import trt_runner

        session = trt_runner.TrtSession(d, plugins, max_batch=1)
    return session, session.vocab


def run(args) -> int:
    session, vocab = open_session(args.engine_dir, args.backend, args.plugins)
    tok = find_tokenizer(args.engine_dir, args.tokenizer, vocab_size=vocab)
    if tok.vocab_size > vocab:
        raise ValueError(f"generate: the tokenizer {tok.name} has {tok.vocab_size} tokens, the model's "
                         f"vocabulary only {vocab}")
    out = sys.stdout
    out.write(args.prompt)
    ids = generate(session, tok.encode(args.prompt), args.tokens, temperature=args.temperature,
                   top_k=args.top_k, seed=args.seed, use_graph=not args.no_graph, real_vocab=tok.vocab_size)
    for piece in stream_text(tok, ids):
        out.write(piece)
        out.flush()
    out.write("\n")
    return 0
