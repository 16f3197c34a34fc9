"""``qmamba inspect CHECKPOINT [--json]``: the per-layer scale report of a checkpoint.

Reads a qmamba checkpoint (``checkpoint.save_quantized``) or a Quamba2 checkpoint (``quamba2``)
without building the model. Per layer: the shapes of x_out_scales / B_out_scales / C_out_scales,
the kind of quantization told from x_out_scales' shape (scalar or ``(1,)``: per-tensor; 1-D:
per-channel; ``(1, nhg, ndg)``: head x dim groups; ``(S, nhg, ndg)`` with S > 1: SSD group x head x
dim groups), min / max / mean / std of x_out_scales, the spread across head groups (largest over
smallest of the head groups' largest scales) and across dim groups (largest max/min ratio inside
one head group), B/C output scales, the conv scalars and mean(x_out_scales) / wx_scale.

Scales that are not finite or not > 0 (a corrupt checkpoint) are listed per layer under
``scale_problems`` and flagged in the text report. ``--json`` stays valid JSON for them: a
non-finite number is written as ``null`` and its place in the report listed under ``non_finite``.
"""
from __future__ import annotations

import argparse
import json
import math

import torch

from .validate import QMambaInputError

CONV_SCALARS = ("x_scale", "wx_scale", "bx_scale", "B_scale", "wB_scale", "bB_scale",
                "C_scale", "wC_scale", "bC_scale")


def quantization_kind(shape) -> str:
    shape = tuple(shape)
    if len(shape) == 0 or shape == (1,):
        return "per-tensor"
    if len(shape) == 1:
        return "per-channel"
    if len(shape) == 3 and shape[1:] == (1, 1):
        return "per-tensor" if shape[0] == 1 else "per SSD group"
    if len(shape) == 3:
        return "head x dim groups" if shape[0] == 1 else "SSD group x head x dim groups"
    return f"unknown shape {list(shape)}"


def _num(v) -> float:
    return float(v.reshape(())) if isinstance(v, torch.Tensor) else float(v)


def layer_scales(directory) -> tuple[str, list[dict]]:
    """(format name, per layer {name: tensor or float}) of a W8A8 MODEL (``model_source``)."""
    from . import model_source
    from .checkpoint import WEIGHTS, read_weights
    from .quamba2 import read_quamba2

    src = model_source.identify(directory)
    d = src.path
    if src.kind == model_source.QMAMBA_W8A8:
        sd = read_weights(d / WEIGHTS)
        fmt, prefix = "qmamba", "layers.{i}.mixer."
        names = {k: k for k in ("x_out_scales", "B_out_scales", "C_out_scales", "ssm_state_scale",
                                "x_head_group_range", "x_dim_group_range") + CONV_SCALARS}
    elif src.kind == model_source.QUAMBA2_W8A8:
        _, sd = read_quamba2(d)
        fmt, prefix = "quamba2", "backbone.layers.{i}.mixer."
        names = {k: f"conv1d.{k}" for k in ("x_out_scales", "B_out_scales", "C_out_scales",
                                            "x_head_group_range", "x_dim_group_range") + CONV_SCALARS}
        names["ssm_state_scale"] = "qchunk_scan.ssm_state_scale"
    else:
        raise QMambaInputError(f"inspect: {src.spec} is a float model ({src.kind}) and has no scales; "
                               f"quantize it first with `qmamba calibrate`")
    layers = []
    i = 0
    while (prefix + names["x_out_scales"]).format(i=i) in sd:
        p = prefix.format(i=i)
        layers.append({k: sd[p + v] for k, v in names.items() if p + v in sd})
        i += 1
    if not layers:
        raise QMambaInputError(f"{d}: layer 0: x_out_scales is missing "
                               f"(key {(prefix + names['x_out_scales']).format(i=0)})")
    return fmt, layers


def _stats(t: torch.Tensor) -> dict:
    t = t.float().reshape(-1)
    return {"min": float(t.min()), "max": float(t.max()), "mean": float(t.mean()),
            "std": float(t.std()) if t.numel() > 1 else 0.0}


def scale_problems(s: dict) -> list[str]:
    """What is wrong with the layer's scales: non-finite values, values <= 0."""
    problems = []
    for k in ("x_out_scales", "B_out_scales", "C_out_scales", "ssm_state_scale") + CONV_SCALARS:
        if k not in s:
            continue
        t = torch.as_tensor(s[k]).float()
        finite = torch.isfinite(t)
        bad = [f"{int((~finite).sum())} non-finite"] if not finite.all() else []
        if (t[finite] <= 0).any():
            bad.append(f"{int((t[finite] <= 0).sum())} <= 0")
        if bad:
            problems.append(f"{k}: {', '.join(bad)} of {t.numel()}")
    return problems


