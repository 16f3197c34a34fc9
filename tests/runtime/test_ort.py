"""The ONNX Runtime wrapper of an exported pair, validate_onnx_model, and `qmamba check`."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from qmamba.cli import main as cli_main
from qmamba.data import text_file
from qmamba.export.checkpoint import save_quantized
from qmamba.export.validate import QMambaInputError
from qmamba.runtime.ort import OrtModel
from qmamba.runtime.onnx_validate import validate_onnx_model

from tiny_models import exported_tiny_model

# Logits: relative L2 error bound of `qmamba check` (see runtime/check.py for the reasoning).
LOGITS_REL = 1e-2


@pytest.fixture(scope="module", params=["g1", "g8"])
def pair(request, tmp_path_factory):
    model, out = exported_tiny_model(request.param, tmp_path_factory.mktemp(f"ort_{request.param}"))
    return model, OrtModel(out), out


def text_ids(n: int, offset: int = 2000, batch: int = 1) -> np.ndarray:
    data = np.frombuffer(text_file("wikitext-2/valid.txt").read_bytes(), np.uint8)
    return np.stack([data[offset + 997 * b: offset + 997 * b + n] for b in range(batch)]).astype(np.int64)


def rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def int8_mismatch(a, b) -> tuple[int, float]:
    d = np.abs(a.astype(int) - b.astype(int))
    return int(d.max()), float((d > 0).mean())


def test_prefill_decode_generate_match_pytorch(pair):
    model, ort_model, _ = pair
    ids = text_ids(40, batch=2)
    logits, states = ort_model.prefill(ids)
    ref_logits, ref_states = model(torch.from_numpy(ids))
    assert rel(logits, ref_logits.numpy()) < LOGITS_REL
    for (c, s), (rc, rs) in zip(states, ref_states):
        for got, want in ((c, rc), (s, rs)):
            worst, share = int8_mismatch(got, want.numpy())
            assert worst <= 1 and share <= 1e-2
    nxt = text_ids(41, batch=2)[:, -1]
    d_logits, d_states = ort_model.decode(nxt, states)
    t_states = [(torch.from_numpy(c), torch.from_numpy(s)) for c, s in states]
    r_logits, _ = model(torch.from_numpy(nxt[:, None]), t_states)
    assert d_logits.shape == (2, 1, model.config.vocab_size)
    assert rel(d_logits, r_logits.numpy()) < LOGITS_REL
    tokens, chosen = ort_model.generate(ids[:1], 8, return_logits=True)
    assert tokens.shape == (1, 8) and np.array_equal(chosen.argmax(-1), tokens)


def test_decode_continues_prefill(pair):
    """prefill(L) + decode(1) gives the logits of prefill(L + 1) at the last position, up to the
    int8 rounding of the SSM state between the two calls (docs/ops.md, Decode equals prefill):
    the PyTorch model shows the same gap, and the ONNX pair must not add to it."""
    model, ort_model, _ = pair
    ids = text_ids(33)
    full, full_states = ort_model.prefill(ids)
    _, states = ort_model.prefill(ids[:, :-1])
    step, step_states = ort_model.decode(ids[:, -1], states)
    t_full, _ = model(torch.from_numpy(ids))
    _, t_states = model(torch.from_numpy(ids[:, :-1]))
    t_step, t_step_states = model(torch.from_numpy(ids[:, -1:]), t_states)
    gap, t_gap = rel(step[:, 0], full[:, -1]), rel(t_step[:, 0].numpy(), t_full[:, -1].numpy())
    assert gap < 0.1 and abs(gap - t_gap) < LOGITS_REL
    # layer 0's conv state holds the last embedded-and-projected inputs: exact; deeper layers
    # see the state-rounding gap above in their inputs
    np.testing.assert_array_equal(step_states[0][0], full_states[0][0])
    for (c, s), (tc, ts) in zip(step_states, t_step_states):
        worst, share = int8_mismatch(s, ts.numpy())
        assert worst <= 1 and share <= 1e-2


def test_bad_runtime_inputs(pair):
    model, ort_model, _ = pair
    with pytest.raises(QMambaInputError, match="token ids must be in \\[0, 256\\)"):
        ort_model.prefill(np.array([[1, 300]]))
    with pytest.raises(QMambaInputError, match="input_ids must be \\[batch >= 1, seq >= 1\\]"):
        ort_model.prefill(np.array([1, 2, 3]))
    _, states = ort_model.prefill(text_ids(5))
    states[1] = (states[1][0], states[1][1][:, :-1])
    with pytest.raises(QMambaInputError, match="layer 1 ssm_state must be int8"):
        ort_model.decode(np.array([3]), states)
    with pytest.raises(QMambaInputError, match="states must hold 2 layers"):
        ort_model.decode(np.array([3]), states[:1])


def _edit(src, dst, change):
    proto = onnx.load(str(src))
    change(proto)
    onnx.save(proto, str(dst))
    return dst


def _node(proto, op, layer=0):
    return [n for n in proto.graph.node if n.op_type == op][layer]


@pytest.mark.parametrize("change,message", [
    (lambda p: _node(p, "QuantSSD").input.pop(3),
     "layers.0.mixer.ssd \\(QuantSSD\\): takes 13 inputs .* plus the optional ssm_state, got 12"),
    (lambda p: _node(p, "QuantConv1dSiLU", 1).input.__setitem__(1, ""),
     "layers.1.mixer.conv \\(QuantConv1dSiLU\\): required input 1 \\(weight\\) is empty"),
    (lambda p: _node(p, "QuantSSD").input.__setitem__(4, "layers.0.mixer.x_head_group_range"),
     "input 4 A_log \\(layers.0.mixer.x_head_group_range\\) must be float32, got INT32"),
    (lambda p: [a for a in _node(p, "QuantConv1dSiLU").attribute if a.name == "nheads"][0]
     .CopyFrom(helper.make_attribute("nheads", 8.0)),
     "attribute nheads must be int, got FLOAT"),
    (lambda p: [a for a in _node(p, "QuantSSD").attribute if a.name == "dt_scale"][0]
     .CopyFrom(helper.make_attribute("dt_scale", -1.0)),
     "attribute dt_scale must be finite and > 0"),
    (lambda p: _node(p, "QuantSSD").attribute.append(helper.make_attribute("chunk", 4)),
     "unknown attribute 'chunk'"),
    (lambda p: setattr(_node(p, "QuantSSD"), "op_type", "QuantFoo"),
     "unknown op of domain 'qmamba'"),
])
def test_validator_names_the_problem(pair, tmp_path, change, message):
    _, _, out = pair
    bad = _edit(out / "prefill.onnx", tmp_path / "bad.onnx", change)
    with pytest.raises(QMambaInputError, match=message):
        validate_onnx_model(bad)


def test_validator_checks_constant_values_and_forms(pair, tmp_path):
    _, _, out = pair

    def bad_ranges(p):
        init = [t for t in p.graph.initializer if t.name == "layers.1.mixer.x_dim_group_range"][0]
        arr = numpy_helper.to_array(init).copy()
        arr[..., -1] += 1
        init.CopyFrom(numpy_helper.from_array(arr, init.name))

    bad = _edit(out / "decode.onnx", tmp_path / "ranges.onnx", bad_ranges)
    with pytest.raises(QMambaInputError, match="layers.1.mixer.conv .*x_dim_group_range\\[0, 0\\].*must end at headdim"):
        validate_onnx_model(bad)

    def prefill_body(p):
        from qmamba.export import onnx_ops
        del p.functions[:]
        p.functions.extend(onnx_ops.make_function(op, with_state=False) for op in onnx_ops.OPS)

    bad = _edit(out / "decode.onnx", tmp_path / "forms.onnx", prefill_body)
    with pytest.raises(QMambaInputError, match="function body is the form without state input"):
        validate_onnx_model(bad)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(QMambaInputError, match="junk.onnx: not a readable ONNX model"):
        validate_onnx_model(tmp_path / "junk.onnx")
    assert validate_onnx_model(out / "decode.onnx") == {"QuantConv1dSiLU": 2, "QuantSSD": 2}


def test_check_cli(pair, tmp_path, capsys):
    model, _, out = pair
    save_quantized(model, tmp_path / "ckpt")
    assert cli_main(["check", str(tmp_path / "ckpt"), str(out), "--length", "128"]) == 0
    text = capsys.readouterr().out
    assert "greedy 32 tokens: identical" in text
    assert "prefill layers.1.mixer.ssd.ssm_state_out" in text and "FAIL" not in text
    assert "decode layers.1.mixer.out_proj.input_q" in text and "decode logits, same lm_head input" in text
    assert cli_main(["check", str(tmp_path / "ckpt"), str(tmp_path / "nowhere")]) == 2
    assert "nowhere/prefill.onnx: no such ONNX file" in capsys.readouterr().err
