"""``qmamba export MODEL -o DIR``: a quantized QuantMamba2LM -> DIR/prefill.onnx + DIR/decode.onnx.

prefill: ``input_ids int64 [batch, seq]`` -> ``logits fp32 [batch, seq, vocab]`` and every layer's
``conv_state_out.{i}`` / ``ssm_state_out.{i}`` (the states start at zero: the custom nodes have no
state input). decode: the same plus the inputs ``conv_state.{i}`` int8 ``[batch, K-1, conv_dim]``
and ``ssm_state.{i}`` int8 ``[batch, h, p, n]``; it is run with ``seq = 1`` (one token per batch
row), though any length works. Batch and sequence are dynamic axes.

Each mixer is standard ONNX (``onnx_layers``) around one QuantConv1dSiLU and one QuantSSD node of
domain ``qmamba`` (``onnx_ops``); the model also holds their function bodies unless
``--no-functions``. Initializers are named by the model's state_dict keys (linear weights are
stored transposed as ``<key>_t``), so a test can read every scale back bit for bit.
DIR/qmamba_onnx.json records the config, the graphs' inputs and outputs, the state names and the
tokenizer DIR carries (``tokenizer``: bytes, or a Hugging Face tokenizer whose files are copied
into DIR, so that ``qmamba generate`` / ``eval`` / ``build`` need nothing else; absent when the
model's folder holds none and no ``--tokenizer`` was given).
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from qmamba.output_dir import atomic_output_dir

from . import onnx_layers as L
from . import onnx_ops
from .metadata import ONNX_FORMAT, ONNX_METADATA, write_onnx_metadata
from .validate import QMambaInputError

GRAPHS = ("prefill", "decode")
# Protobuf cannot hold a message over 2 GiB: above this many bytes of initializers, tensors go to
# an external data file next to the graph.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
EXTERNAL_DATA_MODES = ("auto", "always", "never")


def state_names(layer: int) -> dict[str, str]:
    return {"conv_state": f"conv_state.{layer}", "conv_state_out": f"conv_state_out.{layer}",
            "ssm_state": f"ssm_state.{layer}", "ssm_state_out": f"ssm_state_out.{layer}"}


def check_exportable(model) -> None:
    """A QuantMamba2LM whose every tensor and size is valid, or a clear error."""
    from .qmodel import QuantMamba2LM

    if not isinstance(model, QuantMamba2LM):
        kind = type(model).__name__
        hint = ("it is an unquantized float model: quantize it first with `qmamba calibrate`"
                if "Mamba" in kind else "only qmamba's quantized QuantMamba2LM can be exported")
        raise QMambaInputError(f"export: got a {kind}; {hint}")
    model.config.validate()
    model.validate()


def _mixer(b: L.GraphBuilder, res: str, i: int, block, decode: bool) -> str:
    """One QuantBlock on the fp32 residual ``res``; returns the new residual."""
    m = block.mixer
    p = f"layers.{i}.mixer"
    names = state_names(i)
    normed = L.rms_norm(b, res, f"layers.{i}.norm", block.norm)
    v = L.quant_linear(b, normed, f"{p}.in_proj", m.in_proj, out=f"{p}.in_proj.out")
    split = b.initializer(f"{p}.in_proj.split", np.array(m.in_proj_split_sizes(), np.int64))
    seg = [f"{p}.in_proj.{s}" for s in ("z", "x", "B", "C", "dt")]
    b.op("Split", v, split, outputs=seg, axis=-1)
    scales = {k: b.initializer(f"{p}.{k}_scale", L._np(getattr(m, f"{k}_scale")))
              for k in ("z", "x", "B", "C", "dt")}
    z_q = L.quantize(b, seg[0], scales["z"], out=f"{p}.z_q")
    xBC_q = b.op("Concat", *[L.quantize(b, s, scales[k]) for s, k in zip(seg[1:4], "xBC")],
                 axis=-1, out=f"{p}.xBC_q")
    dt_q = L.quantize(b, seg[4], scales["dt"], out=f"{p}.dt_q")

    conv_t = {k: b.initializer(f"{p}.{_buffer_name(k)}", L._np(t))
              for k, t in m.conv_op_tensors().items()}
    for k in ("weight", "bias"):
        pass_nodes, conv_t[k] = onnx_ops.constant_int8_input(conv_t[k])
        for node in pass_nodes:
            b.add_node(node)
    conv_in = [xBC_q, *(conv_t[n] for n in onnx_ops.OPS["QuantConv1dSiLU"].input_names()[1:8])]
    conv_out = [f"{p}.conv.x", f"{p}.conv.B", f"{p}.conv.C", names["conv_state_out"]]
    if decode:
        conv_in.append(names["conv_state"])
    b.add_node(onnx_ops.make_node("QuantConv1dSiLU", conv_in, conv_out, f"{p}.conv",
                                  **m.conv_op_attributes()))

    ssd_t = {k: b.initializer(f"{p}.{_buffer_name(k)}", L._np(t))
             for k, t in m.ssd_op_tensors().items()}
    ssd_in = [conv_out[0], dt_q, conv_out[1], conv_out[2],
              *(ssd_t[n] for n in onnx_ops.OPS["QuantSSD"].input_names()[4:13])]
    if decode:
        ssd_in.append(names["ssm_state"])
    y = f"{p}.ssd.y"
    b.add_node(onnx_ops.make_node("QuantSSD", ssd_in, [y, names["ssm_state_out"]], f"{p}.ssd",
                                  **m.ssd_op_attributes(out_dtype=TensorProto.FLOAT)))

    z = L.dequantize(b, z_q, scales["z"])
    g = L.gated_rms_norm(b, y, z, f"{p}.norm", m.norm)
    if m.hadamard:
        g = L.hadamard(b, g, m.d_ssm)
    out = L.quant_linear(b, g, f"{p}.out_proj", m.out_proj)
    return b.op("Add", res, out, out=f"layers.{i}.residual")


def _buffer_name(op_input: str) -> str:
    """The mixer buffer behind an op input (docs/ops.md names the conv weight/bias shorter)."""
    return {"weight": "conv_weight", "bias": "conv_bias"}.get(op_input, op_input)


def build_graph(model, kind: str, functions: bool = True) -> onnx.ModelProto:
    """The prefill or decode graph of a QuantMamba2LM (see the module docstring)."""
    if kind not in GRAPHS:
        raise ValueError(f"export: graph kind must be one of {GRAPHS}, got {kind!r}")
    check_exportable(model)
    cfg = model.config
    decode = kind == "decode"
    b = L.GraphBuilder()
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                             ["batch", "seq", cfg.vocab_size])]
    conv_shape = ["batch", cfg.d_conv - 1, cfg.conv_dim]
    ssm_shape = ["batch", cfg.nheads, cfg.headdim, cfg.d_state]
    for i in range(cfg.n_layer):
        n = state_names(i)
        if decode:
            inputs += [helper.make_tensor_value_info(n["conv_state"], TensorProto.INT8, conv_shape),
                       helper.make_tensor_value_info(n["ssm_state"], TensorProto.INT8, ssm_shape)]
        outputs += [helper.make_tensor_value_info(n["conv_state_out"], TensorProto.INT8, conv_shape),
                    helper.make_tensor_value_info(n["ssm_state_out"], TensorProto.INT8, ssm_shape)]

    # Types and shapes of the custom nodes' outputs: a registered OpSchema has no inference
    # function, so without these the checker would not know the type of what follows them.
    value_info = []
    gn = cfg.ngroups * cfg.d_state
    for i in range(cfg.n_layer):
        p = f"layers.{i}.mixer"
        value_info += [
            helper.make_tensor_value_info(f"{p}.conv.x", TensorProto.INT8, ["batch", "seq", cfg.d_ssm]),
            helper.make_tensor_value_info(f"{p}.conv.B", TensorProto.INT8, ["batch", "seq", gn]),
            helper.make_tensor_value_info(f"{p}.conv.C", TensorProto.INT8, ["batch", "seq", gn]),
            helper.make_tensor_value_info(f"{p}.ssd.y", TensorProto.FLOAT, ["batch", "seq", cfg.d_ssm])]

    for t in onnx_ops.shared_initializers():
        b.initializer(t.name, onnx.numpy_helper.to_array(t))
    res = L.embedding(b, "input_ids", "embedding", model.embedding)
    for i, block in enumerate(model.layers):
        res = _mixer(b, res, i, block, decode)
    normed = L.rms_norm(b, res, "norm_f", model.norm_f)
    logits = L.quant_linear(b, normed, "lm_head", model.lm_head, out="lm_head.out")
    L.flag_bad_token_ids(b, logits, "input_ids", cfg.vocab_size, out="logits")

    graph = helper.make_graph(b.nodes, f"qmamba_{kind}", inputs, outputs, value_info=value_info)
    fns = [onnx_ops.make_function(op, with_state=decode) for op in onnx_ops.OPS] if functions else []
    model_proto = onnx_ops.make_model(graph, fns)  # copies the graph: the weights go in after
    b.add_initializers_to(model_proto.graph)
    model_proto.doc_string = f"qmamba {kind} graph of a W8A8 Mamba2 ({cfg.n_layer} layers)"
    return model_proto


def _initializer_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the graph's weights (raw or in typed fields, as rewrites may leave them)."""
    return sum(len(t.raw_data) if t.HasField("raw_data") else onnx.numpy_helper.to_array(t).nbytes
               for t in model.graph.initializer)


