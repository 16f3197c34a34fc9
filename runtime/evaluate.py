"""``qmamba eval MODEL --text FILE --backend torch|onnxruntime|tensorrt``: bits per byte on a text.

Byte-level models (vocabulary 256, qmamba's shipped ones): tokens are the file's raw bytes, so bits
per byte is the mean next-token cross-entropy in bits, and the per-byte perplexity is
``2 ** bits_per_byte``.

Other models tokenize the text (decoded as UTF-8) with their tokenizer (``qmamba.tokenizer``: the
one MODEL's directory carries, else ``--tokenizer``). Their score is still per byte, so that models
with different tokenizers compare: ``bits_per_byte = total nats / ln 2 / bytes``, the nats summed
over every scored token and the bytes those tokens spell (the file's UTF-8 bytes less those of the
first token, which is never scored). ``bits_per_token`` is reported beside it. The logits of a
padded vocabulary's extra rows are masked out (``mask_padding_logits``) before the softmax.

Context protocol (``WINDOW_PROTOCOL``): the file is cut into consecutive, non-overlapping windows of
``--window`` tokens (default 1024); window k starts from an empty state, reads tokens kW .. kW+W-1
and predicts tokens kW+1 .. kW+W. Every token of the file but the first is scored exactly once, from
between 1 and ``window`` tokens of context (a fresh state per window keeps batches independent and
matches what the prefill graphs compute). Windows run in batches of ``--batch`` rows; the last,
shorter window runs on its own.

MODEL is, by backend:

- torch: a shipped model name (``qmamba.models.available()``; float, ``--dtype fp32|fp16``), a
  Hugging Face Mamba2 directory (float), or a W8A8 checkpoint directory (``qmamba calibrate``
  output or a released Quamba2 checkpoint; the W8A8 PyTorch reference, ``QuantMamba2LM``), told
  apart by ``qmamba.export.model_source``.
- torch also takes a float mamba_ssm Mamba2 directory or a Hugging Face hub id.
- onnxruntime: a ``qmamba export`` directory (prefill graph, full logits per position); with ``--stepwise``
  its prefill graph for the first token and its decode graph for every later one (the engines' protocol,
  below), so that an engine directory and its export compare on the same numerical path.
- tensorrt: a ``qmamba build`` engine directory. Its prefill engine returns only the last
  position's logits, so every byte is scored by the decode engine, one step at a time from the
  int8 states (``STEPWISE_PROTOCOL``): the same windows, a different numerical path.

The backends are imported only when asked for; one that cannot be loaded is reported as a clear
error, not a traceback.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from qmamba.export import model_source
from qmamba.export.metadata import ENGINES_METADATA, ONNX_METADATA, read_engines_metadata, read_onnx_metadata
from qmamba.tokenizer import ByteTokenizer, Tokenizer, find_tokenizer, mask_padding_logits

WINDOW_PROTOCOL = ("non-overlapping windows of {window} {unit}s, each from an empty state; every {unit} "
                   "after the first is scored once")
STEPWISE_PROTOCOL = WINDOW_PROTOCOL + ", one decode step per {unit}"
BACKENDS = ("torch", "onnxruntime", "tensorrt")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
LN2 = math.log(2.0)


# ---- text -------------------------------------------------------------------------------------
def read_text_bytes(path, max_bytes: int | None = None) -> torch.Tensor:
    """The file's bytes as int64 token ids (optionally only the first max_bytes)."""
    return torch.frombuffer(bytearray(read_text(path, max_bytes)), dtype=torch.uint8).long()


