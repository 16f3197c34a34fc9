"""Trains the small byte-level Mamba2 language models that ship inside qmamba (qmamba/models/).

No weights can be downloaded here, and random weights have none of the activation outliers that
group scales exist for, so qmamba trains its own: a ``transformers`` Mamba2ForCausalLM over raw bytes
(vocabulary 256), a few million parameters, a few minutes on one GPU.

The command that trained the shipped models (run once per variant, on a GPU)::

    qmamba train --variant mamba2-tiny-g1 --data input.txt valid.txt --out OUT/mamba2-tiny-g1 \\
        --seed 0 --time-budget 240 --batch 32 --seq-len 512 --lr 2e-3 --compile

Training text is tinyshakespeare plus wikitext-2 *valid*; wikitext-2 *test* is evaluation text and
is refused. The last ``--val-fraction`` of each file is held out for the validation loss. Losses are
printed in bits per byte. The run stops at ``--steps`` or ``--time-budget`` seconds after the first
(compiling) step, and the learning-rate schedule follows whichever of the two is closer to its end,
so a time-limited run still finishes its cosine decay. With a time budget the number of steps
depends on the machine; with ``--steps`` alone the run is determined by the seed (on one device).
The mixers' gated norm is made per SSD group before training (``qmamba.models.ensure_grouped_norm``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

# The shipped variants. Both have hidden 256, expand 2 (d_ssm 512) and at least 4 heads per SSD
# group, so the quantizer can split every SSD group into 4 head groups of 4 dim groups each.
VARIANTS: dict[str, dict] = {
    "mamba2-tiny-g1": dict(hidden_size=256, num_hidden_layers=8, expand=2, num_heads=8, head_dim=64,
                           n_groups=1, state_size=128, conv_kernel=4, chunk_size=128),
    "mamba2-tiny-g4": dict(hidden_size=256, num_hidden_layers=8, expand=2, num_heads=16, head_dim=32,
                           n_groups=4, state_size=64, conv_kernel=4, chunk_size=128),
}
VOCAB_SIZE = 256  # byte-level: token id == byte value
LN2 = math.log(2.0)


def make_config(variant: str | dict):
    """A Mamba2Config for a named variant (or a dict of the same keys, e.g. a tiny test config)."""
    from transformers import Mamba2Config

    if isinstance(variant, str):
        if variant not in VARIANTS:
            raise ValueError(f"train: unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
        variant = VARIANTS[variant]
    kw = dict(variant)
    if kw["num_heads"] * kw["head_dim"] != kw["expand"] * kw["hidden_size"]:
        raise ValueError(f"train: num_heads*head_dim ({kw['num_heads']}*{kw['head_dim']}) must equal "
                         f"expand*hidden_size ({kw['expand']}*{kw['hidden_size']})")
    if kw["num_heads"] % kw["n_groups"]:
        raise ValueError(f"train: n_groups={kw['n_groups']} does not divide num_heads={kw['num_heads']}")
    # Byte 0 never occurs in text, so it serves as padding; there is no BOS/EOS in a byte stream.
    return Mamba2Config(vocab_size=VOCAB_SIZE, pad_token_id=0, bos_token_id=None, eos_token_id=None,
                        tie_word_embeddings=False, use_cache=False, **kw)


def load_bytes(paths: list[str | os.PathLike], val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Reads the training files as bytes; the last val_fraction of each one is held out."""
    if not 0.0 <= val_fraction < 0.5:
        raise ValueError(f"train: --val-fraction must be in [0, 0.5), got {val_fraction}")
    from qmamba.data import read_text

    train_parts, val_parts = [], []
    for p in paths:
        p = Path(p)
        # wikitext-2/test.txt is the evaluation text of docs/accuracy.md; training on it would make
        # every reported bits-per-byte figure meaningless.
        if p.name == "test.txt":
            raise ValueError(f"train: refusing to train on {p}: test.txt is evaluation text")
        data = torch.frombuffer(bytearray(read_text(p, "train")), dtype=torch.uint8)
        cut = len(data) - int(len(data) * val_fraction)
        train_parts.append(data[:cut])
        val_parts.append(data[cut:])
    train = torch.cat(train_parts).long()
    val = torch.cat(val_parts).long()
    return train, val


