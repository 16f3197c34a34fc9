"""Which type arrangements around a plugin TensorRT 8.6's explicit-quantization builder accepts.

TensorRT 8.6 refuses some plugin nodes in Q/DQ networks ("All of the candidates were removed, which
points to the node being incorrectly marked as an int8 node"). This compiles a do-nothing plugin whose
I/O types are fields (scripts/trt86_probe/qmProbePlugin.cpp), builds small graphs around it with the
runner's command line, and reports for each whether the engine builds, the types TensorRT configured
the plugin with, and TensorRT's last messages. Then the same for qmamba's own ops and models.
    python scripts/trt86_probe.py --out OUT [--only NAME,...]
Needs TensorRT 8.6 (TensorRT_ROOT, TensorRT_INCLUDE_DIR as scripts/device_trt.sh sets them) and qmamba
installed with its runner.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "runtime"))

from qmamba.runtime import trt_runner  # noqa: E402
from qmamba.runtime.build import explicit_zero_points, trt_graph  # noqa: E402

F, H, I8, I32, ANY = 0, 1, 2, 3, -1  # nvinfer1::DataType codes; ANY: float, half or int8 accepted
ONNX_OF = {F: TensorProto.FLOAT, H: TensorProto.FLOAT16, I8: TensorProto.INT8, I32: TensorProto.INT32,
           ANY: TensorProto.FLOAT}
WIDTH = 16
OUT_DIR = "out"


class Graph:
    """A small ONNX graph around QmProbe nodes; tensors are [N, L, WIDTH] with N and L dynamic."""

    def __init__(self):
        self.nodes, self.inputs, self.outputs = [], [], []
        self.inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                      numpy_helper.from_array(np.array(0.05, np.float32), "s2"),
                      numpy_helper.from_array(np.array(1.0, np.float32), "one"),
                      numpy_helper.from_array(np.array(0, np.int8), "zp")]
        self.n = 0

    def _name(self, stem):
        self.n += 1
        return f"{stem}{self.n}"

    def input(self, name, elem=TensorProto.FLOAT):
        self.inputs.append(helper.make_tensor_value_info(name, elem, ["N", "L", WIDTH]))
        return name

    def output(self, name, elem=TensorProto.FLOAT):
        self.outputs.append(helper.make_tensor_value_info(name, elem, ["N", "L", WIDTH]))
        return name

    def q(self, x, scale="s"):
        y = self._name("q")
        self.nodes.append(helper.make_node("QuantizeLinear", [x, scale, "zp"], [y], name=y))
        return y

    def dq(self, x, scale="s", out=None):
        y = out or self._name("dq")
        self.nodes.append(helper.make_node("DequantizeLinear", [x, scale, "zp"], [y], name=y))
        return y

    def probe(self, inputs, in_types, out_types, outs=None):
        name = self._name("probe")
        outs = outs or [f"{name}.out{i}" for i in range(len(out_types))]
        self.nodes.append(helper.make_node("QmProbe", list(inputs), list(outs), name=name, domain="qmprobe",
                                           in_types=list(in_types), out_types=list(out_types)))
        return outs

    def model(self):
        g = helper.make_graph(self.nodes, "probe", self.inputs, self.outputs, self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("qmprobe", 1)])
        m.ir_version = 9
        return m


def variants():
    """name -> (what it asks, graph)."""
    out = {}

    def add(name, what, build):
        g = Graph()
        build(g)
        out[name] = (what, g.model())

    add("int8-in-int8-out", "control: x -> Q -> P[int8] -> int8 -> DQ",
        lambda g: g.dq(g.probe([g.q(g.input("x"))], [I8], [I8])[0], out=g.output("y")))
    add("int8-in-float-out", "x -> Q -> P[int8] -> float (an int8 node with a float output)",
        lambda g: g.probe([g.q(g.input("x"))], [I8], [F], [g.output("y")]))
    add("int8-in-half-out", "x -> Q -> P[int8] -> half",
        lambda g: g.probe([g.q(g.input("x"))], [I8], [H], [g.output("y", TensorProto.FLOAT16)]))

    def mixed(g):
        o = g.probe([g.q(g.input("x"))], [I8], [I8, F], ["p.int8", g.output("y2")])
        g.dq(o[0], out=g.output("y1"))
    add("int8-in-mixed-out", "x -> Q -> P[int8] -> (int8 -> DQ, float)  [QuantSSD's shape]", mixed)

    def mixed_any(g):
        o = g.probe([g.q(g.input("x"))], [I8], [I8, ANY], ["p.int8", g.output("y2")])
        g.dq(o[0], out=g.output("y1"))
    add("int8-in-mixed-any-out", "as int8-in-mixed-out, second output float|half|int8 accepted", mixed_any)
    add("int8-in-any-out", "x -> Q -> P[int8] -> float|half|int8 accepted",
        lambda g: g.probe([g.q(g.input("x"))], [I8], [ANY], [g.output("y")]))

    def int32_out(g):
        o = g.probe([g.q(g.input("x"))], [I8], [I8, I32], ["p.int8", "p.int32"])
        g.dq(o[0], out=g.output("y1"))
        g.probe([o[1]], [I32], [F], [g.output("y2")])
    add("int8-in-int32-out", "x -> Q -> P[int8] -> (int8 -> DQ, int32 -> P2[int32] -> float)", int32_out)

    def two_q(g):
        x = g.input("x")
        g.dq(g.probe([g.q(x), g.q(x, "s2")], [I8, I8], [I8])[0], out=g.output("y"))
    add("two-q-inputs", "two inputs from QuantizeLinear -> P[int8, int8] -> int8 -> DQ", two_q)

    def q_and_float(g):
        x = g.input("x")
        g.dq(g.probe([g.q(x), x], [I8, F], [I8])[0], out=g.output("y"))
    add("q-and-float-inputs", "P[int8 from Q, float] -> int8 -> DQ", q_and_float)
    add("qdq-float-in-float-out", "x -> Q -> DQ -> P[float] -> float (plugin left out of int8)",
        lambda g: g.probe([g.dq(g.q(g.input("x")))], [F], [F], [g.output("y")]))
    add("qdq-float-in-qdq-out", "x -> Q -> DQ -> P[float] -> float -> Q -> DQ  (NVIDIA/TensorRT#3314)",
        lambda g: g.dq(g.q(g.probe([g.dq(g.q(g.input("x")))], [F], [F])[0]), out=g.output("y")))

    def plugin_edge(g):
        x = g.input("x")
        mid = g.probe([x], [F], [I8])[0]
        g.probe([mid], [I8], [F], [g.output("y")])
        g.dq(g.q(x), out=g.output("y_qdq"))  # some Q/DQ elsewhere: explicit quantization mode
    add("plugin-int8-edge", "P1[float] -> int8 -> P2[int8] -> float, no Q/DQ beside them (Q/DQ elsewhere)",
        plugin_edge)

    def plugin_edge_plus_q(g):
        x = g.input("x")
        mid = g.probe([x], [F], [I8])[0]
        g.probe([mid, g.q(x)], [I8, I8], [I8, F], ["p2.int8", g.output("y2")])
        g.dq("p2.int8", out=g.output("y1"))
    add("plugin-edge-and-q", "P2[int8 from P1, int8 from Q] -> (int8 -> DQ, float)  [QuantSSD in the model]",
        plugin_edge_plus_q)

    def plugin_edge_float_out(g):
        x = g.input("x")
        mid = g.probe([x], [F], [I8])[0]
        o = g.probe([mid, x], [I8, F], [I8, F], ["p2.state", g.output("y2")])
        g.dq(o[0], out=g.output("y1"))
    add("plugin-edge-float-in-mixed-out",
        "P2[int8 from P1, float] -> (int8 -> DQ, float)  [QuantSSD with dt float, state to DQ]",
        plugin_edge_float_out)

    def plugin_edge_int8_graph_out(g):
        x = g.input("x")
        mid = g.probe([x], [F], [I8])[0]
        g.probe([mid, x], [I8, F], [I8, F], [g.output("state", TensorProto.INT8), g.output("y")])
        g.dq(g.q(x), out=g.output("y_qdq"))
    add("plugin-edge-int8-graph-out",
        "P2[int8 from P1, float] -> (int8 network output, float)  [QuantSSD with dt float, prefill]",
        plugin_edge_int8_graph_out)

    def int8_graph_io(g):
        x, st = g.input("x"), g.input("state", TensorProto.INT8)
        g.probe([x, st], [F, I8], [I8, F], [g.output("state_out", TensorProto.INT8), g.output("y")])
        g.dq(g.q(x), out=g.output("y_qdq"))
    add("int8-graph-io", "int8 network input -> P[float, int8] -> (int8 network output, float)  [decode]",
        int8_graph_io)

    def plugin_dq_q_plugin(g):
        mid = g.probe([g.q(g.input("x"))], [I8], [I8])[0]
        g.dq(g.probe([g.q(g.dq(mid, "one"), "one")], [I8], [I8])[0], out=g.output("y"))
    add("plugin-dq-q-plugin", "Q -> P1 -> int8 -> DQ(1) -> Q(1) -> P2 -> int8 -> DQ  [conv -> SSD edges]",
        plugin_dq_q_plugin)

    def int8_input_dq_q(g):
        st = g.input("state", TensorProto.INT8)
        g.dq(g.probe([g.q(g.input("x")), g.q(g.dq(st, "one"), "one")], [I8, I8], [I8])[0], out=g.output("y"))
    add("int8-input-dq-q", "int8 network input -> DQ(1) -> Q(1) -> P[int8] -> int8 -> DQ  [decode states in]",
        int8_input_dq_q)

    def int8_output_dq_q(g):
        o = g.probe([g.q(g.input("x"))], [I8], [I8, I8], ["p.a", "p.b"])
        g.dq(o[0], out=g.output("y"))
        g.nodes.append(helper.make_node("QuantizeLinear", [g.dq(o[1], "one"), "one", "zp"],
                                        [g.output("state_out", TensorProto.INT8)], name="q_state"))
    add("int8-output-dq-q", "Q -> P -> (int8 -> DQ, int8 -> DQ(1) -> Q(1) -> int8 network output)  [states out]",
        int8_output_dq_q)

    def int8_output_direct(g):
        o = g.probe([g.q(g.input("x"))], [I8], [I8, I8], ["p.a", g.output("state_out", TensorProto.INT8)])
        g.dq(o[0], out=g.output("y"))
    add("int8-output-direct", "Q -> P -> (int8 -> DQ, int8 network output)", int8_output_direct)

    def model_like(g):
        """conv -> SSD as qmamba build would give TensorRT 8: DQ(1)->Q(1) on plugin int8 edges and states,
        SSD's y as int32 words into a bits-to-float plugin."""
        x, st = g.input("x"), g.input("state", TensorProto.INT8)
        xb, bb = g.probe([g.q(x)], [I8], [I8, I8], ["conv.x", "conv.B"])
        y_bits, state = g.probe([g.q(g.dq(xb, "one"), "one"), g.q(g.dq(bb, "one"), "one"), g.q(x, "s2"),
                                 g.q(g.dq(st, "one"), "one")], [I8] * 4, [I32, I8], ["ssd.y", "ssd.state"])
        g.probe([y_bits], [I32], [F], [g.output("y")])
        g.nodes.append(helper.make_node("QuantizeLinear", [g.dq(state, "one"), "one", "zp"],
                                        [g.output("state_out", TensorProto.INT8)], name="q_state"))
    add("model-like", "Q -> conv P -> DQ(1)Q(1) -> SSD P (+ int8 state in via DQ(1)Q(1)) -> (int32 -> P -> float,"
        " int8 -> DQ(1)Q(1) -> int8 output)", model_like)

    def ssd_like(g, outs):
        """QuantSSD's input arrangement: 4 int8 from Q, 7 float constants, 2 int32 constants."""
        x = g.input("x")
        g.inits += [numpy_helper.from_array(np.ones(4, np.float32), "fconst"),
                    numpy_helper.from_array(np.ones(2, np.int32), "iconst")]
        ins = [g.q(x), g.q(x, "s2"), g.q(x), g.q(x, "s2")] + ["fconst"] * 7 + ["iconst"] * 2
        o = g.probe(ins, [I8] * 4 + [F] * 7 + [I32] * 2, outs, ["p.a", "p.b"][:len(outs)])
        for i, t in enumerate(outs):
            if t == I8:
                g.dq(o[i], out=g.output(f"y{i}"))
            else:
                g.outputs.append(helper.make_tensor_value_info(o[i], ONNX_OF[t], ["N", "L", WIDTH]))
    add("ssd-like-int8-outs", "P[4 int8 from Q, 7 float, 2 int32] -> (int8 -> DQ, int8 -> DQ)",
        lambda g: ssd_like(g, [I8, I8]))
    add("ssd-like-mixed-outs", "P[4 int8 from Q, 7 float, 2 int32] -> (float, int8 -> DQ)  [QuantSSD]",
        lambda g: ssd_like(g, [F, I8]))
    return out


