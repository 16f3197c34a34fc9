"""A table of bad inputs across the command line, the ONNX validator and the ONNX Runtime runner.

Every case must end in a clear error: for the CLI, exit code 2 and one line
``qmamba COMMAND: error: ...`` naming the problem (no traceback), nothing written at the output,
the input files unchanged; for the Python API, a ``BadInputError`` (a ``ValueError``) naming it.
Cases marked xfail are known gaps, each with the reason; they flip to passing (and then fail as
strict xfails) once the command is fixed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from qmamba.cli import main
from qmamba.data import text_file
from qmamba.errors import BadInputError
from qmamba.runtime.onnx_validate import validate_onnx_model

from tiny_models import exported_tiny_model, tiny_float_model, tiny_quantized_model

REPO = Path(__file__).resolve().parents[1]


def _edit_json(path: Path, change) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _edit_initializer(path: Path, name: str, value: float) -> None:
    model = onnx.load(str(path))
    _set(name, value)(model)
    onnx.save(model, str(path))


# name -> (source folder, change): damaged copies of the checkpoint and the export
DAMAGED = {
    "ckpt_truncated": ("ckpt", lambda d: _truncate(d / "model.safetensors", 1000)),
    "ckpt_empty_weights": ("ckpt", lambda d: _truncate(d / "model.safetensors", 0)),
    "ckpt_config_list": ("ckpt", lambda d: (d / "config.json").write_text("[]")),
    "ckpt_config_no_config": ("ckpt", lambda d: _edit_json(d / "config.json",
                                                          lambda c: {k: v for k, v in c.items() if k != "config"})),
    "ckpt_config_not_json": ("ckpt", lambda d: (d / "config.json").write_text("{not json")),
    "onnx_meta_truncated": ("onnx", lambda d: _truncate(d / "qmamba_onnx.json", 50)),
    "onnx_no_prefill": ("onnx", lambda d: (d / "prefill.onnx").unlink()),
    "onnx_junk_prefill": ("onnx", lambda d: (d / "prefill.onnx").write_bytes(b"not a model")),
    "onnx_nan_A_log": ("onnx", lambda d: _edit_initializer(d / "prefill.onnx", "layers.0.mixer.A_log", np.nan)),
    "onnx_zero_scale": ("onnx", lambda d: _edit_initializer(d / "decode.onnx", "layers.1.mixer.x_out_scales", 0.0)),
    "ckpt_unknown_format": ("ckpt", lambda d: _edit_json(d / "config.json", lambda c: {**c, "format": "qmamba-w4a4"})),
    # A config.json of another architecture: transformers would build its default Mamba2 from it.
    "llama": ("float", lambda d: (d / "config.json").write_text(json.dumps(
        {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 64}))),
}


@pytest.fixture(scope="session")
def inputs(tmp_path_factory) -> Path:
    """A folder with a float model (float), a checkpoint (ckpt), its export (onnx), their damaged
    copies and text files."""
    from qmamba.export.checkpoint import save_quantized

    root = tmp_path_factory.mktemp("bad_input_inputs")
    tiny_float_model("g1").save_pretrained(root / "float")
    save_quantized(tiny_quantized_model("g1"), root / "ckpt")
    exported_tiny_model("g1", root / "onnx")
    for name, (source, change) in DAMAGED.items():
        shutil.copytree(root / source, root / name)
        change(root / name)
    (root / "empty.txt").write_bytes(b"")
    (root / "test.txt").write_bytes(b"evaluation text")
    shutil.copy(text_file(), root / "text.txt")
    return root


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def case(name: str, argv: list[str], words: str, gap: str | None = None):
    """One row: ``gap`` names what the command still lacks (a strict xfail until it is fixed)."""
    marks = [pytest.mark.xfail(strict=True, reason=gap)] if gap else []
    return pytest.param(argv, words, id=name, marks=marks)



# (id, argv with {in}: the inputs folder, {out}: the output path, words the message must hold)
CLI_CASES = [
    case("no-command", [], "required"),
    case("unknown-command", ["nosuch"], "invalid choice: 'nosuch'"),
    case("calibrate-no-arguments", ["calibrate"], "the following arguments are required"),
    case("calibrate-bad-observer", ["calibrate", "--model", "mamba2-tiny-g1", "--text", "{in}/text.txt", "-o", "{out}",
                                "--observer", "kmeans"], "invalid choice: 'kmeans'"),
    case("calibrate-unknown-model", ["calibrate", "--model", "mamba2-huge", "--text", "{in}/text.txt", "-o", "{out}"],
     "unknown model 'mamba2-huge'"),
    case("calibrate-missing-model-dir", ["calibrate", "--model", "{in}/nowhere", "--text", "{in}/text.txt", "-o", "{out}"],
     "nowhere"),
    case("calibrate-missing-text", ["calibrate", "--model", "mamba2-tiny-g1", "--text", "{in}/none.txt", "-o", "{out}"],
     "none.txt"),
    case("calibrate-num-samples-0", ["calibrate", "--model", "mamba2-tiny-g1", "--text", "{in}/text.txt", "-o", "{out}",
                                 "--num-samples", "0"], "num_samples >= 1"),
    case("calibrate-seq-len-0", ["calibrate", "--model", "mamba2-tiny-g1", "--text", "{in}/text.txt", "-o", "{out}",
                             "--seq-len", "0"], "seq_len >= 1"),
    case("calibrate-head-groups-0", ["calibrate", "--model", "mamba2-tiny-g1", "--text", "{in}/text.txt", "-o", "{out}",
                                 "--head-groups", "0"], "n_head_groups must be a positive integer"),
    case("calibrate-percentile-7", ["calibrate", "--model", "mamba2-tiny-g1", "--text", "{in}/text.txt", "-o", "{out}",
                                "--observer", "percentile", "--percentile", "7"], "percentile must be in (0, 1]"),
    case("calibrate-empty-text", ["calibrate", "--model", "mamba2-tiny-g1", "--text", "{in}/empty.txt",
                                          "-o", "{out}"], "empty.txt holds 0 bytes"),
    case("calibrate-over-a-checkpoint", ["calibrate", "--model", "mamba2-tiny-g1", "--text", "{in}/text.txt",
                                                 "-o", "{in}/ckpt", "--num-samples", "1", "--seq-len", "16"],
         "--force"),
    case("calibrate-over-its-model", ["calibrate", "--model", "{in}/float", "--text", "{in}/text.txt",
                                      "-o", "{in}/float", "--force"], "would overwrite the input"),
    case("calibrate-over-its-text", ["calibrate", "--model", "mamba2-tiny-g1", "--text", "{in}/text.txt", "-o", "{in}/text.txt", "--force"],
         "would overwrite the input"),
    case("calibrate-into-its-model", ["calibrate", "--model", "{in}/float", "--text", "{in}/text.txt",
                                      "-o", "{in}/float/q"], "would overwrite the input"),
    case("calibrate-text-is-a-folder", ["calibrate", "--model", "mamba2-tiny-g1", "--text", "{in}/ckpt", "-o", "{out}"],
         "(it is a folder)"),
    case("calibrate-onnx-folder", ["calibrate", "--model", "{in}/onnx", "--text", "{in}/text.txt", "-o", "{out}"],
         "an exported ONNX directory"),
    case("inspect-missing-dir", ["inspect", "{in}/nowhere"], "nowhere does not exist"),
    case("inspect-a-file", ["inspect", "{in}/text.txt"], "a file; a model is a folder"),
    case("inspect-not-a-checkpoint", ["inspect", "{in}"], "holds no config.json"),
    case("inspect-config-not-json", ["inspect", "{in}/ckpt_config_not_json"], "config.json: not valid JSON"),
    case("inspect-truncated-weights", ["inspect", "{in}/ckpt_truncated"], "model.safetensors: not a readable safetensors"),
    case("inspect-empty-weights", ["inspect", "{in}/ckpt_empty_weights"], "model.safetensors: not a readable safetensors"),
    case("inspect-config-list", ["inspect", "{in}/ckpt_config_list"], "config.json: expected a JSON object"),
    case("export-missing-model", ["export", "{in}/nowhere", "-o", "{out}"], "nowhere"),
    case("export-config-not-json", ["export", "{in}/ckpt_config_not_json", "-o", "{out}"],
         "config.json: not valid JSON"),
    case("export-float-model", ["export", "mamba2-tiny-g1", "-o", "{out}"], "qmamba calibrate"),
    case("export-existing-output", ["export", "{in}/ckpt", "-o", "{in}/onnx"], "--force"),
    case("export-bad-external-data", ["export", "{in}/ckpt", "-o", "{out}", "--external-data", "x"], "invalid choice"),
    case("export-truncated-weights", ["export", "{in}/ckpt_truncated", "-o", "{out}"], "model.safetensors"),
    case("export-empty-weights", ["export", "{in}/ckpt_empty_weights", "-o", "{out}"], "model.safetensors"),
    case("export-config-list", ["export", "{in}/ckpt_config_list", "-o", "{out}"], "config.json"),
    case("export-config-without-config", ["export", "{in}/ckpt_config_no_config", "-o", "{out}"], "config.json"),
    case("export-over-its-model", ["export", "{in}/ckpt", "-o", "{in}/ckpt", "--force"], "would overwrite the input"),
    case("export-unknown-format", ["export", "{in}/ckpt_unknown_format", "-o", "{out}"], "'qmamba-w4a4'"),
    case("export-output-is-a-file", ["export", "{in}/ckpt", "-o", "{in}/text.txt"], "is not a folder"),
    case("check-missing-prefill", ["check", "{in}/ckpt", "{in}/onnx_no_prefill"], "prefill.onnx: no such ONNX file"),
    case("check-junk-prefill", ["check", "{in}/ckpt", "{in}/onnx_junk_prefill"], "not a readable ONNX model"),
    case("check-new-tokens-0", ["check", "{in}/ckpt", "{in}/onnx", "--new-tokens", "0"], "max_new_tokens must be >= 1"),
    case("check-no-export", ["check", "{in}/ckpt", "{in}/nowhere"], "nowhere"),
    case("check-truncated-metadata", ["check", "{in}/ckpt", "{in}/onnx_meta_truncated"], "qmamba_onnx.json"),
    case("check-length-0", ["check", "{in}/ckpt", "{in}/onnx", "--length", "0"], "--length"),
    case("check-negative-offset", ["check", "{in}/ckpt", "{in}/onnx", "--offset", "-5"], "--offset"),
    case("check-truncated-weights", ["check", "{in}/ckpt_truncated", "{in}/onnx"], "model.safetensors"),
    case("check-missing-text", ["check", "{in}/ckpt", "{in}/onnx", "--text", "{in}/none.txt"],
         "none.txt does not exist"),
    case("check-short-text", ["check", "{in}/ckpt", "{in}/onnx", "--text", "{in}/empty.txt"], "holds 0 bytes"),
    case("check-float-model", ["check", "mamba2-tiny-g1", "{in}/onnx"], "qmamba calibrate"),
    case("build-not-an-export", ["build", "{in}", "-o", "{out}"], "no qmamba_onnx.json"),
    case("build-missing-prefill", ["build", "{in}/onnx_no_prefill", "-o", "{out}"], "prefill.onnx is missing"),
    case("build-two-numbers", ["build", "{in}/onnx", "-o", "{out}", "--seq", "1,8"], "expected MIN,OPT,MAX"),
    case("build-not-numbers", ["build", "{in}/onnx", "-o", "{out}", "--batch", "a,b,c"], "expected MIN,OPT,MAX"),
    case("build-truncated-metadata", ["build", "{in}/onnx_meta_truncated", "-o", "{out}"], "qmamba_onnx.json"),
    case("build-nan-parameter", ["build", "{in}/onnx_nan_A_log", "-o", "{out}"], "initializer layers.0.mixer.A_log"),
    case("build-zero-scale", ["build", "{in}/onnx_zero_scale", "-o", "{out}"], "scale layers.1.mixer.x_out_scales"),
    case("build-batch-8-1-0", ["build", "{in}/onnx", "-o", "{out}", "--batch", "8,1,0"], "1 <= MIN <= OPT <= MAX"),
    case("build-seq-0", ["build", "{in}/onnx", "-o", "{out}", "--seq", "0,1,8"], "1 <= MIN <= OPT <= MAX"),
    case("build-existing-output", ["build", "{in}/onnx", "-o", "{in}/ckpt"], "--force"),
    case("build-into-its-export", ["build", "{in}/onnx", "-o", "{in}/onnx/engines"], "would overwrite the input"),
    case("generate-no-engines", ["generate", "{in}", "--prompt", "hi"], "prefill.engine does not exist"),
    case("bench-no-engines", ["bench", "{in}"], "not a `qmamba build` directory"),
    case("eval-window-0", ["eval", "mamba2-tiny-g1", "--text", "{in}/text.txt", "--window", "0"], "window and batch must be >= 1"),
    case("eval-batch-0", ["eval", "mamba2-tiny-g1", "--text", "{in}/text.txt", "--batch", "0"], "window and batch must be >= 1"),
    case("eval-max-bytes-1", ["eval", "mamba2-tiny-g1", "--text", "{in}/text.txt", "--max-bytes", "1"], "--max-bytes must be >= 2"),
    case("eval-empty-text", ["eval", "mamba2-tiny-g1", "--text", "{in}/empty.txt"], "empty.txt holds 0 bytes"),
    case("eval-window-not-int", ["eval", "mamba2-tiny-g1", "--text", "{in}/text.txt", "--window", "x"], "invalid int value"),
    case("eval-unknown-backend", ["eval", "mamba2-tiny-g1", "--text", "{in}/text.txt", "--backend", "tvm"], "invalid choice"),
    case("eval-truncated-metadata", ["eval", "{in}/onnx_meta_truncated", "--text", "{in}/text.txt",
                                             "--backend", "onnxruntime"], "qmamba_onnx.json"),
    case("train-missing-data", ["train", "--data", "{in}/none.txt", "--out", "{out}"], "none.txt does not exist"),
    case("train-steps-0", ["train", "--data", "{in}/text.txt", "--out", "{out}", "--steps", "0"], "--steps must be >= 1"),
    case("train-unknown-variant", ["train", "--data", "{in}/text.txt", "--out", "{out}", "--variant", "x"], "invalid choice"),
    case("train-empty-data", ["train", "--data", "{in}/empty.txt", "--out", "{out}", "--steps", "1"],
         "empty.txt holds 0 bytes"),
    case("train-existing-output", ["train", "--data", "{in}/text.txt", "--out", "{in}/ckpt", "--steps", "1"], "--force"),
    case("train-over-its-data", ["train", "--data", "{in}/text.txt", "--out", "{in}/text.txt", "--steps", "1",
                                 "--force"], "would overwrite the input"),
    case("train-over-its-init", ["train", "--data", "{in}/text.txt", "--out", "{in}/float", "--steps", "1",
                                 "--init", "{in}/float", "--force"], "would overwrite the input"),
    case("train-test-text", ["train", "--data", "{in}/test.txt", "--out", "{out}", "--steps", "1"],
         "test.txt is evaluation text"),
    case("quickstart-existing-output", ["quickstart", "-o", "{in}/ckpt"], "--force"),
    case("quickstart-short-text", ["quickstart", "-o", "{out}", "--text", "{in}/empty.txt"], "holds 0 bytes"),
    case("quickstart-missing-text", ["quickstart", "-o", "{out}", "--text", "{in}/none.txt"], "none.txt does not exist"),
    case("quickstart-over-its-text", ["quickstart", "-o", "{in}/text.txt", "--text", "{in}/text.txt", "--force"],
         "would overwrite the input"),
    case("standin-existing-output", ["standin", "mamba2-130m", "-o", "{in}/ckpt", "--layout", "quamba2",
                                     "--layers", "1"], "--force"),
    case("standin-layers-0", ["standin", "mamba2-130m", "-o", "{out}", "--layers", "0"], "--layers must be >= 1"),
    case("bisect-negative-offset", ["bisect", "{in}/onnx", "--work", "{out}", "--offset", "-1"], "--offset must be >= 0"),
    case("bisect-length-0", ["bisect", "{in}/onnx", "--work", "{out}", "--length", "0"], "--length must be in"),
    case("bisect-short-text", ["bisect", "{in}/onnx", "--work", "{out}", "--text", "{in}/empty.txt"], "holds 0 bytes"),
    case("bisect-existing-work", ["bisect", "{in}/onnx", "--work", "{in}/ckpt"], "--force"),
    case("bisect-work-is-its-export", ["bisect", "{in}/onnx", "--work", "{in}/onnx", "--force"],
         "would overwrite the input"),
]


def _run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's errors
        return e.code


@pytest.mark.parametrize("argv, words", CLI_CASES)
def test_cli_bad_input(inputs, tmp_path, capsys, argv, words):
    work = tmp_path / "inputs"
    shutil.copytree(inputs, work)   # a case that wrongly writes must not spoil the others' inputs
    out = tmp_path / "out"
    before = _hashes(work)
    code = _run_cli([a.format(**{"in": work, "out": out}) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]  # argparse prints its usage first
    assert line.startswith("qmamba") and ": error: " in line and words in line, err
    assert not out.exists()
    assert _hashes(work) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]


# A model of the wrong kind where a float model is expected: a regression would hand its config.json
# to transformers, which builds its default 64-layer, 4096-wide Mamba2 (about 23 GB). These run in a
# child process whose address space is capped, so such a regression fails the test, not the machine.
MEMORY_LIMIT = 3 << 30    # a qmamba command on the tiny models peaks under 1.5 GB of address space
MODEL_KIND_CASES = [
    case("calibrate-w8a8-checkpoint", ["calibrate", "--model", "{in}/ckpt", "--text", "{in}/text.txt", "-o", "{out}"],
         "calibrate takes a float model"),
    case("calibrate-unknown-format", ["calibrate", "--model", "{in}/ckpt_unknown_format", "--text", "{in}/text.txt",
                                      "-o", "{out}"], "key 'format' is 'qmamba-w4a4'"),
    case("calibrate-other-architecture", ["calibrate", "--model", "{in}/llama", "--text", "{in}/text.txt",
                                          "-o", "{out}"], "key 'model_type' is 'llama'"),
    case("eval-unknown-format", ["eval", "{in}/ckpt_unknown_format", "--text", "{in}/text.txt"],
         "key 'format' is 'qmamba-w4a4'"),
    case("eval-other-architecture", ["eval", "{in}/llama", "--text", "{in}/text.txt"], "key 'model_type' is 'llama'"),
    case("train-init-w8a8-checkpoint", ["train", "--data", "{in}/text.txt", "--out", "{out}", "--steps", "1",
                                        "--init", "{in}/ckpt"], "train takes a float model"),
    case("train-init-unknown-format", ["train", "--data", "{in}/text.txt", "--out", "{out}", "--steps", "1",
                                       "--init", "{in}/ckpt_unknown_format"], "key 'format' is 'qmamba-w4a4'"),
    case("quickstart-unknown-format", ["quickstart", "-o", "{out}", "--model", "{in}/ckpt_unknown_format"],
         "key 'format' is 'qmamba-w4a4'"),
]

# Runs each argv of argv[2] (JSON) through qmamba's CLI under an address-space limit of argv[1] bytes;
# prints [{"code", "err"}] as JSON.
_CAPPED_CLI = """
import contextlib, io, json, resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from qmamba.cli import main
results = []
for argv in json.loads(sys.argv[2]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
        except MemoryError:
            code = "MemoryError"
    results.append({"code": code, "err": err.getvalue()})
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def model_kind_runs(inputs, tmp_path_factory):
    """Every MODEL_KIND_CASES row run in one capped child process, each on its own copy of the
    inputs: {case id: (work folder, hashes of its inputs before, exit code, stderr)}."""
    root = tmp_path_factory.mktemp("model_kinds")
    works, argvs = {}, []
    for row in MODEL_KIND_CASES:
        argv, _ = row.values
        work = root / row.id
        shutil.copytree(inputs, work / "inputs")
        works[row.id] = (work, _hashes(work / "inputs"))
        argvs.append([a.format(**{"in": work / "inputs", "out": work / "out"}) for a in argv])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", _CAPPED_CLI, str(MEMORY_LIMIT), json.dumps(argvs)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return {row.id: (*works[row.id], r["code"], r["err"]) for row, r in zip(MODEL_KIND_CASES, results)}


@pytest.mark.parametrize("argv, words", MODEL_KIND_CASES)
def test_model_kind_refused_before_a_model_is_built(model_kind_runs, request, argv, words):
    work, before, code, err = model_kind_runs[request.node.callspec.id]
    assert code == 2, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("qmamba") and ": error: " in line and words in line, err
    assert _hashes(work / "inputs") == before
    assert sorted(p.name for p in work.iterdir()) == ["inputs"]


def _set(name: str, value: float):
    def change(model: onnx.ModelProto) -> None:
        init = next(t for t in model.graph.initializer if t.name == name)
        arr = numpy_helper.to_array(init).copy()
        arr.reshape(-1)[0] = value
        init.CopyFrom(numpy_helper.from_array(arr, name))
    return change


def _drop_input(op: str):
    def change(model: onnx.ModelProto) -> None:
        next(n for n in model.graph.node if n.op_type == op).input.pop(3)
    return change


# (graph, change of the ONNX model, words the error must hold)
GRAPH_CASES = [
    pytest.param("prefill", _set("layers.0.mixer.A_log", np.nan), "initializer layers.0.mixer.A_log", id="nan-A_log"),
    pytest.param("decode", _set("layers.1.mixer.x_out_scales", 0.0), "scale layers.1.mixer.x_out_scales", id="zero-x_out_scales"),
    pytest.param("prefill", _set("lm_head.weight_scale", np.inf), "initializer lm_head.weight_scale", id="inf-weight-scale"),
    pytest.param("prefill", _set("layers.0.mixer.x_scale", -0.1), "scale layers.0.mixer.x_scale", id="negative-x_scale"),
    pytest.param("decode", _set("layers.0.mixer.ssm_state_scale", 0.0), "scale layers.0.mixer.ssm_state_scale",
                 id="zero-ssm_state_scale"),
    pytest.param("prefill", _set("layers.1.mixer.D", np.nan), "initializer layers.1.mixer.D", id="nan-D"),
    pytest.param("prefill", _drop_input("QuantSSD"), "takes 13 inputs", id="missing-ssd-input"),
]


@pytest.mark.parametrize("graph, change, words", GRAPH_CASES)
def test_graph_bad_parameters(inputs, tmp_path, graph, change, words):
    model = onnx.load(str(inputs / "onnx" / f"{graph}.onnx"))
    change(model)
    onnx.save(model, str(tmp_path / f"{graph}.onnx"))
    with pytest.raises(BadInputError, match=words):
        validate_onnx_model(tmp_path / f"{graph}.onnx")


@pytest.fixture(scope="module")
def ort_model(inputs):
    from qmamba.runtime.ort import OrtModel

    model = OrtModel(inputs / "onnx")
    _, states = model.prefill(np.array([[72, 105]]))
    return model, states


def _bad_states(states, layer: int, which: int, change):
    states = list(states)
    pair = list(states[layer])
    pair[which] = change(pair[which])
    states[layer] = tuple(pair)
    return states


# (call, its arguments from the model's batch-1 states, words the error must hold)
FEED_CASES = [
    pytest.param(lambda m, s: m.prefill(np.array([[1, -1]])), r"token ids must be in \[0, 256\)", id="prefill-id-minus-1"),
    pytest.param(lambda m, s: m.prefill(np.array([[256]])), r"token ids must be in \[0, 256\)", id="prefill-id-vocab"),
    pytest.param(lambda m, s: m.prefill(np.zeros((0, 3), np.int64)), r"batch >= 1", id="prefill-batch-0"),
    pytest.param(lambda m, s: m.prefill(np.zeros((1, 0), np.int64)), r"seq >= 1", id="prefill-length-0"),
    pytest.param(lambda m, s: m.prefill(np.array([[0.5, 1.0]])), "must be integers", id="prefill-float-ids"),
    pytest.param(lambda m, s: m.prefill(np.array([1, 2])), r"got \[2\]", id="prefill-rank-1"),
    pytest.param(lambda m, s: m.decode(np.array([261]), s), r"token ids must be in \[0, 256\)", id="decode-id-vocab-5"),
    pytest.param(lambda m, s: m.decode(np.array([1, 2]), s), r"must be int8 \[2,", id="decode-states-of-another-batch"),
    pytest.param(lambda m, s: m.decode(np.array([1]), _bad_states(s, 0, 1, lambda t: t.astype(np.float32))),
                 "layer 0 ssm_state must be int8", id="decode-float-state"),
    pytest.param(lambda m, s: m.decode(np.array([1]), _bad_states(s, 1, 0, lambda t: t[:, :1])),
                 "layer 1 conv_state must be int8", id="decode-short-conv-state"),
    pytest.param(lambda m, s: m.decode(np.array([1]), s[:1]), "states must hold 2 layers", id="decode-missing-layer"),
    pytest.param(lambda m, s: m.decode(np.array([[1, 2]]), s), "one token per batch row", id="decode-two-tokens"),
    pytest.param(lambda m, s: m.generate(np.array([[1]]), 0), "max_new_tokens must be >= 1", id="generate-0-tokens"),
]


@pytest.mark.parametrize("call, words", FEED_CASES)
def test_ort_bad_feeds(ort_model, call, words):
    model, states = ort_model
    with pytest.raises(BadInputError, match=words):
        call(model, states)