def sample_batch(data: torch.Tensor, batch: int, seq_len: int, gen: torch.Generator) -> torch.Tensor:
    """batch random windows of seq_len + 1 bytes (inputs and shifted targets)."""
    if len(data) < seq_len + 2:
        raise ValueError(f"train: {len(data)} bytes of text are too few for --seq-len {seq_len}")
    starts = torch.randint(0, len(data) - seq_len - 1, (batch,), generator=gen)
    return torch.stack([data[s:s + seq_len + 1] for s in starts.tolist()])


def lm_loss_bits(model, windows: torch.Tensor, amp: bool) -> torch.Tensor:
    """Mean next-byte cross-entropy in bits per byte over the windows."""
    inputs, targets = windows[:, :-1], windows[:, 1:]
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        logits = model(input_ids=inputs).logits
    # over all of the model's logits: a padded vocabulary (50 288 rows) trains on bytes too
    loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
    return loss / LN2


@torch.no_grad()
def validation_bits(model, val: torch.Tensor, batch: int, seq_len: int, amp: bool, max_windows: int) -> float:
    """Bits per byte on consecutive, non-overlapping windows at the start of the held-out text."""
    n = min(max_windows, (len(val) - 1) // seq_len)
    if n == 0:
        return float("nan")
    model.eval()
    total, count = 0.0, 0
    for i in range(0, n, batch):
        idx = torch.arange(i, min(i + batch, n))
        windows = torch.stack([val[j * seq_len: j * seq_len + seq_len + 1] for j in idx.tolist()])
        bits = lm_loss_bits(model, windows.to(next(model.parameters()).device), amp)
        total += bits.item() * len(idx)
        count += len(idx)
    model.train()
    return total / count


def train(config, data_paths, out_dir=None, *, seed=0, steps=2000, time_budget=None, batch=32,
          seq_len=512, lr=2e-3, weight_decay=0.1, warmup=100, val_fraction=0.01, device="cpu",
          log_every=50, val_windows=64, compile=False, init=None, log=print):
    """Trains a Mamba2ForCausalLM from scratch (or on from the model folder ``init``); returns
    (model, summary). Saves fp16 if out_dir."""
    from transformers import Mamba2ForCausalLM

    from qmamba.models import ensure_grouped_norm

    from .model_source import load_float

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train_data, val_data = load_bytes(data_paths, val_fraction)
    if init is not None:
        model = load_float(init, "train")
        model.config.use_cache = False
    else:
        model = Mamba2ForCausalLM(config)
    # The per-SSD-group gated norm of mamba_ssm, whatever this transformers version does (see
    # ensure_grouped_norm): transformers 5.17, for one, would otherwise train a different function.
    model = ensure_grouped_norm(model).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"train: {n_params / 1e6:.2f}M parameters, {len(train_data)} training bytes, "
        f"{len(val_data)} held out, device {device}")
    amp = device.startswith("cuda")
    # No weight decay on norms, biases, A_log, D, dt_bias (1-D tensors): they set scales, not features.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))
    # The pure-PyTorch Mamba2 path of transformers runs its SSD as broadcast elementwise products
    # over permuted views, which eager CUDA runs about 5x slower than torch.compile's fused kernels
    # (measured on the H100: 0.68 s vs 0.14 s a step at batch 32 x 512). Validation uses the eager
    # module (same parameters), so eval mode and other shapes cause no recompilation.
    step_model = torch.compile(model) if compile else model
    history = []
    t0 = time.monotonic()
    step = 0
    last_loss = float("nan")
    while step < steps:
        elapsed = time.monotonic() - t0
        progress = step / steps
        if time_budget:
            progress = max(progress, elapsed / time_budget)
        if progress >= 1.0:
            break
        scale = min(1.0, (step + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * progress))
        for g in opt.param_groups:
            g["lr"] = lr * max(scale, 0.02)
        windows = sample_batch(train_data, batch, seq_len, gen).to(device)
        loss = lm_loss_bits(step_model, windows, amp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step == 1:
            # The time budget starts after the first step, which includes compilation (about a minute).
            t0 = time.monotonic()
        if step % log_every == 0 or step == 1:
            last_loss = loss.item()
            history.append({"step": step, "train_bpb": last_loss, "time_s": time.monotonic() - t0})
            log(f"step {step:5d}  train {last_loss:.4f} bits/byte  lr {opt.param_groups[0]['lr']:.2e}  "
                f"{time.monotonic() - t0:.0f}s")
    if step and step % log_every:
        last_loss = loss.item()
        history.append({"step": step, "train_bpb": last_loss, "time_s": time.monotonic() - t0})
    val_bpb = validation_bits(model, val_data.to(device), batch, seq_len, amp, val_windows)
    final_train = last_loss
    log(f"done: {step} steps in {time.monotonic() - t0:.0f}s, train {final_train:.4f}, "
        f"val {val_bpb:.4f} bits/byte")
    summary = {"steps": step, "seed": seed, "batch": batch, "seq_len": seq_len, "lr": lr,
               "time_s": round(time.monotonic() - t0, 1), "params": n_params, "compiled": compile,
               "final_train_bpb": final_train, "val_bpb": val_bpb, "history": history,
               "data": [Path(p).name for p in data_paths], "val_fraction": val_fraction,
               "init": None if init is None else str(init)}
    if out_dir is not None:
        save_fp16(model, out_dir)
        (Path(out_dir) / "train_log.json").write_text(json.dumps(summary, indent=1))
    return model, summary


def save_fp16(model, out_dir) -> None:
    """config.json + model.safetensors in fp16 (the shipped format, half the bytes of fp32)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_model

    model = model.to("cpu", torch.float16)
    model.config.use_cache = True  # users of the shipped model generate with a cache
    model.config.save_pretrained(out)
    save_model(model, str(out / "model.safetensors"), metadata={"format": "pt"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", default="mamba2-tiny-g1", choices=sorted(VARIANTS),
                        help="model shape to train (default %(default)s)")
    parser.add_argument("--data", nargs="+", required=True,
                        help="training text files (tinyshakespeare input.txt, wikitext-2 valid.txt)")
    parser.add_argument("--out", required=True, help="folder for config.json + model.safetensors (fp16)")
    parser.add_argument("--force", action="store_true", help="replace an existing output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=100000, help="step limit (default %(default)s)")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="stop after this many seconds; the LR schedule ends there")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--val-fraction", type=float, default=0.01,
                        help="share of each file held out for the validation loss")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--init", default=None, help="go on training the model in this folder (fine-tuning)")
    parser.add_argument("--warmup", type=int, default=100, help="warm-up steps (default %(default)s)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the training step (default: on for CUDA)")


def run(args: argparse.Namespace) -> int:
    from qmamba.output_dir import atomic_output_dir

    from .model_source import identify

    if args.steps < 1:
        raise ValueError(f"train: --steps must be >= 1, got {args.steps}")
    config = make_config(args.variant)
    # The output may replace neither a training text nor the model training goes on from (whose
    # kind, checked here, train() refuses unless it is a float model, before any training step).
    inputs = list(args.data) + ([identify(args.init).path] if args.init is not None else [])
    with atomic_output_dir(args.out, force=args.force, inputs=inputs) as tmp:
        train(config, args.data, tmp, seed=args.seed, steps=args.steps, time_budget=args.time_budget,
              warmup=args.warmup, init=args.init,
              batch=args.batch, seq_len=args.seq_len, lr=args.lr, val_fraction=args.val_fraction,
              device=args.device, log_every=args.log_every,
              compile=args.device.startswith("cuda") if args.compile is None else args.compile,
              log=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m qmamba.export.train", description=__doc__.splitlines()[0])
    add_arguments(p)
    sys.exit(run(p.parse_args()))