def layer_report(i: int, s: dict) -> dict:
    x = s["x_out_scales"].float()
    rep = {"layer": i, "x_out_scales_shape": list(x.shape), "kind": quantization_kind(x.shape),
           "x_out_scales": _stats(x),
           "B_out_scales": s["B_out_scales"].float().reshape(-1).tolist(),
           "C_out_scales": s["C_out_scales"].float().reshape(-1).tolist()}
    rep["B_out_scales_shape"] = list(s["B_out_scales"].shape)
    rep["C_out_scales_shape"] = list(s["C_out_scales"].shape)
    if x.dim() == 3:
        row_max = x.amax(dim=2)                                   # [S, nhg]
        rep["head_group_spread"] = float((row_max.amax(1) / row_max.amin(1)).max())
        rep["dim_group_spread"] = float((x.amax(2) / x.amin(2)).max())
        rep["x_out_scales_grid"] = x.tolist()
    for k in CONV_SCALARS:
        if k in s:
            rep[k] = _num(s[k])
    if "wx_scale" in rep:
        rep["mean_x_out_over_wx"] = rep["x_out_scales"]["mean"] / rep["wx_scale"]
    if "ssm_state_scale" in s:
        rep["ssm_state_scale_shape"] = list(s["ssm_state_scale"].shape)
        rep["ssm_state_scale"] = _stats(s["ssm_state_scale"])
    for k in ("x_head_group_range", "x_dim_group_range"):
        if k in s:
            rep[k] = s[k].tolist()
    rep["scale_problems"] = scale_problems(s)
    return rep


def report(directory) -> dict:
    fmt, layers = layer_scales(directory)
    return {"checkpoint": str(directory), "format": fmt, "n_layer": len(layers),
            "layers": [layer_report(i, s) for i, s in enumerate(layers)]}


def json_safe(value, where: str = "", non_finite: list | None = None):
    """``value`` with every NaN or infinity replaced by None (JSON has no such numbers); the
    places replaced are appended to ``non_finite`` as ``layers[0].x_out_scales.min``."""
    if isinstance(value, float) and not math.isfinite(value):
        if non_finite is not None:
            non_finite.append(where)
        return None
    if isinstance(value, dict):
        return {k: json_safe(v, f"{where}.{k}" if where else k, non_finite) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v, f"{where}[{i}]", non_finite) for i, v in enumerate(value)]
    return value


def report_json(rep: dict) -> str:
    """The report as valid JSON: non-finite numbers as null, listed under ``non_finite``."""
    non_finite: list[str] = []
    safe = json_safe(rep, non_finite=non_finite)
    safe["non_finite"] = non_finite
    return json.dumps(safe, indent=1, allow_nan=False)


def format_report(rep: dict) -> str:
    out = [f"checkpoint {rep['checkpoint']} ({rep['format']}, {rep['n_layer']} layers)",
           f"{'layer':>5} {'x_out_scales':>13} {'kind':<30} {'min':>8} {'max':>8} {'mean':>8} "
           f"{'std':>8} {'head x':>7} {'dim x':>7} {'x_scale':>8} {'wx_scale':>8} {'mean/wx':>7}"]
    for L in rep["layers"]:
        st = L["x_out_scales"]
        out.append(f"{L['layer']:>5} {str(tuple(L['x_out_scales_shape'])):>13} {L['kind']:<30} "
                   f"{st['min']:8.4f} {st['max']:8.4f} {st['mean']:8.4f} {st['std']:8.4f} "
                   f"{L.get('head_group_spread', 1.0):7.2f} {L.get('dim_group_spread', 1.0):7.2f} "
                   f"{L.get('x_scale', float('nan')):8.4f} {L.get('wx_scale', float('nan')):8.4f} "
                   f"{L.get('mean_x_out_over_wx', float('nan')):7.2f}")
    for L in rep["layers"]:
        out += [f"WARNING layer {L['layer']}: {p}" for p in L["scale_problems"]]
    L0 = rep["layers"][0]
    fmt_vals = lambda v: " ".join(f"{x:.4f}" for x in v)
    out.append(f"layer 0 B_out_scales {tuple(L0['B_out_scales_shape'])}: {fmt_vals(L0['B_out_scales'])}")
    out.append(f"layer 0 C_out_scales {tuple(L0['C_out_scales_shape'])}: {fmt_vals(L0['C_out_scales'])}")
    for sg, grid in enumerate(L0.get("x_out_scales_grid", [])[:8]):
        out.append(f"layer 0 x_out_scales[{sg}]:")
        out += [f"  head group {hg}: {fmt_vals(row)}" for hg, row in enumerate(grid)]
    return "\n".join(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="MODEL",
                        help="qmamba or Quamba2 W8A8 checkpoint directory or hub id")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args) -> int:
    rep = report(args.checkpoint)
    print(report_json(rep) if args.json else format_report(rep))
    return 0
