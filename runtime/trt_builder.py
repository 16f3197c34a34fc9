"""An engine built through TensorRT's Python API: the same build as the C++ runner's
(``runtime/cpp/engineBuilder.cpp``, ``trt_runner.build_engine``), for ``qmamba build --backend python``."""
from __future__ import annotations

import json
from pathlib import Path

from . import trt_runner


def build_engine(trt, onnx_path: Path, engine_path: Path, profile: trt_runner.Profile, plugins: Path,
                  fp16: bool, no_tactic_libraries: bool, optimization_level: int | None = None,
                  timing_cache: Path | None = None) -> None:
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
    # fp32 layers in fp32, as ONNX Runtime computes them: with TF32 (TensorRT's default on Ampere and
    # later) the Hadamard rotation's inputs lose 13 mantissa bits and the int8 rounding after it flips.
    config.clear_flag(trt.BuilderFlag.TF32)
    if no_tactic_libraries and int(trt.__version__.split(".")[0]) < 10:
        # Only the libraries; TensorRT's own convolution sources implement the int8 GEMMs.
        libraries = sum(1 << int(s) for s in (trt.TacticSource.CUBLAS, trt.TacticSource.CUBLAS_LT,
                                                  trt.TacticSource.CUDNN))
        config.set_tactic_sources(config.get_tactic_sources() & ~libraries)
    if optimization_level is not None:
        config.builder_optimization_level = optimization_level
    cache = None
    if timing_cache is not None:
        blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cache = config.create_timing_cache(blob)
        if not config.set_timing_cache(cache, ignore_mismatch=False):
            raise RuntimeError(f"the timing cache {timing_cache} is of another GPU or TensorRT version")
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
    if cache is not None:
        tmp = timing_cache.with_name(timing_cache.name + ".tmp")
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
        tmp.replace(timing_cache)
    cudart = trt_runner._cudart()
    dev = trt_runner._cuda(cudart.cudaGetDevice())
    prop = trt_runner._cuda(cudart.cudaGetDeviceProperties(dev))
    name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
    meta = {"onnx": str(onnx_path), "tensorrt": f"TensorRT {trt.__version__.split('.post')[0]}",
            "plugin_library": lib.qmamba_plugin_library_version().decode(), "gpu": name.strip("\x00"),
            "compute_capability": f"{prop.major}.{prop.minor}", "fp16": "1" if fp16 else "0",
            "optimization_level": "default" if optimization_level is None else str(optimization_level),
            "profile": profile.describe(), "plan_bytes": str(len(plan))}
    Path(str(engine_path) + ".json").write_text(json.dumps(meta, indent=2))