def qmamba_variants(work: Path):
    """qmamba's QuantSSD as a single-op graph (float I/O through Q/DQ) and the tiny g1 model as exported."""
    from trt_helpers import float_io

    from qmamba.export import onnx_ops
    from qmamba.export.onnx_export import export_onnx
    from qmamba.export.op_cases import LAYER_SHAPES, ssd_case
    from qmamba.export.tiny import tiny_quantized_model

    a, p, t = ssd_case(LAYER_SHAPES["130m-narrow"], 2, 5, False)
    out = {"quantssd-single-op": ("QuantSSD: int8 from Q, y float, state -> DQ",
                                  float_io(onnx_ops.single_op_model("QuantSSD", False, a, p, t)))}
    export_onnx(tiny_quantized_model("g1"), work / "g1", force=True)
    prefill = onnx.load(str(work / "g1" / "prefill.onnx"))
    out["model-g1-prefill"] = ("tiny g1 prefill graph as exported", prefill)
    trt8 = trt_graph(onnx.ModelProto.FromString(prefill.SerializeToString()), 8)
    out["model-g1-trt8"] = ("tiny g1 prefill as `qmamba build` gives TensorRT 8", trt8)
    out["model-g1-trt8-decode"] = ("tiny g1 decode as `qmamba build` gives TensorRT 8",
                                   trt_graph(onnx.load(str(work / "g1" / "decode.onnx")), 8))
    residual = next(i for n in trt8.graph.node if n.name.startswith("layers.1.") for i in n.input
                    if not i.startswith("layers.1."))
    for name, tensor in (("cut-xbc", "layers.0.mixer.xBC_q.trt_float"), ("cut-conv", "layers.0.mixer.conv.x.trt_dq_out"),
                         ("cut-ssd", "layers.0.mixer.ssd.y"), ("cut-layer0", residual)):
        out[f"model-g1-trt8-{name}"] = (f"model-g1-trt8 up to {tensor}", cut(trt8, [tensor]))
    return out


