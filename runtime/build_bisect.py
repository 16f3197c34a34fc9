"""``qmamba bisect-build DIR``: the first tensor of a graph whose computation TensorRT cannot build.

For an export whose engine does not build (e.g. "Could not find any implementation for node
{ForeignNode[...]}"), the graph that ``qmamba build`` gives TensorRT (``trt_graph``'s rewrites for this
TensorRT) is cut after one float tensor at a time - the nodes that tensor depends on, with it as the only
output - and each cut is built with the same profile and options. A binary search over the float tensors
in graph order finds the first cut that fails: the tensor, the node that produces it and TensorRT's error.
TensorRT fuses across nodes, so the answer is where the failure starts to show, not a proof of its cause;
each tried cut and its outcome is printed. WORK keeps the graph given to TensorRT and the last cut tried
(one cut file, replaced by the next: a cut of a large model holds most of its weights).

Needs TensorRT and a CUDA GPU (the runner and plugin libraries of ``qmamba build``).
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import onnx

from qmamba.export.metadata import read_onnx_metadata
from qmamba.export.onnx_export import save_graph
from .bisect import float_intermediates


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .build import DEFAULT_OPTIMIZATION_LEVEL, _level, _range

    parser.add_argument("onnx_dir", metavar="DIR", help="`qmamba export` output directory")
    parser.add_argument("--kind", choices=("prefill", "decode"), default="prefill", help="which graph (default prefill)")
    parser.add_argument("--batch", type=_range, default=(1, 1, 8), metavar="MIN,OPT,MAX",
                        help="batch range, as `qmamba build` takes it (default 1,1,8)")
    parser.add_argument("--seq", type=_range, default=(1, 128, 2048), metavar="MIN,OPT,MAX",
                        help="prompt length range of the prefill graph (default 1,128,2048)")
    parser.add_argument("--builder-optimization-level", type=_level, default=DEFAULT_OPTIMIZATION_LEVEL,
                        metavar="0..5", help=f"as `qmamba build` (default {DEFAULT_OPTIMIZATION_LEVEL})")
    parser.add_argument("--no-tactic-libraries", action="store_true", help="as `qmamba build`")
    parser.add_argument("--plugins", metavar="LIB", help="libqmamba_trt_plugins.so (default: the built one)")
    parser.add_argument("--work", default="qmamba_bisect_build",
                        help="directory for the cut graphs (default ./qmamba_bisect_build)")
    parser.add_argument("--force", action="store_true", help="replace an existing --work directory")


def truncated(model: onnx.ModelProto, tensor: str) -> onnx.ModelProto:
    """``model`` cut after ``tensor``: the nodes it depends on, the graph inputs and initializers they read,
    and ``tensor`` (float) as the only output. Model-local functions are kept."""
    producer = {o: i for i, n in enumerate(model.graph.node) for o in n.output if o}
    if tensor not in producer:
        raise ValueError(f"bisect-build: no node produces {tensor!r}")
    keep, todo = set(), [tensor]
    while todo:
        i = producer.get(todo.pop())
        if i is None or i in keep:
            continue
        keep.add(i)
        todo.extend(x for x in model.graph.node[i].input if x)
    nodes = [n for i, n in enumerate(model.graph.node) if i in keep]
    read = {x for n in nodes for x in n.input}
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.node[:], m.graph.input[:], m.graph.initializer[:], m.graph.output[:], m.graph.value_info[:]
    m.graph.node.extend(nodes)
    m.graph.input.extend(v for v in model.graph.input if v.name in read)
    m.graph.initializer.extend(t for t in model.graph.initializer if t.name in read)
    m.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    return m


def first_failing_cut(model: onnx.ModelProto, names: list[str],
                      build: Callable[[onnx.ModelProto, str], str | None],
                      say: Callable[[str], None] = print) -> tuple[str | None, onnx.NodeProto | None, str | None]:
    """Binary search over ``names`` (float tensors in graph order) for the first cut that ``build`` fails
    (``build`` returns None when the cut built, else the error). Returns (that tensor, the node that
    produces it, the error), or (None, None, None) when every cut builds."""
    producer = {o: n for n in model.graph.node for o in n.output}
    lo, hi, error = -1, len(names), None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        node = producer[names[mid]]
        failed = build(truncated(model, names[mid]), names[mid])
        say(f"cut {mid + 1}/{len(names)} after {names[mid]} ({node.op_type} {node.name}): "
            + ("builds" if failed is None else "fails: " + failed.strip().splitlines()[-1][:200]))
        if failed is None:
            lo = mid
        else:
            hi, error = mid, failed
    return (names[hi], producer[names[hi]], error) if hi < len(names) else (None, None, None)


def run(args) -> int:
    from qmamba.output_dir import atomic_output_dir
    from . import trt_runner
    from .build import _trt_onnx, decode_linear_plugin, tensorrt_major

    onnx_dir = Path(args.onnx_dir)
    meta = read_onnx_metadata(onnx_dir)
    decode = args.kind == "decode"
    profile = trt_runner.Profile(tuple(args.batch), (1, 1, 1) if decode else tuple(args.seq))
    with atomic_output_dir(args.work, force=args.force, inputs=[onnx_dir]) as work:
        linear = decode and decode_linear_plugin("auto", args.batch[2])
        path = _trt_onnx(onnx_dir / meta["graphs"][args.kind]["file"], work, tensorrt_major(), linear, decode, {},
                         norm_plugin=not decode)
        model = onnx.load(str(path))

        def build(cut: onnx.ModelProto, name: str) -> str | None:
            # One file for every cut (weights past 2 GiB beside it), replaced by the next: a cut of a
            # large model holds most of its weights.
            cut_path = work / "cut.trt.onnx"
            save_graph(cut, cut_path)
            try:
                trt_runner.build_engine(cut_path, work / "cut.engine", profile, args.plugins,
                                        no_tactic_libraries=args.no_tactic_libraries,
                                        optimization_level=args.builder_optimization_level)
            except trt_runner.TrtRunnerError as e:
                return str(e)
            finally:
                (work / "cut.engine").unlink(missing_ok=True)
            return None

        names = float_intermediates(model)
        print(f"{path.name}: {len(names)} float tensors to cut after; profile {profile.describe()}")
        whole = build(model, "whole")
        if whole is None:
            print("the whole graph builds: nothing to bisect")
            return 0
        tensor, node, error = first_failing_cut(model, names, build)
        if tensor is None:
            print("every cut builds: the failure needs the graph's own outputs (the whole graph fails: "
                  + whole.strip().splitlines()[-1][:300] + ")")
        else:
            print(f"first cut that fails: after {tensor}, produced by {node.op_type} {node.name}")
            print(error.strip())
        return 1
