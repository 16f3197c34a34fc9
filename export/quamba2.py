"""Loading released Quamba2 W8A8 checkpoints (enyac-group/Quamba, ``W8A8QMamba2`` layers).

A Quamba2 checkpoint directory holds ``config.json`` (a mamba_ssm ``MambaConfig`` plus
``norm_cfg``/``embedding_cfg``/``lm_head_cfg``) and ``pytorch_model.bin`` (``torch.save`` of the
state dict; scalar scales are plain Python floats there) or ``model.safetensors``. Keys, per layer
``P = backbone.layers.{i}``:

=========================================  ==========================================================
``P.norm.weight``, ``P.norm.output_scale``  block RMSNorm (fp16) and its int8 output scale
``P.mixer.in_proj.weight|a|b``              int8 ``[d_model, rows+pad16]`` (stored transposed),
                                            ``a [1,1]`` input scale, ``b [1, rows+pad]`` =
                                            weight scale / output scale of the row's segment
``P.mixer.conv1d.*``                        ``weight [conv_dim, K]``, ``bias``, ``x|B|C_scale``,
                                            ``wx|wB|wC_scale``, ``bx|bB|bC_scale``, ``x_out_scales``,
                                            ``B_out_scales``, ``C_out_scales``, ``x_head_group_range``,
                                            ``x_dim_group_range``
``P.mixer.qchunk_scan.*``                   ``A_log`` int8 + ``A_log_scale``, ``D`` int8 + ``D_scale``,
                                            ``dt_bias`` fp16, ``dt_scale``, ``ssm_state_scale``,
                                            ``x_scales``, ``B_scale``, ``C_scale`` and the two ranges
                                            (copies of the conv1d ones)
``P.mixer.norm.weight|z_scale|output_scale`` gated RMSNorm (fp16), z's int8 scale
``P.mixer.had.x_H_scale`` (or ``had.scale``) out_proj input scale, with (or without) the Hadamard
``P.mixer.out_proj.weight|a|b|alpha``       int8 ``[d_ssm, d_model+pad]``, input scale, weight scale
``backbone.embedding.weight|scales``        int8 table, fp16 row scales
``backbone.norm_f.weight|output_scale``     final RMSNorm and the lm_head input scale
``lm_head.weight|a|b|alpha``                int8 ``[d_model, vocab+pad]``, input and weight scales
=========================================  ==========================================================

Per-tensor Quamba2 checkpoints (no group ranges, ``x_out_scales`` of shape ``[1]``) load as
``[g, 1, 1]`` groups. The copies Quamba2 keeps twice (x scales, ranges, norm/in_proj input scales)
must agree, or loading fails naming both.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from . import hadamard as had
from .qmodel import QuantConfig, QuantMamba2LM
from .quant_modules import scalar_buffer
from .validate import QMambaInputError

CONV_SCALARS = ("x_scale", "B_scale", "C_scale", "wx_scale", "wB_scale", "wC_scale",
                "bx_scale", "bB_scale", "bC_scale")


class _Reader:
    """Key access with errors that name the layer, the tensor and the key."""

    def __init__(self, sd: dict, source: str):
        self.sd, self.source = sd, source

    def has(self, key: str) -> bool:
        return key in self.sd

    def _where(self, key: str) -> str:
        parts = key.split(".")
        if parts[:2] == ["backbone", "layers"]:
            return f"layer {parts[2]} {'.'.join(parts[3:-1])}: {parts[-1]}"
        return f"{'.'.join(parts[:-1])}: {parts[-1]}"

    def tensor(self, key: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        if key not in self.sd:
            raise QMambaInputError(f"quamba2 checkpoint {self.source}: {self._where(key)} is missing "
                                   f"(key {key})")
        t = self.sd[key]
        if not isinstance(t, torch.Tensor):
            raise QMambaInputError(f"quamba2 checkpoint {self.source}: {self._where(key)} must be a "
                                   f"tensor, got {type(t).__name__}")
        if dtype is not None and t.dtype != dtype:
            raise QMambaInputError(f"quamba2 checkpoint {self.source}: {self._where(key)} must be "
                                   f"{dtype}, got {t.dtype}")
        return t

    def scalar(self, key: str) -> float:
        """A scale stored as a Python float, a 0-dim or a one-element tensor."""
        if key not in self.sd:
            self.tensor(key)
        v = self.sd[key]
        if isinstance(v, torch.Tensor):
            if v.numel() != 1:
                raise QMambaInputError(f"quamba2 checkpoint {self.source}: {self._where(key)} must "
                                       f"be a scalar, got shape {list(v.shape)}")
            return float(v.reshape(()))
        if not isinstance(v, (int, float)):
            raise QMambaInputError(f"quamba2 checkpoint {self.source}: {self._where(key)} must be "
                                   f"a number, got {v!r}")
        return float(v)

    def same(self, key_a: str, a, key_b: str, b) -> None:
        ta, tb = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
        if ta.shape != tb.shape or not torch.allclose(ta, tb, rtol=1e-6, atol=0):
            raise QMambaInputError(f"quamba2 checkpoint {self.source}: {self._where(key_a)} and "
                                   f"{self._where(key_b)} must hold the same values")


def _linear_weight(r: _Reader, key: str, rows: int, cols: int) -> torch.Tensor:
    """int8 ``[rows, cols]`` from Quamba2's transposed, row-padded ``[cols, rows + pad]``."""
    w = r.tensor(key, torch.int8)
    if w.dim() != 2 or w.shape[0] != cols or not rows <= w.shape[1] < rows + 16:
        raise QMambaInputError(f"quamba2 checkpoint {r.source}: {r._where(key)} must have shape "
                               f"[{cols}, {rows} + padding to 16], got {list(w.shape)}")
    return w.t()[:rows].contiguous()