def read_text(path, max_bytes: int | None = None) -> bytes:
    """The file's bytes (optionally only the first max_bytes); at least 2."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"eval: text file {p} does not exist")
    data = p.read_bytes()
    if max_bytes is not None:
        if max_bytes < 2:
            raise ValueError(f"eval: --max-bytes must be >= 2, got {max_bytes}")
        data = data[:max_bytes]
    if len(data) < 2:
        raise ValueError(f"eval: {p} holds {len(data)} bytes; at least 2 are needed to score one")
    return data


def text_tokens(tok: Tokenizer, text: bytes) -> tuple[torch.Tensor, int | None]:
    """(int64 token ids, bytes the scored tokens spell) of a text; the byte count is None for a
    byte-level tokenizer, whose tokens are the bytes."""
    ids = torch.tensor(tok.encode_bytes(text), dtype=torch.int64)
    if len(ids) < 2:
        raise ValueError(f"eval: the text makes {len(ids)} token(s); at least 2 are needed to score one")
    if isinstance(tok, ByteTokenizer):
        return ids, None
    return ids, len(text) - len(tok.decode(ids[:1].tolist()).encode("utf-8"))


def tokenizer_for(model: str, backend: str, tokenizer_arg: str | None = None) -> Tokenizer:
    """The tokenizer of MODEL on a backend: its directory's (model, export or engine directory),
    or ``tokenizer_arg``; bytes for byte-level models."""
    if backend == "torch":
        return find_tokenizer(model_source.identify(model).path, tokenizer_arg)
    read = read_onnx_metadata if backend == "onnxruntime" else read_engines_metadata
    return find_tokenizer(model, tokenizer_arg, vocab_size=int(read(model)["config"]["vocab_size"]))


def window_batches(data: torch.Tensor, window: int, batch: int):
    """Yields (inputs [B, L], targets [B, L]) per the context protocol of the module docstring."""
    if window < 1 or batch < 1:
        raise ValueError(f"eval: window and batch must be >= 1, got {window} and {batch}")
    n_full = (len(data) - 1) // window
    full = data[:n_full * window + 1]
    for b0 in range(0, n_full, batch):
        rows = range(b0, min(b0 + batch, n_full))
        yield (torch.stack([full[r * window:(r + 1) * window] for r in rows]),
               torch.stack([full[r * window + 1:(r + 1) * window + 1] for r in rows]))
    rest = len(data) - 1 - n_full * window
    if rest:
        tail = data[n_full * window:]
        yield tail[:-1].unsqueeze(0), tail[1:].unsqueeze(0)


# ---- scorers: ids [B, L] -> fp32 logits [B, L, V] on the CPU -----------------------------------
class FloatTorchScorer:
    """A transformers Mamba2ForCausalLM (fp32 or fp16 weights and activations)."""

    def __init__(self, model, device: str):
        self.model = model.to(device).eval()
        self.device = device
        self.description = f"torch {str(next(model.parameters()).dtype).replace('torch.', '')}"

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids.to(self.device), use_cache=False).logits.float().cpu()


class QuantTorchScorer:
    """The W8A8 PyTorch reference, QuantMamba2LM (prefill from zero states)."""

    def __init__(self, model, device: str):
        self.model = model.to(device).eval()
        self.device = device
        c = model.config
        kind = "per-tensor" if c.per_tensor else f"{c.n_head_groups}x{c.n_dim_groups} groups"
        self.description = f"torch W8A8 reference ({kind}{', hadamard' if c.hadamard else ''})"

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids.to(self.device))[0].float().cpu()


class OrtScorer:
    """The exported prefill graph on ONNX Runtime."""

    def __init__(self, onnx_dir, providers):
        from .ort import OrtModel

        self.model = OrtModel(onnx_dir, providers=providers)
        self.description = f"onnxruntime {','.join(providers)}"

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        logits, _ = self.model.prefill(ids.numpy())
        return torch.from_numpy(logits).float()


class StepwiseScorer:
    """A prefill of the first token, then one decode step per following token (the engines' path: int8
    states between steps), on any session with TrtSession's interface: ``prefill(ids)`` and
    ``decode(tokens)`` giving the last position's logits (``ort.OrtStepper`` on ONNX Runtime)."""

    def __init__(self, session, description: str):
        self.session = session
        self.description = description

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        import numpy as np

        ids_np = ids.numpy().astype(np.int64)
        steps = [self.session.prefill(ids_np[:, :1])]
        for t in range(1, ids_np.shape[1]):
            steps.append(self.session.decode(ids_np[:, t]))
        return torch.from_numpy(np.stack(steps, axis=1)).float()


