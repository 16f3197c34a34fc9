"""An engine built through TensorRT's Python API: the same build as the C++ runner's
(``runtime/cpp/engineBuilder.cpp``, ``trt_runner.build_engine``), for ``qmamba build --backend python``."""
from __future__ import annotations

import json
from pathlib import Path

from . import trt_runner


def build_engine(trt, onnx_path: Path, engine_path: Path, profile: trt_runner.Profile, plugins: Path,
                  fp16: bool, no_tactic_libraries: bool) -> None:
    """The same build as the C++ runner's (engineBuilder.cpp), through TensorRT's Python API."""
    import ctypes

    lib = ctypes.CDLL(str(plugins), mode=ctypes.RTLD_GLOBAL)
    lib.qmamba_plugin_library_version.restype = ctypes.c_char_p
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0 if int(trt.__version__.split(".")[0]) >= 10 else \
        1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if int(trt.__version__.split(".")[0]) < 10:
        config.set_flag(trt.BuilderFlag.INT8)
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
    if no_tactic_libraries:
        config.set_tactic_sources(0)
    opt = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shapes = [list(t.shape) for _ in range(3)]
        for axis, d in enumerate(t.shape):
            if d == -1:
                if axis > 1:
                    raise ValueError(f"input {t.name} has a dynamic axis {axis}; only batch and sequence may be")
                for k in range(3):
                    shapes[k][axis] = (profile.batch if axis == 0 else profile.seq)[k]
        opt.set_shape(t.name, *shapes)
    config.add_optimization_profile(opt)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path}")
    plan = bytes(plan)
    engine_path.write_bytes(plan)
    cudart = trt_runner._cudart()
    dev = trt_runner._cuda(cudart.cudaGetDevice())
    prop = trt_runner._cuda(cudart.cudaGetDeviceProperties(dev))
    name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
    p = profile
    meta = {"onnx": str(onnx_path), "tensorrt": f"TensorRT {trt.__version__.split('.post')[0]}",
            "plugin_library": lib.qmamba_plugin_library_version().decode(), "gpu": name.strip("\x00"),
            "compute_capability": f"{prop.major}.{prop.minor}", "fp16": "1" if fp16 else "0",
            "profile": f"batch {p.batch[0]}..{p.batch[1]}..{p.batch[2]}, seq {p.seq[0]}..{p.seq[1]}..{p.seq[2]}",
            "plan_bytes": str(len(plan))}
    Path(str(engine_path) + ".json").write_text(json.dumps(meta, indent=2))
