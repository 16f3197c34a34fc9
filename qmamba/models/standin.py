"""Full-size stand-ins: random weights with the exact configuration of a released Mamba2 model.

For sizing and benchmarking an engine without the real weights: the shapes, vocabulary, layer
count and (for W8A8) the scale structure are the real model's; the values are random but shaped
like trained ones, so nothing overflows or degenerates.

Three layouts, written layer by layer so that even 8b never needs fp32 copies of the whole model:

- ``mamba_ssm``: ``config.json`` + ``pytorch_model.bin`` (fp16) as ``MambaLMHeadModel.from_pretrained``
  reads it (``mamba_ssm_layout`` converts it to transformers).
- ``transformers``: ``config.json`` + safetensors shards (fp16) as ``Mamba2ForCausalLM.from_pretrained``
  reads it.
- ``quamba2``: a Quamba2 W8A8 checkpoint (int8 weights, fp16 norms, group scales of (g, 4, 4) with
  the magnitudes of the released checkpoints, Hadamard or not) as ``export.quamba2.load_quamba2``
  reads it.

Float initialization follows mamba_ssm: linears and embedding N(0, 0.02), conv1d uniform(±1/√d_conv),
``A_log = log(U[1, 16])``, ``dt_bias`` = inverse softplus of dt log-uniform in [1e-3, 1e-1],
``D`` and norms one.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from qmamba.export import hadamard as had
from qmamba.export.validate import QMambaInputError

from .mamba_ssm_layout import TORCH_WEIGHTS, expected_shapes, transformers_key
from .real_configs import Mamba2Sizes, mamba2_sizes, names, real_config, special_tokens_of, \
    to_transformers_config
from .safetensors_shards import ShardWriter

LAYOUTS = ("mamba_ssm", "transformers", "quamba2")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
LINEAR_STD = 0.02
INT8_STD = 28.0          # int8 weights of a roughly Gaussian layer quantized at absmax / 127
# Share of available memory a pytorch_model.bin may take: torch.save needs the whole dict at once.
BIN_MEMORY_SHARE = 0.75


# ---------------------------------------------------------------------------------------------
# float weights
# ---------------------------------------------------------------------------------------------

def _float_layer(s: Mamba2Sizes, gen: torch.Generator, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """One layer's float tensors, keyed as mamba_ssm names them after ``backbone.layers.{i}.``."""
    def normal(*shape):
        return (torch.randn(*shape, generator=gen) * LINEAR_STD).to(dtype)

    bound = 1.0 / math.sqrt(s.d_conv)
    dt = torch.exp(torch.rand(s.nheads, generator=gen) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    dt = dt.clamp(min=1e-4)
    t = {"norm.weight": torch.ones(s.d_model, dtype=dtype),
         "mixer.in_proj.weight": normal(s.d_in_proj, s.d_model),
         "mixer.conv1d.weight": ((torch.rand(s.conv_dim, 1, s.d_conv, generator=gen) * 2 - 1) * bound).to(dtype),
         "mixer.dt_bias": (dt + torch.log(-torch.expm1(-dt))).to(dtype),
         "mixer.A_log": torch.log(torch.empty(s.nheads).uniform_(1, 16, generator=gen)).to(dtype),
         "mixer.D": torch.ones(s.nheads, dtype=dtype),
         "mixer.norm.weight": torch.ones(s.d_ssm, dtype=dtype),
         "mixer.out_proj.weight": normal(s.d_model, s.d_ssm)}
    if s.conv_bias:
        t["mixer.conv1d.bias"] = ((torch.rand(s.conv_dim, generator=gen) * 2 - 1) * bound).to(dtype)
    if s.bias:
        t["mixer.in_proj.bias"] = torch.zeros(s.d_in_proj, dtype=dtype)
        t["mixer.out_proj.bias"] = torch.zeros(s.d_model, dtype=dtype)
    return t


def float_tensors(config: dict, seed: int = 0, dtype: torch.dtype = torch.float16
                  ) -> Iterator[tuple[str, torch.Tensor]]:
    """(mamba_ssm key, tensor) of a random model, one layer at a time, in ``expected_shapes`` order;
    ``lm_head.weight`` only when untied."""
    s = mamba2_sizes(config)
    gen = torch.Generator().manual_seed(seed)
    yield "backbone.embedding.weight", (torch.randn(s.vocab_size, s.d_model, generator=gen) * LINEAR_STD).to(dtype)
    for i in range(s.n_layer):
        for name, t in _float_layer(s, gen, dtype).items():
            yield f"backbone.layers.{i}.{name}", t
    yield "backbone.norm_f.weight", torch.ones(s.d_model, dtype=dtype)
    if not s.tie_embeddings:
        yield "lm_head.weight", (torch.randn(s.vocab_size, s.d_model, generator=gen) * LINEAR_STD).to(dtype)


def _available_memory() -> int:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def write_mamba_ssm(config: dict, out, seed: int = 0, dtype: torch.dtype = torch.float16) -> Path:
    """config.json + pytorch_model.bin in mamba_ssm's layout. Refuses a file larger than memory
    allows (torch.save holds the whole dict), suggesting the sharded transformers layout."""
    s = mamba2_sizes(config)
    size = sum(math.prod(shape) for shape in expected_shapes(s).values()) * torch.empty(0, dtype=dtype).element_size()
    avail = _available_memory()
    if size > BIN_MEMORY_SHARE * avail:
        raise QMambaInputError(f"a {size / 2**30:.1f} GiB pytorch_model.bin does not fit the "
                               f"{avail / 2**30:.1f} GiB of available memory; write --layout "
                               f"transformers (sharded safetensors) or fewer --layers")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = dict(float_tensors(config, seed, dtype))
    if s.tie_embeddings:
        # mamba_ssm's state dict holds the tied lm_head too; torch.save stores the storage once
        state["lm_head.weight"] = state["backbone.embedding.weight"]
    torch.save(state, out / TORCH_WEIGHTS)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def write_transformers(config: dict, out, seed: int = 0, dtype: torch.dtype = torch.float16,
                       special_tokens: dict | None = None, max_shard_bytes: int = 2 << 30) -> Path:
    """config.json + safetensors (sharded past ``max_shard_bytes``) in transformers' layout."""
    out = Path(out)
    writer = ShardWriter(out, max_shard_bytes)
    for key, t in float_tensors(config, seed, dtype):
        writer.add(transformers_key(key), t)
    writer.close()
    to_transformers_config(config, special_tokens).save_pretrained(out)
    return out


# ---------------------------------------------------------------------------------------------
# Quamba2 W8A8
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScaleProfile:
    """Magnitudes of a released Quamba2 checkpoint's scales (layer 0 of the real model)."""
    x_scale: float
    wx_scale: float
    x_out_range: tuple[float, float]    # min, max of x_out_scales
    B_out: tuple[float, ...]
    C_out: tuple[float, ...]


PROFILES = {
    "130m": ScaleProfile(0.0643, 0.0092, (0.0057, 0.0518), (0.0753,), (0.1190,)),
    "2.7b": ScaleProfile(0.1656, 0.0038, (0.0029, 0.0816), (0.1137,), (0.2671,)),
    "8b": ScaleProfile(0.2117, 0.0037, (0.0003, 0.0442),
                       (0.0136, 0.0324, 0.0178, 0.0099, 0.0087, 0.0148, 0.0113, 0.0166),
                       (0.0294, 0.0249, 0.0269, 0.0271, 0.0259, 0.0424, 0.0370, 0.0357)),
}
# Scales the analysis did not record: typical magnitudes of Quamba2's int8 activations.
NORM_OUTPUT_SCALE = 0.1     # RMSNorm outputs (in_proj and lm_head inputs)
OUT_PROJ_INPUT_SCALE = 0.05
DT_SCALE = 0.05
SSM_STATE_SCALE = 0.05
WEIGHT_SCALE = LINEAR_STD * 4.5 / 127


def profile_for(s: Mamba2Sizes) -> ScaleProfile:
    """The measured profile closest to a model: 8b's for several SSD groups, else by width."""
    if s.ngroups > 1:
        return PROFILES["8b"]
    return PROFILES["130m"] if s.d_model <= 1536 else PROFILES["2.7b"]


def _log_uniform(n, lo: float, hi: float, gen) -> torch.Tensor:
    return torch.exp(torch.empty(n).uniform_(math.log(lo), math.log(hi), generator=gen))


def _per_group(values: tuple[float, ...], g: int, gen) -> torch.Tensor:
    if len(values) == g:
        return torch.tensor(values)
    return _log_uniform(g, min(values), max(values) * 1.0001, gen)


def _int8(shape, gen) -> torch.Tensor:
    return (torch.randn(*shape, generator=gen) * INT8_STD).round_().clamp_(-127, 127).to(torch.int8)


def _cuts(total: int, parts: int, gen) -> torch.Tensor:
    """``parts`` uneven cumulative ends of ``total`` (like Quamba2's clustered group ranges)."""
    inner = torch.randperm(total - 1, generator=gen)[:parts - 1] + 1
    return torch.cat([inner.sort().values, torch.tensor([total])]).to(torch.int32)


def _quamba_linear(w_int8: torch.Tensor) -> torch.Tensor:
    """Quamba2 stores int8 ``[out, in]`` padded to 16 rows and transposed: ``[in, out + pad]``."""
    pad = (16 - w_int8.shape[0] % 16) % 16
    return torch.nn.functional.pad(w_int8, (0, 0, 0, pad)).t().contiguous()


def _int8_with_scale(v: torch.Tensor) -> tuple[torch.Tensor, float]:
    scale = float(v.abs().max()) / 127.0
    return torch.round(v / scale).to(torch.int8), scale


def _quamba2_layer(s: Mamba2Sizes, prof: ScaleProfile, gen, hadamard: bool, per_tensor: bool,
                   n_head_groups: int = 4, n_dim_groups: int = 4) -> dict:
    """One W8A8QMamba2 layer's entries, keyed after ``backbone.layers.{i}.``."""
    g, n, h = s.ngroups, s.d_state, s.nheads
    t: dict = {"norm.weight": torch.ones(s.d_model, dtype=torch.float16),
               "norm.output_scale": NORM_OUTPUT_SCALE}
    M, C, S = "mixer.", "mixer.conv1d.", "mixer.qchunk_scan."
    seg = {"z": prof.x_scale, "x": prof.x_scale, "B": prof.x_scale, "C": prof.x_scale, "dt": DT_SCALE}
    sizes = {"z": s.d_ssm, "x": s.d_ssm, "B": g * n, "C": g * n, "dt": h}
    w_scale = WEIGHT_SCALE * torch.empty(s.d_in_proj).uniform_(0.5, 1.5, generator=gen)
    seg_scale = torch.cat([torch.full((sizes[k],), seg[k]) for k in sizes])
    b = w_scale / seg_scale
    t[M + "in_proj.weight"] = _quamba_linear(_int8((s.d_in_proj, s.d_model), gen))
    t[M + "in_proj.a"] = torch.tensor([[NORM_OUTPUT_SCALE]])
    t[M + "in_proj.b"] = torch.nn.functional.pad(b, (0, (16 - b.numel() % 16) % 16))[None]
    t[C + "weight"] = _int8((s.conv_dim, s.d_conv), gen)
    t[C + "bias"] = _int8((s.conv_dim,), gen)
    for k in ("x", "B", "C"):
        t[C + f"{k}_scale"] = seg[k]
        t[C + f"w{k}_scale"] = prof.wx_scale
        t[C + f"b{k}_scale"] = prof.wx_scale
    B_out, C_out = _per_group(prof.B_out, g, gen), _per_group(prof.C_out, g, gen)
    t[C + "B_out_scales"], t[C + "C_out_scales"] = B_out, C_out
    if per_tensor:
        x_out = _log_uniform(1, *prof.x_out_range, gen)
        t[C + "x_out_scales"], t[S + "x_scales"] = x_out, x_out.clone()
        t[S + "B_scale"], t[S + "C_scale"] = B_out[:1].clone(), C_out[:1].clone()
        t[S + "ssm_state_scale"] = torch.tensor([SSM_STATE_SCALE])
    else:
        nhg, ndg = n_head_groups, n_dim_groups
        x_out = _log_uniform((g, nhg, ndg), *prof.x_out_range, gen)
        heads = torch.stack([_cuts(h // g, nhg, gen) for _ in range(g)])
        dims = torch.stack([torch.stack([_cuts(s.headdim, ndg, gen) for _ in range(nhg)]) for _ in range(g)])
        for prefix, name in ((C, "x_out_scales"), (S, "x_scales")):
            t[prefix + name] = x_out.clone()
        for prefix in (C, S):
            t[prefix + "x_head_group_range"], t[prefix + "x_dim_group_range"] = heads.clone(), dims.clone()
        t[S + "ssm_state_scale"] = SSM_STATE_SCALE * torch.empty(g, nhg, ndg, n).uniform_(0.5, 1.5, generator=gen)
        t[S + "B_scale"], t[S + "C_scale"] = B_out.clone(), C_out.clone()
    f = _float_layer(s, gen, torch.float32)
    t[S + "dt_bias"] = f["mixer.dt_bias"].half()
    t[S + "A_log"], t[S + "A_log_scale"] = _int8_with_scale(f["mixer.A_log"])
    t[S + "D"], t[S + "D_scale"] = _int8_with_scale(f["mixer.D"])
    t[S + "dt_scale"] = DT_SCALE
    t[M + "norm.weight"] = torch.ones(s.d_ssm, dtype=torch.float16)
    t[M + "norm.z_scale"] = seg["z"]
    t[M + "norm.output_scale"] = None          # Quamba2's gated norm writes fp16
    t[M + ("had.x_H_scale" if hadamard else "had.scale")] = OUT_PROJ_INPUT_SCALE
    t[M + "out_proj.weight"] = _quamba_linear(_int8((s.d_model, s.d_ssm), gen))
    t[M + "out_proj.a"] = torch.tensor([[OUT_PROJ_INPUT_SCALE]])
    t[M + "out_proj.b"] = torch.tensor([[WEIGHT_SCALE]])
    t[M + "out_proj.alpha"] = WEIGHT_SCALE * OUT_PROJ_INPUT_SCALE
    return t


def write_quamba2(config: dict, out, seed: int = 0, hadamard: bool = True,
                  per_tensor: bool = False) -> Path:
    """A Quamba2 W8A8 checkpoint (config.json + pytorch_model.bin, Python-float scalars) of the
    configuration, with group scales (g, 4, 4) or per-tensor ones, Hadamard or not."""
    s = mamba2_sizes(config)
    if hadamard and not had.is_supported_size(s.d_ssm):
        raise QMambaInputError(f"hadamard needs d_ssm = 2^k, 12*2^k or 40*2^k, got {s.d_ssm}; "
                               f"write it with --no-hadamard")
    if not per_tensor and (s.nheads // s.ngroups < 4 or s.headdim < 4):
        raise QMambaInputError(f"4 x 4 group scales need at least 4 heads per SSD group and headdim "
                               f">= 4, got {s.nheads // s.ngroups} and {s.headdim}")
    prof = profile_for(s)
    gen = torch.Generator().manual_seed(seed)
    sd: dict = {"backbone.embedding.weight": _int8((s.vocab_size, s.d_model), gen),
                "backbone.embedding.scales": torch.full((s.vocab_size,), WEIGHT_SCALE, dtype=torch.float16)}
    for i in range(s.n_layer):
        for k, v in _quamba2_layer(s, prof, gen, hadamard, per_tensor).items():
            sd[f"backbone.layers.{i}.{k}"] = v
    sd["backbone.norm_f.weight"] = torch.ones(s.d_model, dtype=torch.float16)
    sd["backbone.norm_f.output_scale"] = NORM_OUTPUT_SCALE
    sd["lm_head.weight"] = _quamba_linear(_int8((s.vocab_size, s.d_model), gen))
    sd["lm_head.a"] = torch.tensor([[NORM_OUTPUT_SCALE]])
    sd["lm_head.b"] = torch.tensor([[WEIGHT_SCALE]])
    sd["lm_head.alpha"] = WEIGHT_SCALE * NORM_OUTPUT_SCALE
    conf = {k: v for k, v in config.items() if k not in ("attn_layer_idx", "attn_cfg")}
    conf["ssm_cfg"] = {**config["ssm_cfg"], "layer": "W8A8QMamba2"}
    conf.update(norm_cfg={"norm": "QRMSNorm"}, embedding_cfg={"layer": "W8O16Embedding"},
                lm_head_cfg={"layer": "W8A8B16O16Linear"}, is_hybrid=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(sd, out / TORCH_WEIGHTS)
    (out / "config.json").write_text(json.dumps(conf, indent=2))
    return out


# ---------------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------------

def standin_config(name: str, layers: int | None = None) -> dict:
    """The real configuration of ``name``, with ``n_layer`` overridden when ``layers`` is given."""
    config = real_config(name)
    if layers is not None:
        if layers < 1:
            raise ValueError(f"--layers must be >= 1, got {layers}")
        config["n_layer"] = layers
    return config


def write_standin(config: dict, out, layout: str, seed: int = 0, dtype: torch.dtype = torch.float16,
                  hadamard: bool = True, per_tensor: bool = False,
                  special_tokens: dict | None = None) -> Path:
    """Writes a random model of ``config`` in one of ``LAYOUTS``."""
    if layout == "mamba_ssm":
        return write_mamba_ssm(config, out, seed, dtype)
    if layout == "transformers":
        return write_transformers(config, out, seed, dtype, special_tokens)
    if layout == "quamba2":
        return write_quamba2(config, out, seed, hadamard, per_tensor)
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def add_arguments(parser) -> None:
    parser.add_argument("name", choices=names(), metavar="NAME",
                        help=f"configuration to copy: {', '.join(names())}")
    parser.add_argument("-o", "--output", required=True, help="directory to write")
    parser.add_argument("--force", action="store_true", help="replace an existing output directory")
    parser.add_argument("--layout", choices=LAYOUTS, default="transformers",
                        help="float mamba_ssm (pytorch_model.bin), float transformers (safetensors) "
                             "or Quamba2 W8A8 (default: transformers)")
    parser.add_argument("--layers", type=int, default=None, help="override the number of layers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=DTYPES, default="fp16", help="float layouts' weight type")
    parser.add_argument("--no-hadamard", dest="hadamard", action="store_false",
                        help="quamba2: out_proj without the Hadamard transform")
    parser.add_argument("--per-tensor", action="store_true",
                        help="quamba2: one x/B/C output scale per layer instead of groups")


def run(args) -> int:
    from qmamba.output_dir import atomic_output_dir

    config = standin_config(args.name, args.layers)
    with atomic_output_dir(args.output, force=args.force) as tmp:
        write_standin(config, tmp, args.layout, args.seed, DTYPES[args.dtype],
                      args.hadamard, args.per_tensor, special_tokens_of(args.name))
    out = Path(args.output)
    s = mamba2_sizes(config)
    written = sum(p.stat().st_size for p in Path(out).iterdir() if p.is_file())
    print(f"{args.name} stand-in ({args.layout}): {s.n_layer} layers, d_model {s.d_model}, "
          f"{s.nheads} heads of {s.headdim}, {s.ngroups} SSD group(s), d_state {s.d_state}, vocab "
          f"{s.real_vocab_size} padded to {s.vocab_size}; {written / 2**20:.1f} MiB in {out}")
    return 0