def save_graph(model: onnx.ModelProto, path: Path, external_data: str = "auto") -> bool:
    """Saves ``model``; tensors go to ``<file>.data`` when asked or when too large for protobuf.
    Returns whether external data was written."""
    if external_data not in EXTERNAL_DATA_MODES:
        raise ValueError(f"export: external_data must be one of {EXTERNAL_DATA_MODES}")
    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()
    external = external_data == "always" or (
        external_data == "auto" and _initializer_bytes(model) > EXTERNAL_DATA_THRESHOLD)
    if external_data == "never" and _initializer_bytes(model) > EXTERNAL_DATA_THRESHOLD:
        raise ValueError(f"export: {path.name} holds {_initializer_bytes(model)} bytes of weights, "
                         f"more than protobuf's 2 GiB; use external data")
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
    else:
        onnx.save_model(model, str(path))
    return external


def _json_value(v):
    return "inf" if isinstance(v, float) and math.isinf(v) else v


def metadata(model, functions: bool, external: dict[str, bool]) -> dict:
    cfg = model.config
    states = []
    for i in range(cfg.n_layer):
        n = state_names(i)
        states.append({
            "layer": i,
            "conv_state": {"input": n["conv_state"], "output": n["conv_state_out"], "dtype": "int8",
                           "shape": ["batch", cfg.d_conv - 1, cfg.conv_dim]},
            "ssm_state": {"input": n["ssm_state"], "output": n["ssm_state_out"], "dtype": "int8",
                          "shape": ["batch", cfg.nheads, cfg.headdim, cfg.d_state]},
        })
    state_in = [s[k]["input"] for s in states for k in ("conv_state", "ssm_state")]
    state_out = [s[k]["output"] for s in states for k in ("conv_state", "ssm_state")]
    return {
        "format": ONNX_FORMAT, "version": 1,
        "onnx_opset": onnx_ops.ONNX_OPSET, "custom_domain": onnx_ops.DOMAIN,
        "functions": functions,
        "config": {k: _json_value(v) for k, v in cfg.to_dict().items()},
        "graphs": {
            "prefill": {"file": "prefill.onnx", "external_data": external["prefill"],
                        "inputs": ["input_ids"], "outputs": ["logits", *state_out]},
            "decode": {"file": "decode.onnx", "external_data": external["decode"],
                       "inputs": ["input_ids", *state_in], "outputs": ["logits", *state_out]},
        },
        "states": states,
    }


