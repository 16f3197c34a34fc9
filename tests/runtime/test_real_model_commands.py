"""Models in their users' layouts through the command line: a narrow float Mamba2 in mamba_ssm's
layout and a narrow Quamba2 W8A8 checkpoint with 8 SSD groups (both written here by the stand-in
writer), each with a BPE tokenizer trained here, through inspect, calibrate, export, check, eval,
generate (ONNX Runtime) and quickstart."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bpe_tokenizer import SHIPPED_TEXT, train_bpe
from qmamba.cli import main
from qmamba.models.real_configs import real_config
from qmamba.models.standin import write_standin
from qmamba.tokenizer import copy_tokenizer_files, load_tokenizer

PROMPT = "ROMEO: What light"
EVAL_BYTES = 1200


def narrow_config(ngroups: int, headdim: int) -> dict:
    """130m's configuration at toy width: d_model 64, 2 layers, d_state 16, vocab 300 -> 304."""
    c = real_config("mamba2-130m")
    c.update(d_model=64, n_layer=2, vocab_size=300, tie_embeddings=ngroups == 1)
    c["ssm_cfg"].update(headdim=headdim, d_state=16, ngroups=ngroups, chunk_size=32)
    return c


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """bpe/ (tokenizer), float/ (mamba_ssm layout, carries the tokenizer), quamba2/ (8 SSD groups,
    carries none), text.txt and quickstart.txt (a few KB of the shipped text)."""
    root = tmp_path_factory.mktemp("real_models")
    bpe = train_bpe(root / "bpe")
    write_standin(narrow_config(1, 16), root / "float", "mamba_ssm", seed=1)
    copy_tokenizer_files(bpe, root / "float")
    write_standin(narrow_config(8, 4), root / "quamba2", "quamba2", seed=2)
    (root / "text.txt").write_bytes(SHIPPED_TEXT.read_bytes()[:3000])
    (root / "quickstart.txt").write_bytes(SHIPPED_TEXT.read_bytes()[:6000])   # its check reads from byte 4096
    return root


def _cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_mamba_ssm_float_model_through_every_command(work, capsys):
    text, ckpt, onnx_dir = work / "text.txt", work / "ssm_ckpt", work / "ssm_onnx"
    rc, _, err = _cli(capsys, "inspect", work / "float")
    assert rc == 2 and "float model (mamba_ssm-mamba2) and has no scales" in err
    rc, out, err = _cli(capsys, "calibrate", "--model", work / "float", "--text", text, "-o", ckpt,
                        "--num-samples", 4, "--seq-len", 64)
    assert rc == 0, err
    assert (ckpt / "tokenizer.json").is_file()       # the tokenizer travels with the checkpoint
    rc, out, _ = _cli(capsys, "inspect", ckpt)
    assert rc == 0 and "(qmamba, 2 layers)" in out
    rc, out, err = _cli(capsys, "export", ckpt, "-o", onnx_dir)
    assert rc == 0, err
    meta = json.loads((onnx_dir / "qmamba_onnx.json").read_text())
    assert meta["tokenizer"]["kind"] == "huggingface" and meta["tokenizer"]["vocab_size"] == 300
    assert meta["config"]["vocab_size"] == 304 and (onnx_dir / "tokenizer.json").is_file()
    rc, out, err = _cli(capsys, "check", ckpt, onnx_dir, "--text", text, "--offset", 100, "--length", 48,
                        "--new-tokens", 8)
    assert rc == 0, out + err
    assert "48 tokens from byte 100" in out and "greedy 8 tokens: identical" in out
    results = {}
    for model, backend in ((ckpt, "torch"), (onnx_dir, "onnxruntime"), (work / "float", "torch")):
        rc, out, err = _cli(capsys, "eval", model, "--backend", backend, "--text", text, "--window", 128,
                            "--max-bytes", EVAL_BYTES, "--json", "--no-progress")
        assert rc == 0, err
        results[backend if model != work / "float" else "float"] = json.loads(out)
    tok = load_tokenizer(str(work / "bpe"))
    data = text.read_bytes()[:EVAL_BYTES]
    ids = tok.encode(data.decode())
    for r in results.values():
        assert r["tokens_scored"] == len(ids) - 1
        assert r["bytes_scored"] == len(data) - len(tok.decode(ids[:1]).encode())
        assert r["bits_per_byte"] == pytest.approx(r["bits_per_token"] * r["tokens_scored"] / r["bytes_scored"])
        # random weights: close to uniform over the 300 real tokens (padding rows masked)
        assert r["bits_per_token"] == pytest.approx(np.log2(300), abs=0.2)
    assert results["torch"]["bits_per_byte"] == pytest.approx(results["onnxruntime"]["bits_per_byte"], rel=1e-4)


