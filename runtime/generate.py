"""``qmamba generate ENGINES --prompt TEXT``: prefill the prompt, then decode token by token on the
TensorRT engines (states stay on the device; decode steps replay a CUDA graph), streaming the bytes
as UTF-8 text as they come. The vocabulary is byte-level (token = byte)."""
from __future__ import annotations

import argparse
import codecs
import sys

import numpy as np

from . import trt_runner


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("engine_dir", metavar="ENGINES", help="output directory of `qmamba build`")
    parser.add_argument("--prompt", required=True, help="text to continue")
    parser.add_argument("--tokens", type=int, default=200, help="tokens to generate (default 200)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k most likely (0 = all)")
    parser.add_argument("--seed", type=int, default=0)
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


def generate(session: trt_runner.TrtSession, prompt: bytes, tokens: int, *, temperature: float = 0.0,
             top_k: int = 0, seed: int = 0, use_graph: bool = True):
    """Yields generated token ids one at a time (batch 1)."""
    if not prompt:
        raise ValueError("generate: the prompt is empty")
    if tokens < 1:
        raise ValueError(f"generate: --tokens must be >= 1, got {tokens}")
    rng = np.random.default_rng(seed)
    logits = session.prefill(np.frombuffer(prompt, dtype=np.uint8).astype(np.int64)[None])
    for i in range(tokens):
        nxt = pick(logits, temperature, top_k, rng)
        yield int(nxt[0])
        if i + 1 < tokens:
            logits = session.decode(nxt, use_graph=use_graph)


def run(args) -> int:
    session = trt_runner.TrtSession(args.engine_dir, args.plugins, max_batch=1)
    if session.vocab != 256:
        raise ValueError(f"generate: the engines' vocabulary has {session.vocab} entries; text I/O needs the "
                         f"byte-level vocabulary (256)")
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out = sys.stdout
    out.write(args.prompt)
    for tok in generate(session, args.prompt.encode(), args.tokens, temperature=args.temperature,
                        top_k=args.top_k, seed=args.seed, use_graph=not args.no_graph):
        out.write(decoder.decode(bytes([tok])))
        out.flush()
    out.write(decoder.decode(b"", final=True) + "\n")
    return 0
