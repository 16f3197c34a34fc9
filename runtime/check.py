"""``qmamba check MODEL DIR``: the PyTorch reference and ONNX Runtime on the same real text.

The PyTorch reference is the model with the sequential twins of docs/ops.md
(``runtime/reference.py`` says why not the chunked SSD). Prefill of a real-text prompt, one decode
step from the same states on both sides, then greedy generation. One row per tensor; the command
returns 1 if a gating bar is missed.

Every piece of the graph is judged on its own, fed the inputs ONNX Runtime gave it, so that a
rounding tie that flips somewhere (allowed) does not hide or fake an error elsewhere:

1. Every custom node (gating): its inputs as ONNX Runtime computed them go to the reference twin.
   int8 outputs (x, B, C, conv_state_out, ssm_state_out: the last two are every state of the
   model): equal except at rounding ties, <= 1 LSB on <= 0.1 % of the elements. y: relative L2
   error <= 2e-5 (chunked body vs sequential reference, see tests/export/test_onnx_ops.py).
2. The standard parts (gating), each from ONNX Runtime's own inputs: embedding; per layer the
   norm and its quantization, in_proj and the segment quantizations, gated norm (+ Hadamard) and
   the out_proj input quantization, out_proj and the residual; norm_f, lm_head. int8 tensors: the
   same tie budget (a norm sums in another order than torch). Float tensors made from identical
   int8 inputs by the same fp32 operations (the graph reproduces the exact integer accumulations
   of the reference): relative error <= 1e-6.
3. Logits, free running (gating): each flipped tie moves everything downstream of it, and a
   trained model carries that through its states. Measured on the shipped 8-layer byte models
   (256-token prefills): bit-identical logits without a flip; 6.2e-3 and 9.8e-3 with one or two
   flips in early layers. Bound: 5e-2.
4. States, free running: for information (their own agreement is row group 1); after a flip
   they differ in many elements by 1-2 LSB in deeper layers.
5. Greedy generation of 32 tokens (gating): identical. When it is not, the command says at
   which token and by what logit margin each side chose: a near tie reached through flipped
   rounding ties (allowed above) shows as a margin of a few hundredths of a logit.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from qmamba.errors import BadInputError
from qmamba.export import onnx_ops, ops
from qmamba.export.model_source import identify, load_w8a8
from qmamba.tokenizer import ByteTokenizer, Tokenizer, find_tokenizer
from .agreement import Agreement, float_agreement, int8_agreement
from .onnx_validate import GraphConstants, node_attributes, validate_onnx_model
from .ort import OrtModel, make_session
from .reference import reference_forward, reference_greedy

SSD_Y_REL_BOUND = 2e-5
EXACT_REL_BOUND = 1e-6
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


def _standard_tensors(n_layer: int) -> list[str]:
    """Names the exporter gives the tensors between the standard parts of each layer."""
    names = ["embedding.out", "lm_head.input_q"]
    for i in range(n_layer):
        p = f"layers.{i}.mixer"
        names += [f"{p}.in_proj.input_q", f"{p}.z_q", f"{p}.xBC_q", f"{p}.dt_q",
                  f"{p}.out_proj.input_q", f"layers.{i}.residual"]
    return names


def graph_values(path: Path, feed: dict[str, np.ndarray], n_layer: int) -> dict[str, np.ndarray]:
    """Every tensor ``check`` compares, as ONNX Runtime computes it on ``feed``."""
    model = onnx.load(str(path))
    consts = GraphConstants(model, str(path.parent))
    custom = [n for n in model.graph.node if n.domain == onnx_ops.DOMAIN]
    wanted = {t for n in custom for t in [*n.input, *n.output]
              if t and consts.constant(t) is None and t not in feed}
    wanted |= set(_standard_tensors(n_layer))
    session = make_session(path, extra_outputs=sorted(wanted))
    values = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
    return {**values, **feed}


def op_level_rows(path: Path, values: dict[str, np.ndarray], label: str) -> list[Agreement]:
    """Every qmamba node of ``path`` vs its reference twin, fed the node's ONNX Runtime inputs."""
    model = onnx.load(str(path))
    consts = GraphConstants(model, str(path.parent))
    rows = []
    for node in (n for n in model.graph.node if n.domain == onnx_ops.DOMAIN):
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


