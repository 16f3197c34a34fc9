"""``qmamba bisect DIR``: where a TensorRT engine and ONNX Runtime part ways.

Builds engines from a ``qmamba export`` directory (as ``qmamba build`` would), runs a prefill of two
overlapping byte prompts of a text file and then greedy decode steps from the engine's own states,
each against ONNX Runtime on the same inputs. The first graph run (prefill or decode step) whose
logits disagree by more than LOGITS_BOUND is bisected: its float intermediate tensors are marked as
graph outputs, the graph is built again with them (``trt_graph``, the rewrites ``qmamba build``
applies for this TensorRT) and every tensor is printed in graph order with how far the engine's is
from ONNX Runtime's, per batch row; the last line names the first float tensor that is off.
A decode step's inputs are also saved as ``WORK/bisect_decode<step>_feed.npz`` for a rerun.

Needs TensorRT and a CUDA GPU (the runner and plugin libraries of ``qmamba build``).
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import onnx

from qmamba.data import read_text
from qmamba.export.metadata import read_onnx_metadata
from qmamba.export.onnx_export import save_graph
from .agreement import float_agreement, int8_agreement
from .ort import make_session

LOGITS_BOUND = 1e-2      # relative L2 error of the logits that counts as a disagreement
INTERMEDIATE_BOUND = 1e-4  # relative L2 error of a float intermediate that counts as "off"
BATCH = 2                # two prompts: a row-dependent error shows as one row off
PROMPT_SHIFT = 5         # the second prompt starts this many bytes after the first
MAX_PROMPT = 128         # the engines' largest prompt length


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("onnx_dir", metavar="DIR", help="`qmamba export` output directory")
    parser.add_argument("--text", default=None,
                        help="text file the byte prompts come from (default: the shipped wikitext-2 excerpt)")
    parser.add_argument("--offset", type=int, default=0, help="first byte of the first prompt")
    parser.add_argument("--length", type=int, default=40, help=f"prompt length in bytes (1..{MAX_PROMPT})")
    parser.add_argument("--steps", type=int, default=3, help="decode steps to try (default 3)")
    parser.add_argument("--only", metavar="REGEX",
                        help="mark only the intermediates whose name matches this regular expression")
    parser.add_argument("--plugins", metavar="LIB", help="libqmamba_trt_plugins.so (default: the built one)")
    parser.add_argument("--work", default="qmamba_bisect",
                        help="directory for the engines, marked graphs and saved inputs (default ./qmamba_bisect)")
    parser.add_argument("--force", action="store_true", help="replace an existing --work directory")


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """Relative L2 error ||a - b|| / ||b||."""
    return float_agreement("", a, b, LOGITS_BOUND).fraction


def float_intermediates(model: onnx.ModelProto, only: str | None = None) -> list[str]:
    """Float tensors that nodes produce, in graph order (not graph outputs, not constants)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}
    outputs = {o.name for o in model.graph.output}
    names = []
    for n in model.graph.node:
        if n.op_type == "Constant":
            continue
        for o in n.output:
            if o and o not in outputs and types.get(o) == onnx.TensorProto.FLOAT and (only is None or re.search(only, o)):
                names.append(o)
    return names


