"""`qmamba eval`: the window protocol, bits per byte against independent references, the shipped
models on real text, the JSON output, and clear errors for bad files, models and backends."""
from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from qmamba import models
from qmamba.cli import main as cli_main
from qmamba.data import text_file
from qmamba.runtime import evaluate as ev

from tiny_models import tiny_quantized_model

TEST_TEXT = text_file("wikitext-2/test.txt")
# Shipped models on the first 1025 bytes of wikitext-2 test (4 windows of 256 bytes), CPU fp32:
# measured 1.944 (g1) and 2.165 (g4) bits per byte; a model that lost its training would be near 8.
SHIPPED_BPB_BOUND = 2.5


class UniformScorer:
    """Equal logits: exactly 8 bits for every byte, whatever the text."""
    description = "uniform"

    def __call__(self, ids):
        return torch.zeros(*ids.shape, 256)


class BigramScorer:
    """Predicts from the previous byte alone, with a fixed table: its bits per byte follow from the
    table and the byte pairs of the text, counted independently below."""
    description = "bigram"

    def __init__(self, seed=0):
        self.table = torch.randn(256, 256, generator=torch.Generator().manual_seed(seed))

    def __call__(self, ids):
        return self.table[ids]


def bigram_bits(table, data: bytes) -> float:
    logp = torch.log_softmax(table.double(), dim=-1)
    return -sum(logp[a, b].item() for a, b in zip(data, data[1:])) / math.log(2) / (len(data) - 1)


@pytest.mark.parametrize("n, window, batch", [(1025, 256, 2), (1000, 256, 3), (7, 256, 8), (2, 1, 1)])
def test_windows_score_every_byte_but_the_first_once(n, window, batch):
    data = torch.arange(n) % 256
    targets, contexts = [], []
    for inputs, tgt in ev.window_batches(data, window, batch):
        assert inputs.shape == tgt.shape and inputs.shape[0] <= batch and inputs.shape[1] <= window
        assert torch.equal(inputs[:, 1:], tgt[:, :-1])  # targets are the inputs shifted by one
        targets.append(tgt.reshape(-1))
        contexts.append(inputs.shape[1])
    assert torch.equal(torch.cat(targets), data[1:])


def test_bits_per_byte_match_independent_references():
    raw = TEST_TEXT.read_bytes()[:3000]
    data = ev.read_text_bytes(TEST_TEXT, 3000)
    r = ev.evaluate(UniformScorer(), data, window=512, batch=2, progress=False)
    assert r["bits_per_byte"] == pytest.approx(8.0, abs=1e-12)
    assert r["perplexity"] == pytest.approx(256.0)
    assert r["bytes_scored"] == 2999
    bigram = BigramScorer()
    r = ev.evaluate(bigram, data, window=512, batch=2, progress=False)
    assert r["bits_per_byte"] == pytest.approx(bigram_bits(bigram.table, raw), rel=1e-9)


def test_float_scorer_matches_a_direct_forward():
    model = models.load_float("mamba2-tiny-g1")
    data = ev.read_text_bytes(TEST_TEXT, 301)
    r = ev.evaluate(ev.FloatTorchScorer(model, "cpu"), data, window=150, batch=2, progress=False)
    ids = data[:300].reshape(2, 150)
    tgt = data[1:301].reshape(2, 150)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    want = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt.flatten()).item() / math.log(2)
    assert r["bits_per_byte"] == pytest.approx(want, rel=1e-5)


def test_shipped_models():
    assert models.available() == ["mamba2-tiny-g1", "mamba2-tiny-g4"]
    total = sum((models.model_dir(n) / "model.safetensors").stat().st_size for n in models.available())
    assert total <= 20 * 2**20
    data = ev.read_text_bytes(TEST_TEXT, 1025)
    for name, groups in (("mamba2-tiny-g1", 1), ("mamba2-tiny-g4", 4)):
        model = models.load_float(name)
        assert model.config.n_groups == groups and model.config.vocab_size == 256
        assert model.dtype == torch.float32
        r = ev.evaluate(ev.FloatTorchScorer(model, "cpu"), data, window=256, batch=4, progress=False)
        assert r["bits_per_byte"] < SHIPPED_BPB_BOUND, name
    assert models.load_float("mamba2-tiny-g4", torch.float16).dtype == torch.float16