def _dims(r: _Reader, conf: dict) -> dict:
    """Sizes from the tensors of layer 0 (checked against config.json where it has them)."""
    P = "backbone.layers.0.mixer."
    d_model = int(conf["d_model"])
    ssm = conf.get("ssm_cfg", {}) or {}
    d_ssm = int(ssm.get("expand", 2)) * d_model
    nheads = r.tensor(P + "qchunk_scan.dt_bias").shape[0]
    if nheads < 1 or d_ssm % nheads:
        raise QMambaInputError(f"quamba2 checkpoint {r.source}: {nheads} heads do not divide d_ssm={d_ssm}")
    ngroups = r.tensor(P + "conv1d.B_out_scales").numel()     # one B scale per SSD group
    if int(ssm.get("ngroups", ngroups)) != ngroups:
        raise QMambaInputError(f"quamba2 checkpoint {r.source}: config ngroups={ssm['ngroups']} but "
                               f"layer 0 conv1d: B_out_scales has {ngroups} entries")
    conv_w = r.tensor(P + "conv1d.weight", torch.int8)
    conv_dim, d_conv = conv_w.shape
    if (conv_dim - d_ssm) % (2 * ngroups):
        raise QMambaInputError(f"quamba2 checkpoint {r.source}: conv1d.weight rows {conv_dim} do not fit "
                               f"d_ssm={d_ssm} and ngroups={ngroups}")
    d_state = (conv_dim - d_ssm) // (2 * ngroups)
    grouped = r.has(P + "conv1d.x_head_group_range")
    nhg, ndg = tuple(r.tensor(P + "conv1d.x_out_scales").shape[1:]) if grouped else (1, 1)
    lo, hi = ssm.get("dt_limit", (0.0, float("inf")))
    return dict(vocab_size=r.tensor("backbone.embedding.weight").shape[0], d_model=d_model,
                n_layer=int(conf["n_layer"]), nheads=nheads, headdim=d_ssm // nheads,
                d_state=d_state, ngroups=ngroups, d_conv=d_conv, n_head_groups=nhg,
                n_dim_groups=ndg, dt_min=float(lo), dt_max=float(hi),
                chunk_size=int(ssm.get("chunk_size", 256)), per_tensor=not grouped,
                hadamard=r.has(P + "had.x_H_scale"))


