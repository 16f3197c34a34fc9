"""TensorRT-RTX parse-and-build check of an exported ONNX graph, with no GPU.

TensorRT-RTX (``pip install tensorrt-rtx-cu13``, module ``tensorrt_rtx_bindings``) runs TensorRT's
ONNX parser and builder on the CPU when the builder config names the target compute capabilities
instead of asking the (absent) GPU. qmamba's plugins are not registered here, so the parser inlines
the model-local functions of the custom nodes: a successful build proves that the exported graph,
bodies included, is acceptable to TensorRT before any GPU is involved. The plan is not run
(TensorRT-RTX does not run on Hopper, and there is no GPU here).
"""
from __future__ import annotations

from dataclasses import dataclass
import importlib

from .onnx_validate import validate_onnx_model


@dataclass(frozen=True)
class BuildReport:
    layers: int
    inputs: dict[str, tuple[int, ...]]
    plan_bytes: int


def load_trt_rtx():
    """The ``tensorrt_rtx_bindings`` module, or ImportError saying how to get it."""
    try:
        return importlib.import_module("tensorrt_rtx_bindings")
    except ImportError as e:
        raise ImportError(f"TensorRT-RTX is not installed (pip install tensorrt-rtx-cu13): {e}") from e


def parse_and_build(path: str, batch=(1, 1, 2), seq=(1, 8, 32),
                    compute_capability: str = "SM89") -> BuildReport:
    """Parses ``path`` with TensorRT-RTX's ONNX parser and builds a plan on the CPU.

    Dynamic axes get an optimization profile: axis 0 is the batch (min, opt, max = ``batch``),
    axis 1 of a tensor with a dynamic axis 1 is the sequence (``seq``). The graph is validated
    first (``validate_onnx_model``: a NaN parameter or a zero scale raises QMambaInputError; the
    builder would accept both). Raises RuntimeError with the parser's or builder's messages on
    failure.
    """
    validate_onnx_model(path)
    trt = load_trt_rtx()
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT-RTX could not parse {path}: {errors}")
    config = builder.create_builder_config()
    # No GPU: build for a named compute capability instead of the current device.
    config.num_compute_capabilities = 1
    config.set_compute_capability(getattr(trt.ComputeCapability, compute_capability), 0)
    profile = builder.create_optimization_profile()
    inputs = {}
    for i in range(network.num_inputs):
        t = network.get_input(i)
        dims = tuple(t.shape)
        inputs[t.name] = dims
        ranges = [list(dims), list(dims), list(dims)]
        for axis, d in enumerate(dims):
            if d == -1:
                bounds = batch if axis == 0 else seq
                for k in range(3):
                    ranges[k][axis] = bounds[k]
        profile.set_shape(t.name, *ranges)
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT-RTX parsed {path} but could not build a plan "
                           f"(run with a verbose logger to see why)")
    return BuildReport(network.num_layers, inputs, plan.nbytes)