def test_cli_json(capsys):
    code = cli_main(["eval", "mamba2-tiny-g1", "--text", str(TEST_TEXT), "--max-bytes", "257",
                     "--window", "128", "--json", "--no-progress"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bytes_scored"] == 256 and out["window"] == 128
    assert out["perplexity"] == pytest.approx(2 ** out["bits_per_byte"])
    assert out["bits_per_byte"] < SHIPPED_BPB_BOUND + 0.5
    assert "non-overlapping windows of 128 bytes" in out["protocol"]
    assert out["backend"] == "torch float32" and out["model"] == "mamba2-tiny-g1"


def test_cli_quantized_checkpoint(tmp_path, capsys):
    from qmamba.export.checkpoint import save_quantized

    model = tiny_quantized_model("g1")
    save_quantized(model, tmp_path / "ckpt")
    assert cli_main(["eval", str(tmp_path / "ckpt"), "--text", str(TEST_TEXT), "--max-bytes", "65",
                     "--window", "32", "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    data = ev.read_text_bytes(TEST_TEXT, 65)
    logits, _ = model(data[:64].reshape(2, 32))
    want = torch.nn.functional.cross_entropy(logits.flatten(0, 1), data[1:65].reshape(2, 32).flatten())
    assert out["bits_per_byte"] == pytest.approx(want.item() / math.log(2), rel=1e-6)
    assert out["backend"].startswith("torch W8A8 reference")


@pytest.mark.parametrize("argv, message, code", [
    (["mamba2-tiny-g1", "--text", "/no/such/file.txt"], "text file /no/such/file.txt does not exist", 2),
    (["mamba2-huge", "--text", str(TEST_TEXT)], "unknown model 'mamba2-huge'; shipped models: mamba2-tiny-g1", 2),
    (["/no/such/model_dir", "--text", str(TEST_TEXT)], "model directory /no/such/model_dir does not exist", 2),
    (["mamba2-tiny-g1", "--text", str(TEST_TEXT), "--backend", "onnxruntime"],
     "backend onnxruntime needs a directory", 2),
    # bad input exits 2; a missing CUDA device is a failure of the work (exit 1)
    (["mamba2-tiny-g1", "--text", str(TEST_TEXT), "--device", "cuda"], "torch sees no CUDA device", 1)
    if not torch.cuda.is_available() else (["mamba2-tiny-g1", "--text", str(TEST_TEXT), "--max-bytes", "1"], "", 2),
])
def test_cli_errors(argv, message, code, capsys):
    assert cli_main(["eval", *argv, "--no-progress"]) == code
    err = capsys.readouterr().err
    assert err.startswith("qmamba eval: error: ") and message in err


def test_unavailable_backends(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(RuntimeError, match="backend onnxruntime is not available here"):
        ev.load_scorer(str(tmp_path), "onnxruntime")
    with pytest.raises(FileNotFoundError, match="prefill.engine does not exist"):
        ev.load_scorer(str(tmp_path), "tensorrt")
    if not torch.cuda.is_available():  # engines present, but no runner library / GPU here
        for name in ("prefill.engine", "decode.engine"):
            (tmp_path / name).write_bytes(b"not an engine")
        with pytest.raises(RuntimeError, match="backend tensorrt is not available here"):
            ev.load_scorer(str(tmp_path), "tensorrt")
    with pytest.raises(ValueError, match="unknown backend 'tflite'"):
        ev.load_scorer("mamba2-tiny-g1", "tflite")


def test_wrong_directory_kinds(tmp_path):
    (tmp_path / "qmamba_onnx.json").write_text("{}")
    with pytest.raises(ValueError, match="exported ONNX directory; use --backend onnxruntime"):
        ev.load_scorer(str(tmp_path), "torch")
    engines = tmp_path / "engines"
    engines.mkdir()
    (engines / "qmamba_engines.json").write_text("{}")
    (engines / "qmamba_onnx.json").write_text("{}")  # qmamba build carries the export's metadata along
    with pytest.raises(ValueError, match="engine directory \\(qmamba build\\); use --backend tensorrt"):
        ev.load_scorer(str(engines), "torch")
    with pytest.raises(ValueError, match="--stepwise applies to --backend onnxruntime"):
        ev.load_scorer(str(engines), "tensorrt", stepwise=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        ev.load_scorer(str(empty), "torch")


def test_stepwise_scorer_on_onnxruntime(tmp_path):
    """The engines' stepwise protocol on ONNX Runtime (ort.OrtStepper): the first position is the
    prefill's own, every later one a decode step from the int8 states, close to the prefill's logits."""
    from qmamba.runtime.ort import OrtModel, OrtStepper
    from tiny_models import exported_tiny_model

    _, onnx_dir = exported_tiny_model("g1", tmp_path / "onnx")
    model = OrtModel(onnx_dir)
    ids = ev.read_text_bytes(text_file("wikitext-2/test.txt"), 65)[:64].reshape(2, 32)
    got = ev.StepwiseScorer(OrtStepper(model), "onnxruntime stepwise")(ids)
    want = torch.from_numpy(model.prefill(ids.numpy())[0]).float()
    assert got.shape == want.shape
    assert torch.equal(got[:, 0], want[:, 0])
    assert ((got - want).norm() / want.norm()).item() < 0.05
    result = ev.evaluate(ev.StepwiseScorer(OrtStepper(model), "onnxruntime stepwise"), ids.reshape(-1),
                         window=16, batch=2, progress=False)
    assert "decode step" in result["protocol"]


def test_cli_stepwise_onnxruntime(tmp_path, capsys):
    """``qmamba eval EXPORT --backend onnxruntime --stepwise``: the stepwise scorer's bits per byte (the
    engines' protocol), which differ from the prefill windows' on the same export by the int8 states'
    rounding between steps, not more."""
    from qmamba.runtime.ort import OrtModel, OrtStepper
    from tiny_models import exported_tiny_model

    _, onnx_dir = exported_tiny_model("g1", tmp_path / "onnx")
    text = tmp_path / "t.txt"
    text.write_bytes(ev.read_text_bytes(text_file("wikitext-2/test.txt"), 600).numpy().astype("uint8").tobytes())
    args = [str(onnx_dir), "--text", str(text), "--backend", "onnxruntime", "--window", "128", "--batch", "2",
            "--json", "--no-progress"]
    assert cli_main(["eval", *args, "--stepwise"]) == 0
    stepwise = json.loads(capsys.readouterr().out)
    assert cli_main(["eval", *args]) == 0
    windows = json.loads(capsys.readouterr().out)
    assert "one decode step per byte" in stepwise["protocol"] and "decode step" not in windows["protocol"]
    want = ev.evaluate(ev.StepwiseScorer(OrtStepper(OrtModel(onnx_dir)), "onnxruntime stepwise"),
                       ev.read_text_bytes(text), window=128, batch=2, progress=False)["bits_per_byte"]
    assert stepwise["bits_per_byte"] == pytest.approx(want, rel=1e-9)
    assert stepwise["bits_per_byte"] == pytest.approx(windows["bits_per_byte"], rel=0.05)
