"""Shared pieces of the TensorRT tests: whether the runner can run here, float-I/O wrappers of the
single-op graphs, small exported models, and ONNX Runtime references."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from qmamba.export import onnx_ops
from qmamba.export.layer_sizes import LayerShape
from qmamba.runtime.bisect import ort_run, state_pairs  # noqa: F401  (the engine tests' too)
from qmamba.runtime.trt8_graph import explicit_zero_points


@functools.lru_cache(maxsize=1)
def trt_unavailable() -> str | None:
    """Why the TensorRT runner cannot run here (None when it can)."""
    from qmamba.runtime import trt_runner

    try:
        trt_runner.runner_library()
        trt_runner.plugin_library()
    except (FileNotFoundError, OSError, trt_runner.TrtRunnerError) as e:
        return f"TensorRT runner not available: {e}"
    try:
        cudart = trt_runner._cudart()
        if trt_runner._cuda(cudart.cudaGetDeviceCount()) < 1:
            return "no CUDA GPU"
    except Exception as e:  # no driver, no cuda-python
        return f"no CUDA GPU: {e}"
    return None


def float_io(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its int8 graph inputs and outputs turned into float ones through
    QuantizeLinear / DequantizeLinear of scale 1 (exact): TensorRT 8.6 takes int8 into a plugin from
    a QuantizeLinear."""
    g = model.graph
    onnx_ops.add_shared_initializers(g)
    pre, post = [], []
    for vi in g.input:
        if vi.type.tensor_type.elem_type == TensorProto.INT8:
            name = vi.name
            vi.name = f"{name}_f"
            vi.type.tensor_type.elem_type = TensorProto.FLOAT
            pre.append(helper.make_node("QuantizeLinear", [vi.name, onnx_ops.UNIT_SCALE, onnx_ops.INT8_ZERO],
                                        [name], name=f"{name}/q"))
    for vo in g.output:
        if vo.type.tensor_type.elem_type == TensorProto.INT8:
            name = vo.name
            for node in g.node:
                for i, o in enumerate(node.output):
                    if o == name:
                        node.output[i] = f"{name}_q"
            vo.type.tensor_type.elem_type = TensorProto.FLOAT
            post.append(helper.make_node("DequantizeLinear", [f"{name}_q", onnx_ops.UNIT_SCALE, onnx_ops.INT8_ZERO],
                                         [name], name=f"{name}/dq"))
    nodes = pre + list(g.node) + post
    del g.node[:]
    g.node.extend(nodes)
    return explicit_zero_points(model)


def float_feed(acts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{k}_f" if v.dtype == np.int8 else k: v.astype(np.float32) for k, v in acts.items()}


def ort_session(path):
    """ONNX Runtime on the CPU with graph optimizations off: the model's own semantics. (With them on,
    ORT fuses DequantizeLinear -> MatMul -> QuantizeLinear into its quantized kernels when zero points
    are explicit, which rounds differently: not the reference we want.)"""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def random_feed(model, batch: int, seqlen: int, seed: int) -> dict:
    """A feed for an exported graph: random token ids [batch, seqlen] and random int8 states (saturated values
    included; the states' dynamic dims take the batch), drawn in the graph's input order."""
    rng = np.random.default_rng(seed)
    feed = {}
    for vi in model.graph.input:
        if vi.name == "input_ids":
            feed[vi.name] = rng.integers(0, 256, (batch, seqlen)).astype(np.int64)
        else:
            dims = [batch if not d.dim_value else d.dim_value for d in vi.type.tensor_type.shape.dim]
            feed[vi.name] = rng.integers(-128, 128, dims).astype(np.int8)
    return feed


def ort_probe(model, names, feed: dict, tmp_path: Path) -> dict:
    """ONNX Runtime's values of the tensors ``names`` of ``model`` (made extra float outputs of a copy of it)
    and of its outputs, on ``feed``."""
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    probe.graph.output.extend(helper.make_tensor_value_info(x, TensorProto.FLOAT, None) for x in sorted(names))
    onnx.save(probe, tmp_path / "probe.onnx")
    sess = ort_session(tmp_path / "probe.onnx")
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))


def ort_before_and_after(before, after, feed: dict, tmp_path: Path) -> tuple[list, list]:
    """ONNX Runtime's outputs of a graph after and before a rewrite, on the same feed: (after's, before's)."""
    onnx.save(before, tmp_path / "before.onnx")
    onnx.save(after, tmp_path / "after.onnx")
    return ort_session(tmp_path / "after.onnx").run(None, feed), ort_session(tmp_path / "before.onnx").run(None, feed)


def two_prompts() -> np.ndarray:
    """The model tests' batch of two byte prompts (int64 [2, 40]), overlapping text of Tiny Shakespeare."""
    text = b"First Citizen:\nBefore we proceed any further, hear me speak."
    return np.stack([np.frombuffer(text[:40], np.uint8), np.frombuffer(text[5:45], np.uint8)]).astype(np.int64)



# Sizes the CUDA kernels take (headdim 32/64/128, d_state 16..256, <= 8 head and dim groups) at a
# fraction of real widths: the 130m-like (g = 1) and 8b-like (g = 8, 4 x 4 groups per SSD group)
# layer structures. (tiny_models.py's models have headdim 16 and 8, which the kernels refuse.)
SMALL_MODELS = {
    "g1": dict(hidden_size=128, expand=2, num_heads=8, head_dim=32, state_size=32, n_groups=1),
    "g8": dict(hidden_size=512, expand=2, num_heads=32, head_dim=32, state_size=16, n_groups=8),
}
SMALL_LAYER_SHAPES = {
    "130m-like": LayerShape(ngroups=1, nheads=8, headdim=32, d_state=32),
    "8b-like": LayerShape(ngroups=8, nheads=32, headdim=32, d_state=16),
}


def small_quantized_model(kind: str, n_layer: int = 2, hadamard: bool = False):
    """A random byte-level Mamba2 of SMALL_MODELS[kind], calibrated on a little Tiny Shakespeare (with the
    Hadamard rotation before out_proj when ``hadamard``: g1's d_ssm 256 = 2 x 128, g8's 1024 = 8 x 128)."""
    import torch
    from transformers import Mamba2Config, Mamba2ForCausalLM

    from qmamba.export.calibrate import calibrate_model
    from qmamba.data import text_file

    torch.manual_seed(0)
    float_model = Mamba2ForCausalLM(Mamba2Config(vocab_size=256, conv_kernel=4, num_hidden_layers=n_layer,
                                                 chunk_size=32, **SMALL_MODELS[kind])).eval()
    return calibrate_model(float_model, text_file("tinyshakespeare/input.txt").read_bytes()[:16384], num_samples=4, seq_len=64,
                           batch_size=4, progress=False, hadamard=hadamard)


def export_small_model(out_dir: Path, kind: str, hadamard: bool = False) -> Path:
    """small_quantized_model(kind, hadamard=hadamard) exported with `qmamba export`."""
    from qmamba.export.onnx_export import export_onnx

    export_onnx(small_quantized_model(kind, hadamard=hadamard), out_dir, force=True)
    return out_dir
