"""``qmamba check MODEL DIR``: the PyTorch reference and ONNX Runtime on the same real text.

The PyTorch reference is the model with the sequential twins of docs/ops.md
(``runtime/reference.py`` says why not the chunked SSD). Prefill of a real-text prompt, one decode
step from the same states on both sides, then greedy generation. One row per tensor; the command
returns 1 if a gating bar is missed:

1. Every custom node, op by op (gating): the node's inputs as ONNX Runtime computed them are fed
   to the reference twin. int8 outputs (x, B, C, conv_state_out, ssm_state_out: these rows are
   every state of the model): equal except at rounding ties, <= 1 LSB on <= 0.1 % of the
   elements. y: relative L2 error <= 2e-5 (chunked body vs sequential reference, see
   tests/export/test_onnx_ops.py).
2. Logits with the custom ops' outputs shared (gating): the reference runs with ONNX Runtime's
   x, B, C and y, so the rest of the graph (embedding, norms, W8A8 linears, gating, Hadamard) is
   compared on identical inputs. The ONNX graph computes the reference's integer accumulations
   exactly and the same fp32 operations, so the bound is fp32 reordering only: 1e-5.
3. Logits, free running (gating): a tie that flips in an op (allowed by 1.) moves everything
   downstream of it, and a trained model carries that through its states. Measured worst case on
   the shipped 8-layer byte model (256-token prefill, one conv output flipped at an exp() ulp in
   layer 1): 9.8e-3; without a flip the logits are bit-identical. Bound: 5e-2.
4. States, free running: reported for information (their own agreement is row group 1); after a
   flip they differ in many elements by 1-2 LSB in deeper layers, as in (3).
5. Greedy generation of 32 tokens (gating): identical.
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
from .reference import reference_forward, reference_greedy

SSD_Y_REL_BOUND = 2e-5
SHARED_OPS_LOGITS_REL_BOUND = 1e-5
LOGITS_REL_BOUND = 5e-2
GREEDY_TOKENS = 32


def for_information(a: Agreement) -> Agreement:
    """A row that is shown but does not gate."""
    return Agreement(a.name, a.kind, a.max_abs, a.fraction, True, "(information)")


def _reference_op(node: onnx.NodeProto, inputs: list, attrs: dict):
    t = [None if v is None else torch.from_numpy(np.array(v)) for v in inputs]
    if node.op_type == "QuantConv1dSiLU":
        return ops.quant_conv1d_silu_ref(*t, **attrs)
    return ops.quant_ssd_ref(*t, **attrs)


def op_level_rows(path: Path, feed: dict[str, np.ndarray], label: str):
    """Every qmamba node of ``path``, run by ONNX Runtime on ``feed``, vs its reference twin.
    Returns (rows, ``{layer: {"x", "B", "C", "y"}}`` as ONNX Runtime computed them)."""
    model = onnx.load(str(path))
    consts = GraphConstants(model, str(path.parent))
    nodes = [n for n in model.graph.node if n.domain == onnx_ops.DOMAIN]
    wanted = sorted({t for n in nodes for t in [*n.input, *n.output]
                     if t and consts.constant(t) is None and t not in feed})
    session = make_session(path, extra_outputs=wanted)
    values = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
    values.update(feed)
    rows = []
    # The k-th QuantConv1dSiLU and the k-th QuantSSD belong to layer k (the exporter's order).
    outputs: dict[int, dict[str, torch.Tensor]] = {}
    seen = {op: 0 for op in onnx_ops.OPS}
    for node in nodes:
        where = f"{label} {node.name}"
        layer = outputs.setdefault(seen[node.op_type], {})
        seen[node.op_type] += 1
        for spec, out in zip(onnx_ops.OPS[node.op_type].outputs, node.output):
            if spec.name in ("x", "B", "C", "y"):
                layer[spec.name] = torch.from_numpy(np.array(values[out]))
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
    return rows, outputs


def end_to_end_rows(label: str, logits, states, ref_logits, ref_states, shared_logits):
    rows = [float_agreement(f"{label} logits, op outputs shared", logits, shared_logits.numpy(),
                            SHARED_OPS_LOGITS_REL_BOUND),
            float_agreement(f"{label} logits, free running", logits, ref_logits.numpy(),
                            LOGITS_REL_BOUND)]
    for i, ((c, s), (rc, rs)) in enumerate(zip(states, ref_states)):
        rows.append(for_information(int8_agreement(f"{label} layer {i} conv_state", c, rc.numpy())))
        rows.append(for_information(int8_agreement(f"{label} layer {i} ssm_state", s, rs.numpy())))
    return rows


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
    rows, op_outputs = op_level_rows(ort_model.paths["prefill"], {"input_ids": prompt}, "prefill")
    logits, states = ort_model.prefill(prompt)
    ids = torch.from_numpy(prompt)
    ref_logits, ref_states = reference_forward(model, ids)
    shared_logits, _ = reference_forward(model, ids, forced=op_outputs)
    rows += end_to_end_rows("prefill", logits, states, ref_logits, ref_states, shared_logits)

    # Decode from the same states on both sides, so the step itself is compared.
    feed = {"input_ids": nxt}
    for s, (c, m) in zip(ort_model.states_meta, states):
        feed[s["conv_state"]["input"]], feed[s["ssm_state"]["input"]] = c, m
    step_rows, op_outputs = op_level_rows(ort_model.paths["decode"], feed, "decode")
    rows += step_rows
    d_logits, d_states = ort_model.decode(nxt, states)
    t_states = [(torch.from_numpy(c), torch.from_numpy(m)) for c, m in states]
    ids = torch.from_numpy(nxt)
    r_logits, r_states = reference_forward(model, ids, t_states)
    shared_logits, _ = reference_forward(model, ids, t_states, forced=op_outputs)
    rows += end_to_end_rows("decode", d_logits, d_states, r_logits, r_states, shared_logits)

    ref_tokens = reference_greedy(model, torch.from_numpy(prompt), greedy_tokens).numpy()
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