@torch.no_grad()
def standard_part_rows(model, values: dict[str, np.ndarray], label: str) -> list[Agreement]:
    """The standard parts of the graph, piece by piece, each fed ONNX Runtime's own inputs:
    embedding, per layer the norm + input quantization, in_proj + segment quantization, gated
    norm (+ Hadamard) + out_proj input quantization, out_proj + residual; then norm_f + lm_head.
    int8 tensors: the tie budget (a norm sums in another order); float tensors computed from
    identical int8 inputs by the same operations: relative error <= 1e-6."""
    t = {k: torch.from_numpy(np.array(v)) for k, v in values.items()}
    rows = [float_agreement(f"{label} embedding", values["embedding.out"],
                            model.embedding(t["input_ids"]).numpy(), EXACT_REL_BOUND)]
    res = t["embedding.out"]
    for i, layer in enumerate(model.layers):
        mixer, p = layer.mixer, f"layers.{i}.mixer"
        u_q = t[f"{p}.in_proj.input_q"]
        rows.append(int8_agreement(f"{label} {p}.in_proj.input_q", u_q,
                                   mixer.in_proj.quantize_input(layer.norm(res))))
        for name, ref in zip(("z_q", "xBC_q", "dt_q"), mixer.in_proj_step(u_q)):
            rows.append(int8_agreement(f"{label} {p}.{name}", t[f"{p}.{name}"], ref))
        g = mixer.rotate_step(mixer.gate_norm_step(t[f"{p}.ssd.y"], t[f"{p}.z_q"]))
        g_q = t[f"{p}.out_proj.input_q"]
        rows.append(int8_agreement(f"{label} {p}.out_proj.input_q", g_q,
                                   mixer.out_proj.quantize_input(g)))
        rows.append(float_agreement(f"{label} layers.{i}.residual", t[f"layers.{i}.residual"],
                                    (res + mixer.out_proj(g_q)).numpy(), EXACT_REL_BOUND))
        res = t[f"layers.{i}.residual"]
    lm_in = t["lm_head.input_q"]
    rows.append(int8_agreement(f"{label} lm_head.input_q", lm_in,
                               model.lm_head.quantize_input(model.norm_f(res))))
    rows.append(float_agreement(f"{label} logits, same lm_head input", values["logits"],
                                model.lm_head(lm_in).numpy(), EXACT_REL_BOUND))
    return rows


def end_to_end_rows(label: str, logits, states, ref_logits, ref_states) -> list[Agreement]:
    rows = [float_agreement(f"{label} logits, free running", logits, ref_logits.numpy(),
                            LOGITS_REL_BOUND)]
    for i, ((c, s), (rc, rs)) in enumerate(zip(states, ref_states)):
        rows.append(for_information(int8_agreement(f"{label} layer {i} conv_state", c, rc.numpy())))
        rows.append(for_information(int8_agreement(f"{label} layer {i} ssm_state", s, rs.numpy())))
    return rows


def read_tokens(text_path: Path, offset: int, length: int, tokenizer: Tokenizer | None = None) -> np.ndarray:
    """``length + 1`` token ids of the text from byte ``offset`` on (bytes themselves by default): the
    prompt and the token decoded after it."""
    from qmamba.data import read_text

    if offset < 0:
        raise BadInputError(f"check: --offset must be >= 0, got {offset}")
    if length < 1:
        raise BadInputError(f"check: --length must be >= 1, got {length}")
    data = read_text(text_path, "check", min_bytes=offset + 1)
    return prompt_tokens(data, offset, length, tokenizer, f"check: {text_path}",
                         "pass a longer --text or a smaller --length")


def prompt_tokens(data: bytes, offset: int, length: int, tokenizer: Tokenizer | None, where: str,
                  fix: str = "pass a longer --text") -> np.ndarray:
    """``length + 1`` token ids of ``data`` from byte ``offset`` on; too short a text is refused, the
    message starting with ``where`` (the command and the text) and ending with ``fix``."""
    tokenizer = tokenizer or ByteTokenizer()
    ids = tokenizer.encode_bytes(data[offset:])
    if len(ids) < length + 1:
        unit = "bytes" if isinstance(tokenizer, ByteTokenizer) else "tokens"
        raise BadInputError(f"{where} needs {length + 1} {unit} from byte {offset} on, has "
                            f"{len(ids)}; {fix}")
    return np.asarray(ids[:length + 1], dtype=np.int64)


@dataclass
class GreedyResult:
    """Both greedy continuations and the logits each token was chosen from."""
    reference: np.ndarray
    onnxrt: np.ndarray
    reference_logits: np.ndarray
    onnxrt_logits: np.ndarray

    @property
    def identical(self) -> bool:
        return bool((self.reference == self.onnxrt).all())

    def first_difference(self) -> str:
        """Where the two continuations part, and by what logit margin each side chose."""
        k = int(np.argmax(self.reference != self.onnxrt))
        r, o = int(self.reference[k]), int(self.onnxrt[k])
        ref_margin = self.reference_logits[k, r] - self.reference_logits[k, o]
        ort_margin = self.onnxrt_logits[k, o] - self.onnxrt_logits[k, r]
        return (f"token {k}: reference chose {r} over {o} by {ref_margin:.3g} logits, onnxrt chose "
                f"{o} over {r} by {ort_margin:.3g} (logits differ by "
                f"{np.abs(self.reference_logits[k] - self.onnxrt_logits[k]).max():.3g} at most there)")


