"""A Polygraphy runner over qmamba's C++ TensorRT runner, so that Polygraphy's ``Comparator`` can set
a TensorRT engine against ONNX Runtime (which runs the custom ops' function bodies) where TensorRT's
Python bindings are missing (TensorRT 8.6 on Python 3.12, Jetson).

With TensorRT's Python package the same comparison is one command (docs/tensorrt.md)::

    polygraphy run prefill.onnx --trt --plugins libqmamba_trt_plugins.so --onnxrt ...
"""
from __future__ import annotations

import time
from collections import OrderedDict

from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata

from . import trt_runner


class QMambaTrtRunner(BaseRunner):
    """Runs a serialized engine (built by ``qmamba build`` or the runner) through libqmamba_runner.so."""

    def __init__(self, engine_path, plugins=None, name=None):
        super().__init__(name=name, prefix="qmamba-trt-runner")
        self._engine_path = engine_path
        self._plugins = plugins

    def activate_impl(self):
        self.engine = trt_runner.TrtEngine(self._engine_path, self._plugins)

    def get_input_metadata_impl(self):
        import numpy as np

        meta = TensorMetadata()
        for t in self.engine.inputs:
            # TensorRT 8 imports the ONNX model's int64 ids as int32: take (and advertise) int64 like the
            # ONNX model, so one data loader feeds both runners; infer casts them (trt_runner.cast_input).
            dtype = np.int64 if t.dtype == np.int32 else t.dtype
            meta.add(t.name, dtype=dtype, shape=[None if d < 0 else d for d in t.shape])
        return meta

    def infer_impl(self, feed_dict):
        start = time.time()
        outputs = self.engine.infer(dict(feed_dict))
        self.inference_time = time.time() - start
        return OrderedDict((t.name, outputs[t.name]) for t in self.engine.outputs)

    def deactivate_impl(self):
        del self.engine


def onnxrt_runner(onnx_path):
    """Polygraphy's ONNX Runtime runner on the CPU for ``onnx_path`` (the function bodies run there)."""
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    return OnnxrtRunner(SessionFromOnnx(str(onnx_path), providers=["CPUExecutionProvider"]), name="onnxrt")


def compare(onnx_path, engine_path, feeds, *, plugins=None, int8_atol: int = 1, rtol: float = 1e-3,
            atol: float = 1e-3, float_error_stat: str = "elemwise"):
    """Runs ONNX Runtime and the engine on every feed dict of ``feeds`` and compares all outputs:
    int8 outputs within ``int8_atol`` everywhere (rounding ties differ by one), float outputs within
    rtol/atol by Polygraphy's ``float_error_stat`` ("elemwise": every element; "mean", "median",
    "max": that statistic of the errors). Returns (passed, Polygraphy RunResults)."""
    import numpy as np
    from polygraphy.comparator import Comparator, CompareFunc

    runners = [onnxrt_runner(onnx_path), QMambaTrtRunner(engine_path, plugins, name="qmamba-trt")]
    results = Comparator.run(runners, data_loader=list(feeds))
    first = results[0][1][0]
    per_out_atol = {n: (int8_atol if np.asarray(v).dtype == np.int8 else atol) for n, v in first.items()}
    per_out_rtol = {n: (0.0 if np.asarray(v).dtype == np.int8 else rtol) for n, v in first.items()}
    per_out_stat = {n: ("max" if np.asarray(v).dtype == np.int8 else float_error_stat) for n, v in first.items()}
    accuracy = Comparator.compare_accuracy(results, compare_func=CompareFunc.simple(
        rtol=per_out_rtol, atol=per_out_atol, check_error_stat=per_out_stat))
    return bool(accuracy), results