def _load_mixer(r: _Reader, i: int, q, cfg: QuantConfig) -> None:
    P = f"backbone.layers.{i}.mixer."
    g, n, d_ssm = cfg.ngroups, cfg.d_state, cfg.d_ssm
    # in_proj: rows z | x | B | C | dt, each with its segment's output scale.
    seg = {"z": r.scalar(P + "norm.z_scale"), "dt": r.scalar(P + "qchunk_scan.dt_scale")}
    for k in ("x", "B", "C"):
        seg[k] = r.scalar(P + f"conv1d.{k}_scale")
    sizes = q.in_proj_split_sizes()
    rows = sum(sizes)
    q.in_proj.weight = _linear_weight(r, P + "in_proj.weight", rows, cfg.d_model)
    b = r.tensor(P + "in_proj.b", torch.float32).reshape(-1)[:rows]
    seg_scale = torch.cat([torch.full((s,), seg[k]) for k, s in zip(("z", "x", "B", "C", "dt"), sizes)])
    q.in_proj.weight_scale = (b.double() * seg_scale.double()).float()
    q.in_proj.input_scale = scalar_buffer(r.scalar(P + "in_proj.a"))
    for k in ("z", "x", "B", "C", "dt"):
        setattr(q, f"{k}_scale", scalar_buffer(seg[k]))
    # conv1d
    q.conv_weight = r.tensor(P + "conv1d.weight", torch.int8).contiguous()
    q.conv_bias = r.tensor(P + "conv1d.bias", torch.int8).contiguous()
    for k in CONV_SCALARS[3:]:
        setattr(q, k, scalar_buffer(r.scalar(P + f"conv1d.{k}")))
    xo = r.tensor(P + "conv1d.x_out_scales").float()
    if cfg.per_tensor:
        q.x_out_scales = xo.reshape(-1)[:1].reshape(1, 1, 1).expand(g, 1, 1).contiguous()
        q.B_out_scales = r.tensor(P + "conv1d.B_out_scales").float().reshape(-1).expand(g).contiguous()
        q.C_out_scales = r.tensor(P + "conv1d.C_out_scales").float().reshape(-1).expand(g).contiguous()
        q.x_head_group_range = torch.full((g, 1), cfg.nheads // g, dtype=torch.int32)
        q.x_dim_group_range = torch.full((g, 1, 1), cfg.headdim, dtype=torch.int32)
        sss = r.tensor(P + "qchunk_scan.ssm_state_scale").float().reshape(-1)[:1]
        q.ssm_state_scale = sss.reshape(1, 1, 1, 1).expand(g, 1, 1, n).contiguous()
    else:
        q.x_out_scales = xo.contiguous()
        q.B_out_scales = r.tensor(P + "conv1d.B_out_scales").float().contiguous()
        q.C_out_scales = r.tensor(P + "conv1d.C_out_scales").float().contiguous()
        q.x_head_group_range = r.tensor(P + "conv1d.x_head_group_range").to(torch.int32).contiguous()
        q.x_dim_group_range = r.tensor(P + "conv1d.x_dim_group_range").to(torch.int32).contiguous()
        q.ssm_state_scale = r.tensor(P + "qchunk_scan.ssm_state_scale").float().contiguous()
        for ours, theirs in (("x_out_scales", "x_scales"), ("B_out_scales", "B_scale"),
                             ("C_out_scales", "C_scale"), ("x_head_group_range", "x_head_group_range"),
                             ("x_dim_group_range", "x_dim_group_range")):
            r.same(P + f"conv1d.{ours}", getattr(q, ours), P + f"qchunk_scan.{theirs}",
                   r.tensor(P + f"qchunk_scan.{theirs}").reshape(getattr(q, ours).shape))
    # SSD parameters: A_log and D are int8 with one scale each in Quamba2.
    D_q = r.tensor(P + "qchunk_scan.D", torch.int8)
    if D_q.numel() != cfg.nheads:
        raise QMambaInputError(f"quamba2 checkpoint {r.source}: layer {i} qchunk_scan: D has "
                               f"{D_q.numel()} entries; only one per head is supported (D_has_hdim=False)")
    q.A_log = r.tensor(P + "qchunk_scan.A_log", torch.int8).float() * r.scalar(P + "qchunk_scan.A_log_scale")
    q.D = D_q.float() * r.scalar(P + "qchunk_scan.D_scale")
    q.dt_bias = r.tensor(P + "qchunk_scan.dt_bias").float().contiguous()
    # gated norm, Hadamard, out_proj
    q.norm.weight = r.tensor(P + "norm.weight").float().contiguous()
    in_key = P + ("had.x_H_scale" if cfg.hadamard else "had.scale")
    s_in = r.scalar(in_key)
    r.same(in_key, s_in, P + "out_proj.a", r.scalar(P + "out_proj.a"))
    q.out_proj.weight = _linear_weight(r, P + "out_proj.weight", cfg.d_model, d_ssm)
    q.out_proj.weight_scale = torch.full((cfg.d_model,), r.scalar(P + "out_proj.b"))
    q.out_proj.input_scale = scalar_buffer(s_in)


def quamba2_to_model(conf: dict, sd: dict, source: str = "<memory>") -> QuantMamba2LM:
    """Builds a QuantMamba2LM from a Quamba2 config dict and state dict."""
    r = _Reader(sd, source)
    for key in ("d_model", "n_layer"):
        if key not in conf:
            raise QMambaInputError(f"quamba2 checkpoint {source}: config.json has no {key}")
    d = _dims(r, conf)
    if d["hadamard"] and not had.is_supported_size(d["nheads"] * d["headdim"]):
        raise QMambaInputError(f"quamba2 checkpoint {source}: Hadamard size {d['nheads'] * d['headdim']} unsupported")
    cfg = QuantConfig(**d, norm_eps=1e-5, gated_norm_eps=1e-5,
                      calibration={"source": "quamba2", "path": source})
    model = QuantMamba2LM(cfg)
    model.embedding.weight = r.tensor("backbone.embedding.weight", torch.int8).contiguous()
    model.embedding.scale = r.tensor("backbone.embedding.scales").float().contiguous()
    for i, layer in enumerate(model.layers):
        P = f"backbone.layers.{i}."
        layer.norm.weight = r.tensor(P + "norm.weight").float().contiguous()
        _load_mixer(r, i, layer.mixer, cfg)
        r.same(P + "norm.output_scale", r.scalar(P + "norm.output_scale"),
               P + "mixer.in_proj.a", float(layer.mixer.in_proj.input_scale))
    model.norm_f.weight = r.tensor("backbone.norm_f.weight").float().contiguous()
    s_f = r.scalar("backbone.norm_f.output_scale")
    r.same("backbone.norm_f.output_scale", s_f, "lm_head.a", r.scalar("lm_head.a"))
    model.lm_head.weight = _linear_weight(r, "lm_head.weight", cfg.vocab_size, cfg.d_model)
    model.lm_head.weight_scale = torch.full((cfg.vocab_size,), r.scalar("lm_head.b"))
    model.lm_head.input_scale = scalar_buffer(s_f)
    model.validate()
    return model


def read_quamba2(directory) -> tuple[dict, dict]:
    """(config dict, state dict) of a Quamba2 checkpoint directory."""
    d = Path(directory)
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"{d}: config.json not found")
    conf = json.loads((d / "config.json").read_text())
    if (d / "pytorch_model.bin").is_file():
        sd = torch.load(d / "pytorch_model.bin", map_location="cpu", weights_only=True)
    elif (d / "model.safetensors").is_file():
        from safetensors.torch import load_file

        sd = load_file(str(d / "model.safetensors"))
    else:
        raise FileNotFoundError(f"{d}: neither pytorch_model.bin nor model.safetensors found")
    return conf, sd


def load_quamba2(directory, ops_backend: str = "reference") -> QuantMamba2LM:
    """A released Quamba2 W8A8 checkpoint directory -> QuantMamba2LM."""
    conf, sd = read_quamba2(directory)
    model = quamba2_to_model(conf, sd, str(directory))
    model.ops_backend = ops_backend
    return model
