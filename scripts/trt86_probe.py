"""Which graph shapes TensorRT 8.6's explicit-quantization builder accepts around qmamba's plugins.

TensorRT 8.6 refuses some plugin nodes in Q/DQ networks ("All of the candidates were removed, which
points to the node being incorrectly marked as an int8 node"). This builds small variants with the
runner's command line and reports, for each, whether the engine builds and TensorRT's last messages:
  ssd-q-dq      QuantSSD: int8 inputs from QuantizeLinear, ssm_state_out into DequantizeLinear, y float
  ssd-q-int8out QuantSSD: int8 inputs from QuantizeLinear, ssm_state_out an int8 network output
  ssd-params-as-inputs  ssd-q-dq with the float/int32 parameters as network inputs, not constants
  conv-q-dq     QuantConv1dSiLU: int8 inputs from QuantizeLinear, int8 outputs into DequantizeLinear
  model         the tiny g1 prefill graph as exported (explicit zero points added)
  model-sandwich  the same through runtime/build.py's qdq_plugin_edges (what `qmamba build` does)
    python scripts/trt86_probe.py --out OUT
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import onnx
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "runtime"))
from trt_helpers import float_io  # noqa: E402

from qmamba.export import onnx_ops  # noqa: E402
from qmamba.export.onnx_export import export_onnx  # noqa: E402
from qmamba.export.op_cases import LAYER_SHAPES, conv_case, ssd_case  # noqa: E402
from qmamba.export.tiny import tiny_quantized_model  # noqa: E402
from qmamba.runtime import trt_runner  # noqa: E402
from qmamba.runtime.build import explicit_zero_points, qdq_plugin_edges  # noqa: E402



def params_as_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """float32/int32 initializers of the plugin node turned into graph inputs of the same shape."""
    g = model.graph
    plugin_inputs = {i for n in g.node if n.op_type in ("QuantSSD", "QuantConv1dSiLU") for i in n.input}
    keep = []
    for t in g.initializer:
        if t.name in plugin_inputs and t.data_type in (TensorProto.FLOAT, TensorProto.INT32):
            g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            keep.append(t)
    del g.initializer[:]
    g.initializer.extend(keep)
    return model


def drop_output_dq(model: onnx.ModelProto) -> onnx.ModelProto:
    """float_io's model with int8 outputs left int8 (no DequantizeLinear)."""
    g = model.graph
    for vo in g.output:
        dq = next((n for n in g.node if n.op_type == "DequantizeLinear" and n.output[0] == vo.name), None)
        if dq is not None:
            g.node.remove(dq)
            for n in g.node:
                for i, o in enumerate(n.output):
                    if o == dq.input[0]:
                        n.output[i] = vo.name
            vo.type.tensor_type.elem_type = TensorProto.INT8
    return model


def build(name: str, model: onnx.ModelProto, work: Path, seq=(1, 8, 16)) -> dict:
    path = work / f"{name}.onnx"
    onnx.save(explicit_zero_points(model), path)
    exe = trt_runner.runner_executable()
    cmd = [str(exe), "build", str(path), str(work / f"{name}.engine"), "--plugins", str(trt_runner.plugin_library()),
           "--batch", "1,1,2", "--seq", ",".join(map(str, seq)), "--no-tactic-libraries"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    return {"variant": name, "built": r.returncode == 0, "messages": lines[-12:]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="out")
    args = ap.parse_args()
    work = Path("/tmp/trt86_probe")
    work.mkdir(parents=True, exist_ok=True)
    s = LAYER_SHAPES["130m-narrow"]
    a, p, t = ssd_case(s, 2, 5, False)
    results = [build("ssd-q-dq", float_io(onnx_ops.single_op_model("QuantSSD", False, a, p, t)), work)]
    results.append(build("ssd-q-int8out", drop_output_dq(float_io(onnx_ops.single_op_model("QuantSSD", False, a, p, t))),
                         work))
    results.append(build("ssd-params-as-inputs",
                         params_as_inputs(float_io(onnx_ops.single_op_model("QuantSSD", False, a, p, t))), work))
    a, p, t = conv_case(s, 2, 5, False)
    results.append(build("conv-q-dq", float_io(onnx_ops.single_op_model("QuantConv1dSiLU", False, a, p, t)), work))
    export_onnx(tiny_quantized_model("g1"), work / "g1", force=True)
    results.append(build("model", onnx.load(str(work / "g1" / "prefill.onnx")), work, (1, 16, 64)))
    results.append(build("model-sandwich", qdq_plugin_edges(onnx.load(str(work / "g1" / "prefill.onnx"))), work, (1, 16, 64)))
    for r in results:
        print(f"{r['variant']:<16} {'BUILT' if r['built'] else 'failed'}")
        if not r["built"]:
            for m in r["messages"][-4:]:
                print(f"    {m[:300]}")
    Path(args.out, "trt86_probe.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
