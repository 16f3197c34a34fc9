"""Who makes and who reads each tensor of an ONNX graph, and the node surgery the TensorRT rewrites share.

``runtime/decode_fusion.py`` matches its patterns with ``GraphIndex`` and splices fused nodes in with
``replace_nodes``; ``runtime/trt8_graph.py`` reads ``consumer_map``.
"""
from __future__ import annotations


def consumer_map(nodes) -> dict[str, list]:
    """Tensor name -> the nodes that read it."""
    out = {}
    for n in nodes:
        for x in n.input:
            out.setdefault(x, []).append(n)
    return out


def replace_nodes(g, dropped: set, replace: dict, new_inits: dict) -> None:
    """The graph with the nodes whose id() is in ``dropped`` removed, except those in ``replace``, which
    give way to their fused node (or list of nodes, in that order); ``new_inits`` moved into it (the dict is
    emptied); initializers and value_info nothing uses dropped. Initializers are removed in place before the
    new ones go in, so a graph of several GB holds its old and new weights at once only for the tensors being
    replaced."""
    kept = []
    for n in g.node:
        if id(n) in replace:
            r = replace[id(n)]
            kept.extend(r if isinstance(r, list) else [r])
        elif id(n) not in dropped:
            kept.append(n)
    del g.node[:]
    g.node.extend(kept)
    used = {i for n in g.node for i in n.input}
    for i in reversed(range(len(g.initializer))):
        if g.initializer[i].name not in used:
            del g.initializer[i]
    for name in [n for n in new_inits if n in used]:
        g.initializer.append(new_inits.pop(name))  # a copy; the dict's tensor is freed here
    new_inits.clear()
    made = used | {o for n in g.node for o in n.output}
    keep_info = [vi for vi in g.value_info if vi.name in made]
    del g.value_info[:]
    g.value_info.extend(keep_info)


class GraphIndex:
    """Who makes and who reads each tensor of a graph: what the decode rewrites match their patterns with."""

    def __init__(self, g):
        self.inits = {t.name: t for t in g.initializer}
        self.producers = {o: n for n in g.node for o in n.output}
        self.consumers = consumer_map(g.node)
        self.outputs = {o.name for o in g.output}

    def made_by(self, name, op):
        """The node that makes ``name``, if it is an ``op``."""
        n = self.producers.get(name)
        return n if n is not None and n.op_type == op else None

    def constant(self, name):
        """The value of ``name`` as a numpy array when it is an initializer or a ``Mul`` of two (folded to their
        product in the input's dtype: for fp32 the IEEE value the Mul gives), else None."""
        import numpy as np
        from onnx import numpy_helper

        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        made = self.made_by(name, "Mul")
        if made is not None and all(i in self.inits for i in made.input):
            a, b = (numpy_helper.to_array(self.inits[i]) for i in made.input)
            return np.multiply(a, b, dtype=np.result_type(a, b))
        return None

    def transposed_weight(self, matmul):
        """(Transpose, DequantizeLinear) when ``matmul``'s second input is ``Transpose(DequantizeLinear(W),
        perm=[1, 0])`` and each of the two is read by nothing else (the exported W8A8 linear's weight); else None."""
        tr = self.made_by(matmul.input[1], "Transpose")
        if tr is None or self.sole(tr.output[0], "MatMul") is not matmul \
                or list(attributes(tr).get("perm", [])) != [1, 0]:
            return None
        dq = self.made_by(tr.input[0], "DequantizeLinear")
        if dq is None or self.sole(dq.output[0], "Transpose") is not tr:
            return None
        return tr, dq

    def split_sizes(self, split):
        """The piece widths of a Split node (its sizes input, or its ``split`` attribute before opset 13), or None."""
        if len(split.input) > 1 and split.input[1]:
            sizes = self.constant(split.input[1])
            return None if sizes is None else [int(v) for v in sizes.reshape(-1)]
        given = attributes(split).get("split")
        return [int(v) for v in given] if given is not None else None

    def whole_row(self, piece):
        """(the Split's input, its row width) when ``piece`` is the first piece of a Split along the last axis of a
        3-D tensor (in_proj's z of its output z | x | B | C | dt) whose widths are known; else None."""
        split = self.made_by(piece, "Split")
        if split is None or split.output[0] != piece or int(attributes(split).get("axis", 0)) not in (-1, 2):
            return None
        sizes = self.split_sizes(split)
        return None if sizes is None else (split.input[0], sum(sizes))

    def sole(self, name, op):
        """The one node that reads ``name``, if it is an ``op`` and ``name`` is not a graph output."""
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op and name not in self.outputs else None


def attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}
