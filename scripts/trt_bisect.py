"""Where a TensorRT engine and ONNX Runtime part ways: marks the float intermediate tensors of a graph
as outputs, builds the engine with them (as `qmamba build` would: runtime.build.trt_graph) and prints,
in graph order, how far each tensor of the engine is from ONNX Runtime's, per batch row.

The inputs come from a real run of the device tests' small models (tests/runtime/trt_helpers.py):
the prefill of the model test's two prompts, then decode steps from the engine's own states; the
first graph run (prefill or decode step) whose logits disagree is the one bisected.

    python scripts/trt_bisect.py --model g1 [--steps 3] [--only REGEX] --out OUT
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import onnx

from qmamba.runtime import trt_runner
from qmamba.runtime.agreement import float_agreement, int8_agreement
from qmamba.runtime.build import build_engines, tensorrt_major, trt_graph

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "runtime"))
from trt_helpers import export_small_model, ort_run, ort_session, state_pairs, two_prompts  # noqa: E402

LOGITS_BOUND = 1e-2  # the model test's


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """Relative L2 error ||a - b|| / ||b||."""
    return float_agreement("", a, b, LOGITS_BOUND).fraction


def float_intermediates(model: onnx.ModelProto, only: str | None) -> list[str]:
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
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for name in names:
        m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return m


def bisect(onnx_path: Path, feed: dict, batch: int, seq: int, work: Path, only: str | None) -> None:
    model = onnx.load(str(onnx_path))
    names = float_intermediates(model, only)
    print(f"{onnx_path.name}: {len(names)} float intermediates marked")
    m = marked(model, names)
    ref_path, trt_path = work / f"{onnx_path.stem}.marked.onnx", work / f"{onnx_path.stem}.marked.trt.onnx"
    onnx.save(m, str(ref_path))
    onnx.save(trt_graph(m, tensorrt_major()), str(trt_path))
    profile = trt_runner.Profile(batch=(1, batch, batch), seq=(1, seq, max(seq, 1)))
    engine = trt_runner.build_engine(trt_path, work / f"{onnx_path.stem}.marked.engine", profile,
                                     no_tactic_libraries=True)
    got = trt_runner.TrtEngine(engine).infer(feed)
    want = ort_run(ort_session(ref_path), feed)
    first = None
    for name in names + [o.name for o in model.graph.output]:
        a, b = got[name], want[name]
        if a.dtype == np.int8 or b.dtype == np.int8:
            per_row = [int(int8_agreement(name, a[i], b[i]).max_abs) for i in range(a.shape[0])]
            line = f"{name:<60} int8  max LSB per row {per_row} differ {int8_agreement(name, a, b).fraction:.4%}"
        else:
            per_row = [rel(a[i], b[i]) for i in range(a.shape[0])] if a.ndim and a.shape[0] == batch else [rel(a, b)]
            line = f"{name:<60} float rel per row " + " ".join(f"{r:.2e}" for r in per_row) + \
                f"  max|ref| {float(np.abs(b).max()):.3g}"
            if first is None and max(per_row) > 1e-4:
                first = name
        print(line)
    print(f"first float tensor off by > 1e-4 relative: {first}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="g1", choices=["g1", "g8"])
    ap.add_argument("--steps", type=int, default=3, help="decode steps to try")
    ap.add_argument("--only", help="mark only intermediates whose name matches this regular expression")
    ap.add_argument("--out", default="out")
    args = ap.parse_args()
    work = Path("/tmp/qmamba_bisect") / args.model
    work.mkdir(parents=True, exist_ok=True)
    onnx_dir = export_small_model(work / "onnx", args.model)
    build_engines(onnx_dir, work / "engines", batch=(1, 1, 2), seq=(1, 64, 128), no_tactic_libraries=True,
                  backend="cpp", force=True)
    meta = json.loads((onnx_dir / "qmamba_onnx.json").read_text())
    states = list(state_pairs(meta))
    session = trt_runner.TrtSession(work / "engines", max_batch=2)
    ids = two_prompts()

    logits = session.prefill(ids)
    ref = ort_run(ort_session(onnx_dir / "prefill.onnx"), {"input_ids": ids})
    r = rel(logits, ref["logits"][:, -1])
    print(f"prefill logits rel {r:.2e}")
    if r > LOGITS_BOUND:
        bisect(onnx_dir / "prefill.onnx", {"input_ids": ids}, 2, ids.shape[1], work, args.only)
        return 0
    shapes = {i: ref[o].shape for i, o in states}
    decode = ort_session(onnx_dir / "decode.onnx")
    for step in range(args.steps):
        tok = logits.argmax(-1)
        feed = {"input_ids": tok[:, None].astype(np.int64),
                **{i: session.read_state(i, shapes[i]) for i, _ in states}}
        logits = session.decode(tok, use_graph=False)
        r = rel(logits, ort_run(decode, feed)["logits"][:, -1])
        print(f"decode {step} logits rel {r:.2e} (tokens {tok.tolist()})")
        if r > LOGITS_BOUND:
            np.savez(Path(args.out) / f"bisect_{args.model}_decode{step}_feed.npz", **feed)
            bisect(onnx_dir / "decode.onnx", feed, 2, 1, work, args.only)
            return 0
    print("no disagreement found")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