def check(model, onnx_dir, tokens: np.ndarray, greedy_tokens: int = GREEDY_TOKENS):
    """Runs every comparison; returns (rows, greedy identical, reference tokens ``[1, n]``,
    ONNX Runtime tokens ``[1, n]``). ``check_report`` gives the greedy logits as well."""
    rows, greedy = check_report(model, onnx_dir, tokens, greedy_tokens)
    return rows, greedy.identical, greedy.reference[None], greedy.onnxrt[None]


def check_report(model, onnx_dir, tokens: np.ndarray, greedy_tokens: int = GREEDY_TOKENS):
    """Runs every comparison; returns (rows, GreedyResult)."""
    for kind in ("prefill", "decode"):
        validate_onnx_model(Path(onnx_dir) / f"{kind}.onnx")
    ort_model = OrtModel(onnx_dir, validate=False)
    cfg = model.config
    if ort_model.config["vocab_size"] != cfg.vocab_size or ort_model.config["n_layer"] != cfg.n_layer:
        raise ValueError(f"check: {onnx_dir} was not exported from this model (config differs)")
    prompt, nxt = tokens[None, :-1], tokens[None, -1:]
    n_layer = cfg.n_layer

    def graph_rows(kind: str, feed: dict[str, np.ndarray]) -> list[Agreement]:
        values = graph_values(ort_model.paths[kind], feed, n_layer)
        return (op_level_rows(ort_model.paths[kind], values, kind)
                + standard_part_rows(model, values, kind))

    rows = graph_rows("prefill", {"input_ids": prompt})
    logits, states = ort_model.prefill(prompt)
    ref_logits, ref_states = reference_forward(model, torch.from_numpy(prompt))
    rows += end_to_end_rows("prefill", logits, states, ref_logits, ref_states)

    # Decode from the same states on both sides, so the step itself is compared.
    feed = {"input_ids": nxt}
    for s, (c, m) in zip(ort_model.states_meta, states):
        feed[s["conv_state"]["input"]], feed[s["ssm_state"]["input"]] = c, m
    rows += graph_rows("decode", feed)
    d_logits, d_states = ort_model.decode(nxt, states)
    t_states = [(torch.from_numpy(c), torch.from_numpy(m)) for c, m in states]
    r_logits, r_states = reference_forward(model, torch.from_numpy(nxt), t_states)
    rows += end_to_end_rows("decode", d_logits, d_states, r_logits, r_states)

    ref_tokens, ref_logits = reference_greedy(model, torch.from_numpy(prompt), greedy_tokens)
    ort_tokens, ort_logits = ort_model.generate(prompt, greedy_tokens, return_logits=True)
    greedy = GreedyResult(ref_tokens.numpy()[0], ort_tokens[0], ref_logits.numpy()[0], ort_logits[0])
    return rows, greedy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="qmamba or Quamba2 W8A8 checkpoint directory")
    parser.add_argument("onnx_dir", metavar="DIR", help="`qmamba export` output directory")
    parser.add_argument("--text", default=None,
                        help="text file (default: wikitext-2 validation text, qmamba.data)")
    parser.add_argument("--offset", type=int, default=4096, help="first byte of the prompt")
    parser.add_argument("--length", type=int, default=256, help="prompt length in tokens")
    parser.add_argument("--tokenizer", metavar="DIR_OR_ID", default=None,
                        help="tokenizer when MODEL's directory holds none and its vocabulary is not bytes")
    parser.add_argument("--new-tokens", type=int, default=GREEDY_TOKENS)


def run(args) -> int:
    from qmamba.data import text_file

    text = Path(args.text) if args.text else text_file("wikitext-2/valid.txt")
    src = identify(args.model)
    tok = find_tokenizer(src.path, args.tokenizer)
    tokens = read_tokens(text, args.offset, args.length, tok)
    model = load_w8a8(src, "check")
    rows, greedy = check_report(model, args.onnx_dir, tokens, args.new_tokens)
    print(f"PyTorch reference vs ONNX Runtime on {text}, {args.length} tokens from byte {args.offset} "
          f"+ 1 decode step")
    print(f"{'tensor':<42} {'kind':<6} {'max|diff|':<10} {'mismatch':<18} {'bar':<18} status")
    for r in rows:
        print(r.row())
    print(f"greedy {args.new_tokens} tokens: {'identical' if greedy.identical else 'DIFFER'}")
    print(f"  reference: {tok.decode(greedy.reference.tolist())!r}")
    if not greedy.identical:
        print(f"  onnxrt:    {tok.decode(greedy.onnxrt.tolist())!r}")
        print(f"  first difference at {greedy.first_difference()}")
    failed = [r.name for r in rows if not r.ok]
    print(f"{len(rows) - len(failed)}/{len(rows)} tensors within their bars"
          + ("" if not failed else f"; failed: {', '.join(failed)}"))
    return 0 if greedy.identical and not failed else 1