def cut(model: onnx.ModelProto, outputs: list[str]) -> onnx.ModelProto:
    """The part of the model that computes `outputs` (float tensors), as a model of its own."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    keep, stack = set(), list(outputs)
    while stack:
        n = producer.get(stack.pop())
        if n is not None and id(n) not in keep:
            keep.add(id(n))
            stack += list(n.input)
    nodes = [n for n in g.node if id(n) in keep]
    used = {i for n in nodes for i in n.input}
    graph = helper.make_graph(nodes, "cut", [i for i in g.input if i.name in used],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                              [t for t in g.initializer if t.name in used])
    m = helper.make_model(graph, opset_imports=list(model.opset_import), functions=list(model.functions))
    m.ir_version = model.ir_version
    return m


def _env(name: str):
    env = dict(os.environ)
    env.setdefault("QMAMBA_TRT_LOG", "verbose" if name.startswith(("quantssd", "model-g1-trt8")) else "info")
    return env


def build(name: str, model: onnx.ModelProto, work: Path, plugins: Path, seq=(1, 8, 16)) -> dict:
    path = work / f"{name}.onnx"
    onnx.save(explicit_zero_points(model), path)
    exe = trt_runner.runner_executable()
    cmd = [str(exe), "build", str(path), str(work / f"{name}.engine"), "--plugins", str(plugins),
           "--batch", "1,1,2", "--seq", ",".join(map(str, seq)), "--no-tactic-libraries"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(name))
    (work / f"{name}.log").write_text(r.stderr)
    if r.returncode != 0 and name.startswith(("quantssd", "model-g1-trt8")):
        # What TensorRT decided about Q/DQ and formats before it gave up: the device suite returns these.
        keep = [ln for ln in r.stderr.splitlines() if any(k in ln for k in ("QDQ", "Q/DQ", "int8", "Int8", "INT8",
                "QuantSSD", "ssd", "Quantize", "Dequantize", "candidate", "format", "Format"))]
        Path(OUT_DIR, f"{name}.verbose.log").write_text("\n".join(keep[-3000:]))
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    configured = sorted({ln for ln in lines if ln.startswith("qmprobe configured")})
    errors = [ln for ln in lines if "[TensorRT error]" in ln or ln.startswith("qmamba_trt")]
    return {"variant": name, "built": r.returncode == 0, "configured": configured, "errors": errors[-4:],
            "tail": [ln for ln in lines if not ln.startswith("qmprobe query")][-6:]}


def probe_library(work: Path) -> Path:
    """Compiles the probe plugin against the TensorRT headers the device suite uses."""
    inc = os.environ.get("TensorRT_INCLUDE_DIR") or str(ROOT / ".deps" / "tensorrt-8.6" / "include")
    cuda = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    lib = work / "libqmprobe.so"
    subprocess.run(["g++", "-std=c++17", "-shared", "-fPIC", "-O1", "-Wno-deprecated-declarations", f"-I{inc}",
                    f"-I{cuda}/include", str(ROOT / "scripts" / "trt86_probe" / "qmProbePlugin.cpp"),
                    f"-L{cuda}/lib64", "-lcudart", "-o", str(lib)], check=True)
    return lib


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="out")
    ap.add_argument("--only", default="", help="comma-separated variant names")
    args = ap.parse_args()
    global OUT_DIR
    OUT_DIR = args.out
    Path(OUT_DIR).mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/trt86_probe")
    work.mkdir(parents=True, exist_ok=True)
    only = set(filter(None, args.only.split(",")))
    probe_lib = probe_library(work)
    cases = [(n, w, m, probe_lib) for n, (w, m) in variants().items()]
    cases += [(n, w, m, trt_runner.plugin_library()) for n, (w, m) in qmamba_variants(work).items()]
    results = []
    for name, what, model, lib in cases:
        if only and name not in only:
            continue
        r = build(name, model, work, lib)
        r["what"] = what
        results.append(r)
        print(f"{'BUILT ' if r['built'] else 'failed'} {name:<32} {what}", flush=True)
        for c in r["configured"]:
            print(f"        {c}")
        if not r["built"]:
            for m in r["errors"][-2:] or r["tail"][-2:]:
                print(f"        {m[:240]}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "trt86_probe.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
