"""in_proj's output scale after its Split, for TensorRT (``runtime/build.py`` ``trt_graph``).

The exported prefill graph multiplies in_proj's whole fp32 output by its per-column scale
(``export/onnx_layers.quant_linear``: ``Mul(acc, Mul(input_scale, weight_scale))``) and then splits it into
z, x, B, C and dt, each quantized with its own scale. TensorRT ran that Mul as a layer of its own, a pass
over the 2048 x 10 576 fp32 output of a 2.7b layer (6.7 of a 95 ms prefill, H100, docs/tensorrt.md),
before the quantizations read it again. Split first, then each piece multiplied by its slice of the scale:
the Mul then sits right before the piece's quantization (for z, its float Q/DQ), where TensorRT can fuse
the two pointwise steps. Exact: each element gets the same product.
"""
from __future__ import annotations

from .graph_index import GraphIndex, replace_nodes


def scale_after_split(model):
    """Every ``Split(Mul(MatMul output, constant [N] scale), sizes, axis=-1)`` becomes ``Split(MatMul output)``
    followed by a Mul of each piece by its slice of the scale; a scale given as ``Mul(a, b)`` of two
    constants is folded to their fp32 product (the same IEEE value the Mul gives). Anything else is left
    as it is."""
    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    ix = GraphIndex(g)

    dropped, replace, new_inits = set(), {}, {}
    for split in [n for n in g.node if n.op_type == "Split"]:
        axis = next((a.i for a in split.attribute if a.name == "axis"), 0)
        mul = ix.made_by(split.input[0], "Mul")
        if mul is None or len(split.input) < 2 or split.input[1] not in ix.inits \
                or len(ix.consumers.get(mul.output[0], [])) != 1 or mul.output[0] in ix.outputs:
            continue
        acc, scale_name = mul.input
        if ix.made_by(acc, "MatMul") is None:
            continue
        scale = ix.constant(scale_name)
        sizes = numpy_helper.to_array(ix.inits[split.input[1]])
        if scale is None or scale.dtype != np.float32 or scale.ndim != 1 or axis != -1 \
                or int(sizes.sum()) != scale.shape[0]:
            continue
        pieces, start, muls = [], 0, []
        for i, (size, out) in enumerate(zip(sizes.tolist(), split.output)):
            part = f"{out}.unscaled"
            name = f"{scale_name}.slice{i}"
            new_inits[name] = numpy_helper.from_array(np.ascontiguousarray(scale[start:start + size]), name)
            muls.append(helper.make_node("Mul", [part, name], [out], name=f"{out}/scale"))
            pieces.append(part)
            start += size
        new_split = helper.make_node("Split", [acc, split.input[1]], pieces, name=split.name, axis=-1)
        replace[id(split)] = [new_split, *muls]
        dropped.add(id(mul))
        scale_of = ix.made_by(scale_name, "Mul")
        if scale_of is not None and len(ix.consumers.get(scale_name, [])) == 1:
            dropped.add(id(scale_of))  # folded into the slices
    if replace:
        replace_nodes(g, dropped, replace, new_inits)
    return model
