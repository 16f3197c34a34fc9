"""Calibration: float transformers Mamba2ForCausalLM + text -> QuantMamba2LM with group scales.

``calibrate_model(float_model, data, *, observer="minmax" | "percentile", percentile=0.9995,
n_head_groups=4, n_dim_groups=4, per_tensor=False, hadamard=False, num_samples=16, seq_len=256,
batch_size=4, progress=True, seed=0) -> QuantMamba2LM``; ``calibrate(...)`` (same arguments)
returns a ``Calibrated`` with the reordered float model and the layouts as well, and
``x_quantization_error`` measures how well the x scales fit a text.

``data`` is raw text bytes (byte-level tokens: token id = byte value) or a LongTensor of token ids.
The first ``num_samples`` consecutive windows of ``seq_len`` tokens are the calibration set.

1. Grouping pass (skipped for ``per_tensor``): the float model runs in fp32 through
   ``float_mixer.float_forward`` (the transformers blocks, every mixer re-stated by ``trace_mixer``
   so that its intermediates are visible; one mixer computation per layer instead of hooks on the
   transformers forward, which would compute every mixer twice) and each x channel's conv+SiLU
   absmax is recorded; ``grouping`` clusters heads and cuts dim groups, and the float weights are
   reordered so that groups are contiguous.
2. Scale pass on the reordered model: the observers (``observers``) see the mixer input, the in_proj
   segments z/x/B/C/dt, conv+SiLU x (per group), B and C (per SSD group), the SSM state after every
   token, the out_proj input (after the Hadamard rotation when ``hadamard``) and the lm_head input.
   Every scale is ``range / 127``. ``observer`` ("minmax" or "percentile") sets the range of the
   conv+SiLU outputs x, B and C; the other ranges are min-max (see ``OBSERVED_BY_CHOICE``).
3. Weights: int8 with one scale per output row (in_proj, out_proj with the rotation folded in,
   embedding, lm_head); conv weight and bias with one scale per segment x/B/C (the op's attributes).

Devices: the float model may be on any device (CPU or CUDA); the calibration passes run there (the
token windows and the Hadamard rotation are put on it), the observers keep their statistics on the
CPU, and the returned ``QuantMamba2LM`` (its every buffer) is on the float model's device, like
``Calibrated.float_model``. ``model.to("cpu")`` moves it back; ``checkpoint.save_quantized``
writes CPU tensors from any device and ``load_quantized`` gives a CPU model.

``per_tensor=True`` is the baseline: one x scale for all channels (``x_out_scales`` of shape
``[g, 1, 1]``, every SSD group the same), one B, one C and one SSM-state scale.

CLI: ``qmamba calibrate --model MODEL --text FILE -o OUT [--tokenizer DIR_OR_ID] [...]`` (MODEL: any
float kind of ``model_source``) writes a checkpoint (``checkpoint.save_quantized``) with the model's
tokenizer files (``qmamba.tokenizer``; byte models need none) and prints the scale report.
"""
from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass

import torch

from . import hadamard as had
from . import ops
from .float_mixer import dt_limits, float_forward, mixer_dims
from .grouping import GroupLayout, apply_layout, identity_layout, make_layout
from .observers import OBSERVERS, ChannelObserver, StateObserver
from .qmodel import QuantConfig, QuantMamba2LM
from .quant_modules import (ZERO_RANGE_SCALE, QuantEmbedding, QuantLinear, quantize_per_tensor,
                            scalar_buffer)
from .validate import QMambaInputError

ACTIVATIONS = ("u", "z_in", "x_in", "B_in", "C_in", "dt_in", "x", "B", "C", "out_in")
# The observer choice applies to the conv+SiLU outputs (the group-scaled x, and B, C), as in
# Quamba2's analysis; every other activation scale is min-max: clipping the outlier features of
# the residual stream, in_proj or out_proj inputs costs an LM far more than their rounding does.
OBSERVED_BY_CHOICE = ("x", "B", "C")


