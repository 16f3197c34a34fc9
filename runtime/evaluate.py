"""``qmamba eval MODEL --text FILE --backend torch|onnxruntime|tensorrt``: bits per byte on a text.

Tokens are raw bytes (vocabulary 256), so bits per byte is the mean next-token cross-entropy in
bits, and the per-byte perplexity is ``2 ** bits_per_byte``.

Context protocol (``WINDOW_PROTOCOL``): the file is cut into consecutive, non-overlapping windows of
``--window`` bytes (default 1024); window k starts from an empty state, reads bytes kW .. kW+W-1
and predicts bytes kW+1 .. kW+W. Every byte of the file but the first is scored exactly once, from
between 1 and ``window`` bytes of context (a fresh state per window keeps batches independent and
matches what the prefill graphs compute). Windows run in batches of ``--batch`` rows; the last,
shorter window runs on its own.

MODEL is, by backend:

- torch: a shipped model name (``qmamba.models.available()``; float, ``--dtype fp32|fp16``), a
  Hugging Face Mamba2 directory (float), or a W8A8 checkpoint directory (``qmamba calibrate``
  output or a released Quamba2 checkpoint; the W8A8 PyTorch reference, ``QuantMamba2LM``), told
  apart by ``qmamba.export.model_source``.
- onnxruntime: a ``qmamba export`` directory (prefill graph, full logits per position).
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
from qmamba.export.metadata import ONNX_METADATA

WINDOW_PROTOCOL = ("non-overlapping windows of {window} bytes, each from an empty state; every byte "
                   "after the first is scored once")
STEPWISE_PROTOCOL = WINDOW_PROTOCOL + ", one decode step per byte"
BACKENDS = ("torch", "onnxruntime", "tensorrt")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
LN2 = math.log(2.0)


# ---- text -------------------------------------------------------------------------------------
def read_text_bytes(path, max_bytes: int | None = None) -> torch.Tensor:
    """The file's bytes as int64 token ids (optionally only the first max_bytes)."""
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
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


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


class TrtStepwiseScorer:
    """TensorRT engines: prefill of the first byte, then one decode step per following byte."""

    def __init__(self, engine_dir, max_batch: int):
        from .trt_runner import TrtSession

        self.session = TrtSession(engine_dir, max_batch=max_batch)
        self.description = "tensorrt (prefill 1 byte + decode steps)"

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        import numpy as np

        ids_np = ids.numpy().astype(np.int64)
        steps = [self.session.prefill(ids_np[:, :1])]
        for t in range(1, ids_np.shape[1]):
            steps.append(self.session.decode(ids_np[:, t]))
        return torch.from_numpy(np.stack(steps, axis=1)).float()


# ---- loading MODEL ------------------------------------------------------------------------------
def _unavailable(backend: str, err: Exception) -> RuntimeError:
    return RuntimeError(f"eval: backend {backend} is not available here ({type(err).__name__}: {err})")


def load_scorer(model: str, backend: str = "torch", *, dtype: str = "fp32", device: str = "cpu",
                batch: int = 8, providers=("CPUExecutionProvider",)):
    """A scorer for MODEL on a backend (see the module docstring); clear errors for bad MODELs."""
    if backend not in BACKENDS:
        raise ValueError(f"eval: unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
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
        return OrtScorer(path, tuple(providers))
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
             progress: bool = True) -> dict:
    """Bits per byte of scorer over data (int64 byte ids) under the window protocol."""
    from tqdm import tqdm

    total_bits, count = 0.0, 0
    t0 = time.monotonic()
    with tqdm(total=len(data) - 1, unit="B", unit_scale=True, desc="eval", disable=not progress,
              file=sys.stderr) as bar:
        for inputs, targets in window_batches(data, window, batch):
            logits = scorer(inputs)
            if logits.shape != (*inputs.shape, logits.shape[-1]) or not torch.isfinite(logits).all():
                raise RuntimeError(f"eval: {scorer.description} returned logits of shape "
                                   f"{list(logits.shape)} for inputs {list(inputs.shape)}"
                                   f"{'' if torch.isfinite(logits).all() else ' with non-finite values'}")
            nll = torch.nn.functional.cross_entropy(logits.double().flatten(0, 1), targets.flatten(),
                                                    reduction="sum")
            total_bits += nll.item() / LN2
            count += targets.numel()
            bar.update(targets.numel())
            bar.set_postfix(bpb=f"{total_bits / count:.4f}")
    bpb = total_bits / count
    protocol = STEPWISE_PROTOCOL if isinstance(scorer, TrtStepwiseScorer) else WINDOW_PROTOCOL
    return {"bits_per_byte": bpb, "perplexity": 2.0 ** bpb, "bytes_scored": count,
            "window": window, "protocol": protocol.format(window=window),
            "backend": scorer.description, "seconds": round(time.monotonic() - t0, 2)}


# ---- CLI ----------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="shipped model name, HF dir, quantized checkpoint dir, ONNX dir or engine dir")
    parser.add_argument("--text", required=True, help="text file, read as bytes")
    parser.add_argument("--backend", choices=BACKENDS, default="torch")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="float models only")
    parser.add_argument("--device", default="cpu", help="torch backend: cpu or cuda")
    parser.add_argument("--window", type=int, default=1024, help="bytes per window (default %(default)s)")
    parser.add_argument("--batch", type=int, default=8, help="windows per batch (default %(default)s)")
    parser.add_argument("--max-bytes", type=int, default=None, help="evaluate only the file's first N bytes")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    data = read_text_bytes(args.text, args.max_bytes)
    scorer = load_scorer(args.model, args.backend, dtype=args.dtype, device=args.device, batch=args.batch)
    result = {"model": args.model, "text": str(args.text), **evaluate(
        scorer, data, window=args.window, batch=args.batch, progress=not args.no_progress)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.model} on {args.text} [{result['backend']}]: {result['bits_per_byte']:.4f} bits/byte, "
              f"perplexity {result['perplexity']:.3f} per byte, {result['bytes_scored']} bytes scored "
              f"({result['protocol']}), {result['seconds']} s")
    return 0