def marked(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` with ``names`` appended to its graph outputs (float, shape left to inference)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for name in names:
        m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return m


def two_prompts(text_path: Path, offset: int, length: int) -> np.ndarray:
    """int64 [2, length]: bytes [offset, offset + length) of the text and the same shifted by PROMPT_SHIFT."""
    if not 1 <= length <= MAX_PROMPT:
        raise ValueError(f"bisect: --length must be in [1, {MAX_PROMPT}], got {length}")
    if offset < 0:
        raise ValueError(f"bisect: --offset must be >= 0, got {offset}")
    end = offset + PROMPT_SHIFT + length
    data = read_text(text_path, "bisect", min_bytes=end)
    rows = [np.frombuffer(data[s:s + length], np.uint8) for s in (offset, offset + PROMPT_SHIFT)]
    return np.stack(rows).astype(np.int64)


def state_pairs(meta: dict):
    """(decode input, output) names of every state in qmamba_onnx.json's metadata."""
    for s in meta["states"]:
        for k in ("conv_state", "ssm_state"):
            yield s[k]["input"], s[k]["output"]


def ort_run(session, feed: dict) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


def bisect(onnx_path: Path, feed: dict, seq: int, work: Path, only: str | None, plugins=None) -> str | None:
    """Prints every float intermediate of one graph run, engine vs ONNX Runtime; returns the first
    one off by more than INTERMEDIATE_BOUND (None if none is)."""
    from . import trt_runner
    from .build import tensorrt_major, trt_graph

    model = onnx.load(str(onnx_path))
    names = float_intermediates(model, only)
    print(f"{onnx_path.name}: {len(names)} float intermediates marked")
    m = marked(model, names)
    ref_path, trt_path = work / f"{onnx_path.stem}.marked.onnx", work / f"{onnx_path.stem}.marked.trt.onnx"
    save_graph(m, ref_path)  # weights past 2 GiB go beside the graph
    save_graph(trt_graph(m, tensorrt_major()), trt_path)
    profile = trt_runner.Profile(batch=(1, BATCH, BATCH), seq=(1, seq, max(seq, 1)))
    engine = trt_runner.build_engine(trt_path, work / f"{onnx_path.stem}.marked.engine", profile, plugins,
                                     no_tactic_libraries=True)
    got = trt_runner.TrtEngine(engine, plugins).infer(feed)
    want = ort_run(make_session(ref_path), feed)
    first = None
    for name in names + [o.name for o in model.graph.output]:
        a, b = got[name], want[name]
        if a.dtype == np.int8 or b.dtype == np.int8:
            per_row = [int(int8_agreement(name, a[i], b[i]).max_abs) for i in range(a.shape[0])]
            line = f"{name:<60} int8  max LSB per row {per_row} differ {int8_agreement(name, a, b).fraction:.4%}"
        else:
            per_row = [rel(a[i], b[i]) for i in range(a.shape[0])] if a.ndim and a.shape[0] == BATCH else [rel(a, b)]
            line = f"{name:<60} float rel per row " + " ".join(f"{r:.2e}" for r in per_row) + \
                f"  max|ref| {float(np.abs(b).max()):.3g}"
            if first is None and max(per_row) > INTERMEDIATE_BOUND:
                first = name
        print(line)
    print(f"first float tensor off by > {INTERMEDIATE_BOUND:g} relative: {first}")
    return first


def run(args) -> int:
    from qmamba.output_dir import atomic_output_dir

    onnx_dir = Path(args.onnx_dir)
    meta = read_onnx_metadata(onnx_dir)
    if args.text:
        text = Path(args.text)
    else:
        from qmamba.data import text_file

        text = text_file("wikitext-2/valid.txt")
    ids = two_prompts(text, args.offset, args.length)
    with atomic_output_dir(args.work, force=args.force, inputs=[onnx_dir, text]) as work:
        return _bisect_in(work, onnx_dir, meta, ids, args)


def _bisect_in(work: Path, onnx_dir: Path, meta: dict, ids: np.ndarray, args) -> int:
    """Builds the engines into ``work`` and compares them with ONNX Runtime, prefill then decode."""
    from . import trt_runner
    from .build import build_engines

    build_engines(onnx_dir, work / "engines", batch=(1, 1, BATCH), seq=(1, 64, MAX_PROMPT), plugins=args.plugins,
                  no_tactic_libraries=True, backend="cpp")
    states = list(state_pairs(meta))
    session = trt_runner.TrtSession(work / "engines", args.plugins, max_batch=BATCH)

    logits = session.prefill(ids)
    ref = ort_run(make_session(onnx_dir / "prefill.onnx"), {"input_ids": ids})
    r = rel(logits, ref["logits"][:, -1])
    print(f"prefill logits rel {r:.2e}")
    if r > LOGITS_BOUND:
        bisect(onnx_dir / "prefill.onnx", {"input_ids": ids}, ids.shape[1], work, args.only, args.plugins)
        return 1
    shapes = {i: ref[o].shape for i, o in states}
    decode = make_session(onnx_dir / "decode.onnx")
    for step in range(args.steps):
        tok = logits.argmax(-1)
        feed = {"input_ids": tok[:, None].astype(np.int64),
                **{i: session.read_state(i, shapes[i]) for i, _ in states}}
        logits = session.decode(tok, use_graph=False)
        r = rel(logits, ort_run(decode, feed)["logits"][:, -1])
        print(f"decode {step} logits rel {r:.2e} (tokens {tok.tolist()})")
        if r > LOGITS_BOUND:
            np.savez(work / f"bisect_decode{step}_feed.npz", **feed)
            bisect(onnx_dir / "decode.onnx", feed, 1, work, args.only, args.plugins)
            return 1
    print("no disagreement found")
    return 0