def test_quamba2_checkpoint_through_every_command(work, capsys):
    q, onnx_dir, text, bpe = work / "quamba2", work / "q_onnx", work / "text.txt", work / "bpe"
    rc, out, _ = _cli(capsys, "inspect", q)
    assert rc == 0 and "(quamba2, 2 layers)" in out and "SSD group x head x dim groups" in out
    rc, out, err = _cli(capsys, "export", q, "-o", work / "q_onnx_bare")
    assert rc == 0 and "holds no tokenizer and none was given" in out, err
    assert "tokenizer" not in json.loads((work / "q_onnx_bare" / "qmamba_onnx.json").read_text())
    rc, out, err = _cli(capsys, "export", q, "-o", onnx_dir, "--tokenizer", bpe)
    assert rc == 0, err
    assert (onnx_dir / "tokenizer.json").is_file()
    rc, out, err = _cli(capsys, "check", q, onnx_dir, "--text", text, "--length", 32, "--new-tokens", 4)
    assert rc == 2 and "vocabulary of 300 tokens but no tokenizer files; pass --tokenizer" in err
    rc, out, err = _cli(capsys, "check", q, onnx_dir, "--text", text, "--offset", 0, "--length", 32,
                        "--new-tokens", 4, "--tokenizer", bpe)
    assert rc == 0, out + err
    rc, _, err = _cli(capsys, "eval", q, "--text", text, "--no-progress")
    assert rc == 2 and "vocabulary of 300 tokens but no tokenizer files; pass --tokenizer" in err
    rc, out, err = _cli(capsys, "eval", q, "--text", text, "--tokenizer", bpe, "--window", 128, "--json",
                        "--max-bytes", EVAL_BYTES, "--no-progress")
    assert rc == 0, err
    torch_bpb = json.loads(out)["bits_per_byte"]
    rc, out, err = _cli(capsys, "eval", onnx_dir, "--backend", "onnxruntime", "--text", text, "--window", 128,
                        "--max-bytes", EVAL_BYTES, "--json", "--no-progress")
    assert rc == 0, err
    assert json.loads(out)["bits_per_byte"] == pytest.approx(torch_bpb, rel=1e-4)


def test_bpe_prompt_round_trips_through_onnx_runtime_generation(work, capsys):
    from qmamba.runtime.generate import generate
    from qmamba.runtime.ort import OrtModel, OrtStepper

    onnx_dir = work / "gen_onnx"
    assert main(["export", str(work / "quamba2"), "-o", str(onnx_dir), "--tokenizer", str(work / "bpe")]) == 0
    capsys.readouterr()
    rc, out, err = _cli(capsys, "generate", onnx_dir, "--prompt", PROMPT, "--tokens", 12)
    assert rc == 0, err
    tok = load_tokenizer(str(onnx_dir))
    ids = list(generate(OrtStepper(OrtModel(onnx_dir)), tok.encode(PROMPT), 12, real_vocab=tok.vocab_size))
    assert max(ids) < 300                                   # never a padding row
    assert out == PROMPT + tok.decode(ids) + "\n"
    assert tok.decode(tok.encode(out[:-1])) == out[:-1]    # text -> tokens -> text


def test_generate_never_picks_a_padding_row():
    from qmamba.runtime.generate import generate

    class Session:
        vocab = 8

        def prefill(self, ids):
            return np.array([[0, 1, 2, 3, 4, 0, 9, 9]], dtype=np.float32)    # rows 6, 7: padding

        def decode(self, tokens, use_graph=True):
            return self.prefill(None)

    assert list(generate(Session(), [1, 2], 3, real_vocab=6)) == [4, 4, 4]
    assert list(generate(Session(), [1, 2], 2, temperature=1.0, real_vocab=6, seed=3)) != []
    assert all(t < 6 for t in generate(Session(), [1], 50, temperature=5.0, real_vocab=6))


def test_quickstart_takes_a_mamba_ssm_model(work, capsys):
    out_dir = work / "qs"
    rc, out, err = _cli(capsys, "quickstart", "--model", work / "float", "--text", work / "quickstart.txt",
                        "-o", out_dir, "--num-samples", 2, "--seq-len", 64)
    assert rc in (0, 1), err
    assert "mamba_ssm-mamba2" in out and "tokenizer" in out
    for step in ("[1/4] calibrating", "[2/4] scale report", "[3/4] exported", "[4/4] PyTorch reference"):
        assert step in out
    assert (out_dir / "checkpoint" / "tokenizer.json").is_file() and (out_dir / "onnx" / "tokenizer.json").is_file()


def test_quickstart_takes_a_quamba2_checkpoint(work, capsys):
    q = work / "quamba2_tok"
    write_standin(narrow_config(8, 4), q, "quamba2", seed=2)
    copy_tokenizer_files(work / "bpe", q)
    rc, out, err = _cli(capsys, "quickstart", "--model", q, "--text", work / "quickstart.txt", "-o", work / "qs2")
    assert rc in (0, 1), err
    assert "[1/4]" in out and "already W8A8 (quamba2-w8a8): no calibration" in out
    assert "[4/4] PyTorch reference" in out and not (work / "qs2" / "checkpoint").exists()
