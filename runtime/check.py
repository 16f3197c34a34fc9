"""``qmamba check MODEL DIR``: the PyTorch reference and ONNX Runtime on the same real text.

Prints one agreement row per tensor and returns 1 if any bar is missed:

- every custom node's outputs, op by op: the node's inputs as ONNX Runtime computed them are fed
  to the reference twin (``quant_conv1d_silu_ref`` / ``quant_ssd_ref``), so each op is judged on
  its own. int8 outputs (x, B, C, both states): equal except at rounding ties, <= 1 LSB on
  <= 0.1 % of the elements. y: relative L2 error <= 2e-5 (the chunked body vs the sequential
  reference; see tests/export/test_onnx_ops.py).
- end to end, prefill then one decode step, the whole PyTorch model vs the whole ONNX model:
  logits by relative L2 error, states by their share of 1-LSB differences (bounds below).
- greedy generation of 32 tokens: identical.

Why the end-to-end bounds are looser than the per-op ones: each rounding tie that flips (allowed
above: up to 0.1 % of a tensor, by 1 LSB) moves everything downstream of it, through the following
layers. A 1-LSB change of an int8 activation is 1/127 of its range; with up to 0.1 % of the
elements changed the relative L2 change of that tensor is at most about sqrt(1e-3) / 127 ~ 2.5e-4
of its range, i.e. ~1e-3 of its norm for activations that use a quarter of their range. Summing
such changes over a few quantization points per layer and a few layers gives ~1e-2: that is
LOGITS_REL_BOUND. States downstream of a flipped input may in turn flip at ties of their own:
they are allowed 1 LSB on up to 1 % of their elements (10x the per-op budget).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
import torch

from qmamba.export import onnx_ops, ops
from qmamba.export.onnx_export import load_model_arg
from .agreement import Agreement, float_agreement, int8_agreement
from .onnx_validate import GraphConstants, node_attributes, validate_onnx_model
from .ort import OrtModel, make_session

SSD_Y_REL_BOUND = 2e-5
LOGITS_REL_BOUND = 1e-2
STATE_MAX_FRACTION = 1e-2
GREEDY_TOKENS = 32


def propagated_int8_agreement(name: str, a, b) -> Agreement:
    """States end to end: <= 1 LSB on <= 1 % (ties downstream of upstream ties, see above)."""
    base = int8_agreement(name, a, b)
    ok = base.max_abs <= 1 and base.fraction <= STATE_MAX_FRACTION
    return Agreement(name, "int8", base.max_abs, base.fraction, ok, "<=1 LSB on <=1%")


def _reference_op(node: onnx.NodeProto, inputs: list, attrs: dict):
    t = [None if v is None else torch.from_numpy(np.array(v)) for v in inputs]
    if node.op_type == "QuantConv1dSiLU":
        return ops.quant_conv1d_silu_ref(*t, **attrs)
    return ops.quant_ssd_ref(*t, **attrs)


def op_level_rows(path: Path, feed: dict[str, np.ndarray], label: str) -> list[Agreement]:
    """Every qmamba node of ``path``, run by ONNX Runtime on ``feed``, vs its reference twin."""
    model = onnx.load(str(path))
    consts = GraphConstants(model, str(path.parent))
    nodes = [n for n in model.graph.node if n.domain == onnx_ops.DOMAIN]
    wanted = sorted({t for n in nodes for t in [*n.input, *n.output]
                     if t and consts.constant(t) is None and t not in feed})
    session = make_session(path, extra_outputs=wanted)
    values = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
    values.update(feed)
    rows = []
    for node in nodes:
        where = f"{label} {node.name}"
        attrs = node_attributes(node, where)
        n_inputs = len(onnx_ops.OPS[node.op_type].inputs)
        inputs = [consts.constant(t) if consts.constant(t) is not None else values[t]
                  for t in node.input] + [None] * (n_inputs - len(node.input))
        ref = _reference_op(node, inputs, attrs)
        for spec, out, r in zip(onnx_ops.OPS[node.op_type].outputs, node.output, ref):
            r = r.float().numpy() if spec.name == "y" else r.numpy()
            name = f"{where}.{spec.name}"
            rows.append(float_agreement(name, values[out], r, SSD_Y_REL_BOUND) if spec.name == "y"
                        else int8_agreement(name, values[out], r))
    return rows


def end_to_end_rows(label: str, logits, states, ref_logits, ref_states) -> list[Agreement]:
    rows = [float_agreement(f"{label} logits", logits, ref_logits.numpy(), LOGITS_REL_BOUND)]
    for i, ((c, s), (rc, rs)) in enumerate(zip(states, ref_states)):
        rows.append(propagated_int8_agreement(f"{label} layer {i} conv_state", c, rc.numpy()))
        rows.append(propagated_int8_agreement(f"{label} layer {i} ssm_state", s, rs.numpy()))
    return rows


def torch_greedy(model, ids: torch.Tensor, n: int) -> np.ndarray:
    logits, states = model(ids)
    token = logits[:, -1].argmax(-1)
    out = [token]
    for _ in range(n - 1):
        logits, states = model(token[:, None], states)
        token = logits[:, -1].argmax(-1)
        out.append(token)
    return torch.stack(out, 1).numpy()


def read_tokens(text_path: Path, offset: int, length: int) -> np.ndarray:
    data = text_path.read_bytes()
    if len(data) < offset + length + 1:
        raise ValueError(f"{text_path}: needs {offset + length + 1} bytes, has {len(data)}")
    return np.frombuffer(data[offset:offset + length + 1], dtype=np.uint8).astype(np.int64)


def check(model, onnx_dir, tokens: np.ndarray, greedy_tokens: int = GREEDY_TOKENS):
    """Runs every comparison; returns (rows, greedy_ok, reference tokens, ORT tokens)."""
    for kind in ("prefill", "decode"):
        validate_onnx_model(Path(onnx_dir) / f"{kind}.onnx")
    ort_model = OrtModel(onnx_dir, validate=False)
    cfg = model.config
    if ort_model.config["vocab_size"] != cfg.vocab_size or ort_model.config["n_layer"] != cfg.n_layer:
        raise ValueError(f"check: {onnx_dir} was not exported from this model (config differs)")
    prompt, nxt = tokens[None, :-1], tokens[None, -1:]
    rows = op_level_rows(ort_model.paths["prefill"], {"input_ids": prompt}, "prefill")
    logits, states = ort_model.prefill(prompt)
    ref_logits, ref_states = model(torch.from_numpy(prompt))
    rows += end_to_end_rows("prefill", logits, states, ref_logits, ref_states)

    # Decode from the same states on both sides, so the step itself is compared.
    feed = {"input_ids": nxt}
    for s, (c, m) in zip(ort_model.states_meta, states):
        feed[s["conv_state"]["input"]], feed[s["ssm_state"]["input"]] = c, m
    rows += op_level_rows(ort_model.paths["decode"], feed, "decode")
    d_logits, d_states = ort_model.decode(nxt, states)
    t_states = [(torch.from_numpy(c), torch.from_numpy(m)) for c, m in states]
    r_logits, r_states = model(torch.from_numpy(nxt), t_states)
    rows += end_to_end_rows("decode", d_logits, d_states, r_logits, r_states)

    ref_tokens = torch_greedy(model, torch.from_numpy(prompt), greedy_tokens)
    ort_tokens = ort_model.generate(prompt, greedy_tokens)
    return rows, bool((ref_tokens == ort_tokens).all()), ref_tokens, ort_tokens


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="quantized checkpoint directory")
    parser.add_argument("onnx_dir", metavar="DIR", help="`qmamba export` output directory")
    parser.add_argument("--text", default=None,
                        help="text file (default: the shared wikitext-2 validation text)")
    parser.add_argument("--offset", type=int, default=4096, help="first byte of the prompt")
    parser.add_argument("--length", type=int, default=256, help="prompt length in tokens (bytes)")
    parser.add_argument("--new-tokens", type=int, default=GREEDY_TOKENS)


def run(args) -> int:
    from qmamba.export.tiny import data_file

    text = Path(args.text) if args.text else data_file("wikitext-2/valid.txt")
    tokens = read_tokens(text, args.offset, args.length)
    model = load_model_arg(args.model)
    rows, greedy_ok, ref, got = check(model, args.onnx_dir, tokens, args.new_tokens)
    print(f"PyTorch reference vs ONNX Runtime on {text} bytes [{args.offset}, "
          f"{args.offset + args.length}) + 1 decode step")
    print(f"{'tensor':<42} {'kind':<6} {'max|diff|':<10} {'mismatch':<18} {'bar':<18} status")
    for r in rows:
        print(r.row())
    print(f"greedy {args.new_tokens} tokens: {'identical' if greedy_ok else 'DIFFER'}")
    print(f"  reference: {bytes(ref[0].astype(np.uint8))!r}")
    if not greedy_ok:
        print(f"  onnxrt:    {bytes(got[0].astype(np.uint8))!r}")
    failed = [r.name for r in rows if not r.ok]
    print(f"{len(rows) - len(failed)}/{len(rows)} tensors within their bars"
          + ("" if not failed else f"; failed: {', '.join(failed)}"))
    return 0 if greedy_ok and not failed else 1