def export_onnx(model, out_dir, *, force: bool = False, functions: bool = True,
                external_data: str = "auto", check: bool = True, tokenizer=None) -> dict:
    """Writes prefill.onnx, decode.onnx and qmamba_onnx.json into ``out_dir``; returns the json.
    ``tokenizer`` (``qmamba.tokenizer.Tokenizer``) is carried into ``out_dir`` and recorded.

    Refuses an existing, non-empty ``out_dir`` unless ``force`` (then the folder is replaced once
    the new export is complete: ``qmamba.output_dir.atomic_output_dir``).
    ``check`` runs ``onnx.checker.check_model(full_check=True)`` on both written graphs.
    """
    check_exportable(model)
    with atomic_output_dir(out_dir, force=force) as out:
        external = {}
        for kind in GRAPHS:
            proto = build_graph(model, kind, functions)
            path = out / f"{kind}.onnx"
            external[kind] = save_graph(proto, path, external_data)
            del proto  # one graph's weights in memory at a time
            if check:
                onnx_ops.register_schemas()
                onnx.checker.check_model(str(path), full_check=True)
        meta = metadata(model, functions, external)
        if tokenizer is not None:
            from qmamba.tokenizer import carry_tokenizer, tokenizer_record

            carry_tokenizer(tokenizer, out)
            meta["tokenizer"] = tokenizer_record(tokenizer)
        write_onnx_metadata(out, meta)
    return meta


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="qmamba or Quamba2 W8A8 checkpoint directory or hub id")
    parser.add_argument("-o", "--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--tokenizer", metavar="DIR_OR_ID", default=None,
                        help="tokenizer to carry into DIR when MODEL's folder holds none")
    parser.add_argument("--force", action="store_true", help="replace an existing output directory")
    parser.add_argument("--no-functions", action="store_true",
                        help="write no function bodies (for runtimes that only use the plugins)")
    parser.add_argument("--external-data", choices=EXTERNAL_DATA_MODES, default="auto",
                        help="store weights in <graph>.onnx.data (auto: when over 2 GiB)")