def calibration_windows(data, num_samples: int, seq_len: int, vocab_size: int) -> torch.Tensor:
    """``[N, seq_len]`` long: the first ``num_samples`` consecutive windows of the data."""
    if isinstance(data, (bytes, bytearray)):
        tokens = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
    elif isinstance(data, torch.Tensor) and data.dtype == torch.int64:
        tokens = data.reshape(-1)
    else:
        got = f"tensor of {data.dtype}" if isinstance(data, torch.Tensor) else type(data).__name__
        raise QMambaInputError(f"calibrate: data must be bytes or a LongTensor of token ids, got {got}")
    if seq_len < 1 or num_samples < 1:
        raise QMambaInputError(f"calibrate: need num_samples >= 1 and seq_len >= 1, got {num_samples}, {seq_len}")
    n = min(num_samples, tokens.numel() // seq_len)
    if n == 0:
        raise QMambaInputError(f"calibrate: {tokens.numel()} tokens are fewer than one window of {seq_len}")
    if int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size:
        raise QMambaInputError(f"calibrate: token ids must be in [0, {vocab_size})")
    return tokens[: n * seq_len].reshape(n, seq_len)


def _run_pass(model, windows, batch_size, on_mixer, on_final, desc, progress, with_state=True):
    """Runs the float model over the windows in fp32 (``float_mixer.float_forward``), handing every
    mixer's trace to ``on_mixer(i, trace)`` and the lm_head input to ``on_final``."""
    from tqdm.auto import tqdm

    for batch in tqdm(windows.split(batch_size), desc=desc, disable=not progress, unit="batch"):
        hidden = float_forward(model, batch, on_mixer, with_state)
        if on_final is not None:
            on_final(hidden)


def group_layouts(model, windows, batch_size, nhg, ndg, progress, seed=0) -> list[GroupLayout]:
    """Pass 1: per-channel absmax of conv+SiLU x of every layer -> head/dim grouping."""
    obs = [ChannelObserver("minmax") for _ in model.backbone.layers]
    _run_pass(model, windows, batch_size, lambda i, t: obs[i].update(t.x), None,
              "calibrate: grouping", progress, with_state=False)
    layouts = []
    for layer, o in zip(model.backbone.layers, obs):
        d = mixer_dims(layer.mixer)
        layouts.append(make_layout(o.channel_absmax(), d["nheads"], d["headdim"], d["ngroups"],
                                   nhg, ndg, seed))
    return layouts


def _scale(r: float) -> float:
    return r / 127.0 if r > 0 else ZERO_RANGE_SCALE


class LayerObservers:
    """Every observer of one layer (pass 2)."""

    def __init__(self, kind, alpha, n_updates, hadamard: bool):
        self.act = {name: ChannelObserver(kind if name in OBSERVED_BY_CHOICE else "minmax", alpha,
                                          n_updates=n_updates) for name in ACTIVATIONS}
        self.state = StateObserver()
        self.hadamard = hadamard

    def update(self, t) -> None:
        for name in ACTIVATIONS[:-1]:
            self.act[name].update(getattr(t, name))
        g = had.rotate(t.gated) if self.hadamard else t.gated
        self.act["out_in"].update(g)
        self.state.update(t.state_absmax)

    def x_out_scales(self, lay: GroupLayout, g, hpg, p, per_tensor) -> torch.Tensor:
        obs = self.act["x"]
        if per_tensor:
            return torch.full((g, 1, 1), _scale(obs.group_range()))
        out = torch.empty(g, lay.n_head_groups, lay.n_dim_groups)
        for sg in range(g):
            for hg in range(lay.n_head_groups):
                heads = torch.tensor(list(lay.head_group_heads(sg, hg, hpg)))
                for dg in range(lay.n_dim_groups):
                    dims = torch.tensor(list(lay.dim_group_dims(sg, hg, dg)))
                    out[sg, hg, dg] = _scale(obs.group_range((heads[:, None] * p + dims).reshape(-1)))
        return out

    def bc_out_scales(self, name, g, n, per_tensor) -> torch.Tensor:
        obs = self.act[name]
        if per_tensor:
            return torch.full((g,), _scale(obs.group_range()))
        return torch.tensor([_scale(obs.group_range(slice(sg * n, (sg + 1) * n))) for sg in range(g)])

    def state_scales(self, lay: GroupLayout, g, hpg, n, per_tensor) -> torch.Tensor:
        a = self.state.absmax                                             # [h, p, n]
        if per_tensor:
            return torch.full((g, 1, 1, n), _scale(float(a.max())))
        out = torch.empty(g, lay.n_head_groups, lay.n_dim_groups, n)
        for sg in range(g):
            for hg in range(lay.n_head_groups):
                heads = list(lay.head_group_heads(sg, hg, hpg))
                for dg in range(lay.n_dim_groups):
                    dims = list(lay.dim_group_dims(sg, hg, dg))
                    m = a[heads][:, dims].amax(dim=(0, 1))
                    out[sg, hg, dg] = torch.where(m > 0, m / 127.0, torch.full_like(m, ZERO_RANGE_SCALE))
        return out


def _quantize_conv(mixer, q, d_ssm, gn) -> None:
    """Conv weight and bias, int8 with one scale per segment x / B / C."""
    w = mixer.conv1d.weight.detach().float()[:, 0, :]                    # [conv_dim, K]
    b = (mixer.conv1d.bias.detach().float() if mixer.conv1d.bias is not None
         else torch.zeros(w.shape[0], device=w.device))
    w_parts, b_parts = [], []
    for seg, lo, hi in (("x", 0, d_ssm), ("B", d_ssm, d_ssm + gn), ("C", d_ssm + gn, w.shape[0])):
        wq, ws = quantize_per_tensor(w[lo:hi])
        bq, bs = quantize_per_tensor(b[lo:hi])
        w_parts.append(wq)
        b_parts.append(bq)
        setattr(q, f"w{seg}_scale", scalar_buffer(ws))
        setattr(q, f"b{seg}_scale", scalar_buffer(bs))
    q.conv_weight = torch.cat(w_parts).contiguous()
    q.conv_bias = torch.cat(b_parts).contiguous()


def build_quantized(model, layouts, observers, final_obs, cfg: QuantConfig) -> QuantMamba2LM:
    """The W8A8 model from the reordered float model and the pass-2 observers, on the float
    model's device (weights are quantized there; the scales made from the CPU observers and the
    group ranges are moved there with the rest of the model at the end)."""
    device = _device_of(model)
    qm = QuantMamba2LM(cfg)
    qm.embedding = QuantEmbedding.from_float(model.backbone.embeddings.weight)
    g, n, p, hpg = cfg.ngroups, cfg.d_state, cfg.headdim, cfg.nheads // cfg.ngroups
    R = had.rotation_matrix(cfg.d_ssm, torch.float64, device) if cfg.hadamard else None
    for layer, qlayer, lay, obs in zip(model.backbone.layers, qm.layers, layouts, observers):
        m, q = layer.mixer, qlayer.mixer
        qlayer.norm.weight = layer.norm.weight.detach().float().clone()
        act = {k: _scale(o.group_range()) for k, o in obs.act.items()}
        q.in_proj = QuantLinear.from_float(m.in_proj.weight, act["u"])
        for k in ("z", "x", "B", "C", "dt"):                     # in_proj segment output scales
            setattr(q, f"{k}_scale", scalar_buffer(act[f"{k}_in"]))
        _quantize_conv(m, q, cfg.d_ssm, g * n)
        q.x_out_scales = obs.x_out_scales(lay, g, hpg, p, cfg.per_tensor).float()
        q.B_out_scales = obs.bc_out_scales("B", g, n, cfg.per_tensor).float()
        q.C_out_scales = obs.bc_out_scales("C", g, n, cfg.per_tensor).float()
        q.x_head_group_range = lay.x_head_group_range.clone()
        q.x_dim_group_range = lay.x_dim_group_range.clone()
        q.ssm_state_scale = obs.state_scales(lay, g, hpg, n, cfg.per_tensor).float()
        for name in ("A_log", "D", "dt_bias"):
            setattr(q, name, getattr(m, name).detach().float().clone())
        q.norm.weight = m.norm.weight.detach().float().clone()
        w_out = m.out_proj.weight.detach().double()
        q.out_proj = QuantLinear.from_float(w_out if R is None else w_out @ R, act["out_in"])
    qm.norm_f.weight = model.backbone.norm_f.weight.detach().float().clone()
    qm.lm_head = QuantLinear.from_float(model.lm_head.weight, _scale(final_obs.group_range()))
    qm.to(device)
    qm.validate()
    return qm


def _device_of(model) -> torch.device:
    """The device of a float model (its embedding table's)."""
    return model.backbone.embeddings.weight.device


@dataclass
class Calibrated:
    """What calibration made: the W8A8 model, the reordered fp32 float model (the same function as
    the source, channels in the quantized model's order) and each layer's grouping."""
    model: QuantMamba2LM
    float_model: object
    layouts: list


def calibrate(float_model, data, *, observer: str = "minmax", percentile: float = 0.9995,
              n_head_groups: int = 4, n_dim_groups: int = 4, per_tensor: bool = False,
              hadamard: bool = False, num_samples: int = 16, seq_len: int = 256,
              batch_size: int = 4, progress: bool = True, seed: int = 0) -> Calibrated:
    """Float Mamba2ForCausalLM + calibration data -> ``Calibrated`` (see the module docstring)."""
    if observer not in OBSERVERS:
        raise QMambaInputError(f"calibrate: observer must be one of {OBSERVERS}, got {observer!r}")
    fc = float_model.config
    model = copy.deepcopy(float_model).float().eval()
    d = mixer_dims(model.backbone.layers[0].mixer)
    nhg, ndg = (1, 1) if per_tensor else (n_head_groups, n_dim_groups)
    dt_min, dt_max = dt_limits(model.backbone.layers[0].mixer)
    cfg = QuantConfig(vocab_size=fc.vocab_size, d_model=fc.hidden_size, n_layer=fc.num_hidden_layers,
                      nheads=d["nheads"], headdim=d["headdim"], d_state=d["d_state"],
                      ngroups=d["ngroups"], d_conv=d["d_conv"], norm_eps=fc.layer_norm_epsilon,
                      gated_norm_eps=fc.layer_norm_epsilon, n_head_groups=nhg, n_dim_groups=ndg,
                      hadamard=hadamard, dt_min=dt_min, dt_max=dt_max, chunk_size=fc.chunk_size,
                      per_tensor=per_tensor)
    cfg.validate()
    device = _device_of(model)
    windows = calibration_windows(data, num_samples, seq_len, fc.vocab_size).to(device)
    cfg.calibration = dict(observer=observer, percentile=percentile if observer == "percentile" else None,
                           num_samples=windows.shape[0], seq_len=seq_len, seed=seed)
    if per_tensor:
        layouts = [identity_layout(cfg.nheads, cfg.headdim, cfg.ngroups) for _ in range(cfg.n_layer)]
    else:
        layouts = group_layouts(model, windows, batch_size, nhg, ndg, progress, seed)
        model = apply_layout(model, layouts)
    n_batches = -(-windows.shape[0] // batch_size)
    observers = [LayerObservers(observer, percentile, n_batches, hadamard) for _ in range(cfg.n_layer)]
    final_obs = ChannelObserver("minmax")
    _run_pass(model, windows, batch_size, lambda i, t: observers[i].update(t), final_obs.update,
              "calibrate: scales", progress)
    return Calibrated(build_quantized(model, layouts, observers, final_obs, cfg), model, layouts)


def calibrate_model(float_model, data, **kwargs) -> QuantMamba2LM:
    """``calibrate(...).model``: the W8A8 model only (same keyword arguments as ``calibrate``)."""
    return calibrate(float_model, data, **kwargs).model


@torch.no_grad()
def x_quantization_error(calibrated: Calibrated, tokens: torch.Tensor) -> list[float]:
    """Per layer, the relative RMS error ``||Q(x)*s - x|| / ||x||`` of the conv+SiLU x output of the
    float model on ``tokens [B, L]`` when quantized with the model's x scales (groups or one).
    The float model runs on its own device (``tokens`` are moved there), wherever the W8A8 model is."""
    err = [[0.0, 0.0] for _ in calibrated.model.layers]
    tokens = tokens.to(_device_of(calibrated.float_model))

    def on_mixer(i, t):
        m = calibrated.model.layers[i].mixer
        s = ops.x_channel_scales(m.x_out_scales, m.x_head_group_range, m.x_dim_group_range,
                                 m.nheads, m.headdim).to(t.x.device)
        err[i][0] += float((ops.quantize(t.x, s).float() * s - t.x).pow(2).sum())
        err[i][1] += float(t.x.pow(2).sum())

    _run_pass(calibrated.float_model, tokens, tokens.shape[0], on_mixer, None, "x error", False,
              with_state=False)
    return [(e / max(n, 1e-30)) ** 0.5 for e, n in err]


# ---- CLI -------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="float model: shipped name, transformers or mamba_ssm Mamba2 dir, hub id")
    parser.add_argument("--text", required=True, help="calibration text file")
    parser.add_argument("--tokenizer", metavar="DIR_OR_ID", default=None,
                        help="tokenizer when the model folder holds none and its vocabulary is not bytes")
    parser.add_argument("-o", "--out", required=True, help="output checkpoint directory")
    parser.add_argument("--force", action="store_true", help="replace an existing output directory")
    parser.add_argument("--observer", choices=OBSERVERS, default="minmax")
    parser.add_argument("--percentile", type=float, default=0.9995)
    parser.add_argument("--head-groups", type=int, default=4)
    parser.add_argument("--dim-groups", type=int, default=4)
    parser.add_argument("--per-tensor", action="store_true", help="baseline: no head/dim groups")
    parser.add_argument("--hadamard", action="store_true", help="rotate the out_proj input")
    parser.add_argument("--num-samples", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    from qmamba.data import read_text
    from qmamba.output_dir import atomic_output_dir
    from qmamba.tokenizer import carry_tokenizer, find_tokenizer

    from .checkpoint import save_quantized
    from .inspect import format_report, report
    from .model_source import identify, load_float

    source = identify(args.model)     # a W8A8 or unknown model is refused before anything is built
    tok = find_tokenizer(source.path, args.tokenizer)
    text = read_text(args.text, "calibrate")
    data = torch.tensor(tok.encode_bytes(text), dtype=torch.int64)  # bytes themselves for a byte model
    with atomic_output_dir(args.out, force=args.force, inputs=[source.path, args.text]) as tmp:
        model = calibrate_model(load_float(source, "calibrate"), data, observer=args.observer,
                                percentile=args.percentile, n_head_groups=args.head_groups,
                                n_dim_groups=args.dim_groups, per_tensor=args.per_tensor,
                                hadamard=args.hadamard, num_samples=args.num_samples,
                                seq_len=args.seq_len, batch_size=args.batch_size, seed=args.seed)
        model.config.calibration.update(model=args.model, text=str(args.text))
        save_quantized(model, tmp)
        carry_tokenizer(tok, tmp)
    print(format_report(report(args.out)))
    print(f"saved {args.out}")
    return 0