class TrtStepwiseScorer(StepwiseScorer):
    """TensorRT engines, stepwise."""

    def __init__(self, engine_dir, max_batch: int):
        from .trt_runner import TrtSession

        super().__init__(TrtSession(engine_dir, max_batch=max_batch), "tensorrt (prefill 1 token + decode steps)")


# ---- loading MODEL ------------------------------------------------------------------------------
def _unavailable(backend: str, err: Exception) -> RuntimeError:
    return RuntimeError(f"eval: backend {backend} is not available here ({type(err).__name__}: {err})")


def load_scorer(model: str, backend: str = "torch", *, dtype: str = "fp32", device: str = "cpu",
                batch: int = 8, providers=("CPUExecutionProvider",), stepwise: bool = False):
    """A scorer for MODEL on a backend (see the module docstring); clear errors for bad MODELs.
    ``stepwise``: onnxruntime only (tensorrt always is; torch never)."""
    if backend not in BACKENDS:
        raise ValueError(f"eval: unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if stepwise and backend != "onnxruntime":
        raise ValueError(f"eval: --stepwise applies to --backend onnxruntime (tensorrt always scores stepwise, "
                         f"torch by windows); got --backend {backend}")
    if dtype not in DTYPES:
        raise ValueError(f"eval: unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    path = Path(model)
    if backend == "torch":
        return _torch_scorer(model, path, dtype, device)
    if not path.is_dir():
        raise FileNotFoundError(f"eval: backend {backend} needs a directory "
                                f"({'qmamba export' if backend == 'onnxruntime' else 'qmamba build'} "
                                f"output); {model} is not one")
    if backend == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401  (only to tell a missing runtime from a bad MODEL)
        except ImportError as e:
            raise _unavailable(backend, e) from e
        if not stepwise:
            return OrtScorer(path, tuple(providers))
        from .ort import OrtModel, OrtStepper

        return StepwiseScorer(OrtStepper(OrtModel(path, providers=tuple(providers))),
                              f"onnxruntime {','.join(providers)} (prefill 1 token + decode steps)")
    for name in ("prefill.engine", "decode.engine"):  # trt_runner.ENGINE_FILES, checked before any import
        if not (path / name).is_file():
            raise FileNotFoundError(f"eval: {path / name} does not exist (build engines with `qmamba build`)")
    try:
        return TrtStepwiseScorer(path, batch)
    except (ImportError, OSError, RuntimeError) as e:  # no runner library, no TensorRT, no GPU
        raise _unavailable(backend, e) from e


def _torch_scorer(model: str, path: Path, dtype: str, device: str):
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"eval: --device {device} asked for, but torch sees no CUDA device")
    if (path / ENGINES_METADATA).is_file() and not (path / "config.json").is_file():
        raise ValueError(f"eval: {model} is an engine directory (qmamba build); use --backend tensorrt")
    if (path / ONNX_METADATA).is_file() and not (path / "config.json").is_file():
        raise ValueError(f"eval: {model} is an exported ONNX directory; use --backend onnxruntime")
    source = model_source.identify(model)
    if source.w8a8:
        if dtype != "fp32":
            raise ValueError(f"eval: {model} is a W8A8 checkpoint; --dtype applies to float models only")
        return QuantTorchScorer(model_source.load_w8a8(source, "eval"), device)
    return FloatTorchScorer(model_source.load_float(source, "eval", DTYPES[dtype]), device)


# ---- evaluation ---------------------------------------------------------------------------------
def evaluate(scorer, data: torch.Tensor, window: int = 1024, batch: int = 8,
             progress: bool = True, real_vocab: int | None = None, text_bytes: int | None = None) -> dict:
    """Bits per byte of scorer over data (int64 token ids) under the window protocol. For tokens
    that are not bytes, ``text_bytes`` is the bytes the scored tokens spell and ``real_vocab`` the
    tokenizer's ids (logits past it are masked); see the module docstring."""
    from tqdm import tqdm

    total_bits, count = 0.0, 0
    unit = "byte" if text_bytes is None else "token"
    t0 = time.monotonic()
    with tqdm(total=len(data) - 1, unit="B" if unit == "byte" else "tok", unit_scale=True, desc="eval",
              disable=not progress,
              file=sys.stderr) as bar:
        for inputs, targets in window_batches(data, window, batch):
            logits = scorer(inputs)
            if logits.shape != (*inputs.shape, logits.shape[-1]) or not torch.isfinite(logits).all():
                raise RuntimeError(f"eval: {scorer.description} returned logits of shape "
                                   f"{list(logits.shape)} for inputs {list(inputs.shape)}"
                                   f"{'' if torch.isfinite(logits).all() else ' with non-finite values'}")
            if real_vocab is not None:
                logits = mask_padding_logits(logits, real_vocab)
            nll = torch.nn.functional.cross_entropy(logits.double().flatten(0, 1), targets.flatten(),
                                                    reduction="sum")
            total_bits += nll.item() / LN2
            count += targets.numel()
            bar.update(targets.numel())
            bar.set_postfix({f"bp{unit[0]}": f"{total_bits / count:.4f}"})
    n_bytes = count if text_bytes is None else text_bytes
    bpb = total_bits / n_bytes
    protocol = STEPWISE_PROTOCOL if isinstance(scorer, StepwiseScorer) else WINDOW_PROTOCOL
    result = {"bits_per_byte": bpb, "perplexity": 2.0 ** bpb, "bytes_scored": n_bytes}
    if text_bytes is not None:
        result.update(bits_per_token=total_bits / count, tokens_scored=count)
    return {**result, "window": window, "protocol": protocol.format(window=window, unit=unit),
            "backend": scorer.description, "seconds": round(time.monotonic() - t0, 2)}


# ---- CLI ----------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="shipped model name, HF dir, quantized checkpoint dir, ONNX dir or engine dir")
    parser.add_argument("--text", required=True, help="text file (bytes for byte-level models, else UTF-8)")
    parser.add_argument("--tokenizer", metavar="DIR_OR_ID", default=None,
                        help="tokenizer when MODEL's directory holds none and its vocabulary is not bytes")
    parser.add_argument("--backend", choices=BACKENDS, default="torch")
    parser.add_argument("--stepwise", action="store_true",
                        help="onnxruntime: score as the engines do, one decode step per token after the first "
                             "(compare with --backend tensorrt on the same path)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="float models only")
    parser.add_argument("--device", default="cpu", help="torch backend: cpu or cuda")
    parser.add_argument("--window", type=int, default=1024, help="tokens per window (default %(default)s)")
    parser.add_argument("--batch", type=int, default=8, help="windows per batch (default %(default)s)")
    parser.add_argument("--max-bytes", type=int, default=None, help="evaluate only the file's first N bytes")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    text = read_text(args.text, args.max_bytes)
    scorer = load_scorer(args.model, args.backend, dtype=args.dtype, device=args.device, batch=args.batch,
                         stepwise=args.stepwise)
    tok = tokenizer_for(args.model, args.backend, args.tokenizer)
    data, text_bytes = text_tokens(tok, text)
    real_vocab = None if text_bytes is None else tok.vocab_size
    result = {"model": args.model, "text": str(args.text), **evaluate(
        scorer, data, window=args.window, batch=args.batch, progress=not args.no_progress,
        real_vocab=real_vocab, text_bytes=text_bytes)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.model} on {args.text} [{result['backend']}]: {result['bits_per_byte']:.4f} bits/byte, "
              f"perplexity {result['perplexity']:.3f} per byte, {result['bytes_scored']} bytes scored "
              + (f"({result['tokens_scored']} tokens, {result['bits_per_token']:.4f} bits/token) "
                 if "tokens_scored" in result else "")
              + f"({result['protocol']}), {result['seconds']} s")
    return 0