def run(args) -> int:
    from qmamba.output_dir import check_output_dir
    from qmamba.tokenizer import ByteTokenizer, find_tokenizer, has_tokenizer

    from .model_source import identify, load_w8a8

    source = identify(args.model)
    check_output_dir(args.out, force=args.force, inputs=[source.path])  # before the model is loaded
    model = load_w8a8(source, "export")
    tok = None
    if args.tokenizer or has_tokenizer(source.path) or model.config.vocab_size == ByteTokenizer.vocab_size:
        tok = find_tokenizer(source.path, args.tokenizer, vocab_size=model.config.vocab_size)
    else:  # the graphs need none; generate and eval will ask for --tokenizer
        print(f"note: {source.spec} holds no tokenizer and none was given (--tokenizer): none carried")
    meta = export_onnx(model, args.out, force=args.force, functions=not args.no_functions,
                       external_data=args.external_data, tokenizer=tok)
    for kind, g in meta["graphs"].items():
        size = os.path.getsize(Path(args.out) / g["file"])
        print(f"{kind}: {Path(args.out) / g['file']} ({size / 1e6:.1f} MB"
              f"{', external data' if g['external_data'] else ''}), "
              f"{len(g['inputs'])} inputs, {len(g['outputs'])} outputs")
    if tok is not None:
        print(f"tokenizer: {tok.name} ({tok.vocab_size} tokens)")
    print(f"wrote {Path(args.out) / ONNX_METADATA}")
    return 0
