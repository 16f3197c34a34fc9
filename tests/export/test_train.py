"""The training script of the shipped models (export/train.py): a few seeded CPU steps on a tiny
config learn real text, the result saves as fp16 safetensors that transformers loads back, and bad
input (test text, unknown variant, wrong shapes, missing file) fails clearly."""
from __future__ import annotations

import json
import math

import pytest
import torch

from qmamba import data
from qmamba.cli import main as cli_main
from qmamba.export import train

# Two layers, 4 heads of 16 in one SSD group: a few milliseconds a step on the CPU.
TINY = dict(hidden_size=32, num_hidden_layers=2, expand=2, num_heads=4, head_dim=16, n_groups=1,
            state_size=16, conv_kernel=4, chunk_size=16)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("train") / "shakespeare.txt"
    path.write_bytes(data.text_file("tinyshakespeare/input.txt").read_bytes()[:20000])
    return path


def run_tiny(text_file, out=None, steps=40, seed=0):
    return train.train(train.make_config(TINY), [text_file], out, seed=seed, steps=steps, batch=4,
                       seq_len=64, lr=3e-3, warmup=5, log_every=1, val_windows=4, log=lambda s: None)


@pytest.fixture(scope="module")
def tiny_run(text_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_out")
    model, summary = run_tiny(text_file, out)
    return model, summary, out


def test_loss_decreases_and_is_in_bits_per_byte(tiny_run):
    _, summary, _ = tiny_run
    losses = [h["train_bpb"] for h in summary["history"]]
    assert len(losses) == summary["steps"] == 40
    # Random init predicts ~uniform bytes: about 8 bits, more with large initial logits.
    assert losses[0] > 7.0
    assert sum(losses[-5:]) / 5 < losses[0] - 2.0
    assert math.isfinite(summary["val_bpb"]) and summary["val_bpb"] < losses[0]


def test_a_padded_vocabulary_trains_on_bytes(text_file):
    """A model with a real model's padded vocabulary (50 288 rows; the configuration matrix of the device
    suite trains one) learns bytes like a 256-row one: the loss is over all of its logits."""
    from transformers import Mamba2Config

    config = Mamba2Config(**{**TINY, "vocab_size": 50288})
    model, summary = train.train(config, [text_file], steps=3, batch=2, seq_len=32, warmup=1, log_every=1,
                                 val_windows=2, log=lambda s: None)
    assert model.config.vocab_size == 50288
    assert math.isfinite(summary["val_bpb"]) and summary["val_bpb"] > 0


def test_same_seed_same_losses(text_file, tiny_run):
    _, summary, _ = tiny_run
    _, again = run_tiny(text_file)
    assert [h["train_bpb"] for h in again["history"]] == [h["train_bpb"] for h in summary["history"]]


def test_saved_fp16_loads_back_with_the_same_function(tiny_run):
    from safetensors import safe_open
    from transformers import Mamba2ForCausalLM

    model, summary, out = tiny_run
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "train_log.json"}
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    loaded = Mamba2ForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    assert loaded.config.vocab_size == 256 and loaded.config.n_groups == 1
    ids = torch.tensor([list(b"To be, or not to be")])
    with torch.no_grad():
        ref = model.float().eval()(input_ids=ids).logits
        got = loaded(input_ids=ids).logits
    # fp16 weights: logits agree to fp16 rounding of the weights, not exactly.
    assert (got - ref).abs().max() < 0.05 * ref.abs().max()
    assert json.loads((out / "train_log.json").read_text())["seed"] == 0


def test_shipped_variants_have_room_for_four_head_groups():
    for name, v in train.VARIANTS.items():
        cfg = train.make_config(name)
        assert cfg.num_heads * cfg.head_dim == cfg.expand * cfg.hidden_size, name
        assert cfg.num_heads // cfg.n_groups >= 4, name
        assert cfg.vocab_size == 256 and cfg.chunk_size == 128
    assert {train.VARIANTS[n]["n_groups"] for n in train.VARIANTS} == {1, 4}


def test_refuses_the_evaluation_text(tmp_path):
    test_txt = tmp_path / "test.txt"
    test_txt.write_bytes(b"evaluation only " * 100)
    with pytest.raises(ValueError, match="refusing to train on .*test.txt"):
        train.load_bytes([test_txt], 0.01)


@pytest.mark.parametrize("bad, message", [
    (dict(TINY, num_heads=3), r"num_heads\*head_dim"),
    (dict(TINY, n_groups=3), "n_groups=3 does not divide num_heads=4"),
])
def test_bad_config(bad, message):
    with pytest.raises(ValueError, match=message):
        train.make_config(bad)


def test_cli_errors(tmp_path, capsys):
    missing = tmp_path / "nope.txt"
    assert cli_main(["train", "--data", str(missing), "--out", str(tmp_path / "o"), "--steps", "1"]) == 2
    assert "nope.txt does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="unknown variant 'mamba2-huge'"):
        train.make_config("mamba2-huge")
    with pytest.raises(ValueError, match="too few"):
        train.sample_batch(torch.arange(10), 2, 64, torch.Generator())


def test_grouped_norm_whatever_the_transformers_version():
    """Some transformers versions normalize the gated norm over all of d_ssm; ensure_grouped_norm
    gives every version Mamba2's per-SSD-group norm, computed here by hand."""
    from transformers import Mamba2ForCausalLM

    from qmamba.models import GroupedGatedRMSNorm, ensure_grouped_norm

    torch.manual_seed(0)
    model = Mamba2ForCausalLM(train.make_config(dict(TINY, n_groups=2))).eval()
    norm = model.backbone.layers[0].mixer.norm
    torch.nn.init.normal_(norm.weight)
    y, z = torch.randn(2, 5, 64), torch.randn(2, 5, 64)
    h = (y * torch.nn.functional.silu(z)).view(2, 5, 2, 32)
    want = norm.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5)).view(2, 5, 64)
    for layer in model.backbone.layers:  # an all-channel norm, as such versions build it
        layer.mixer.norm.group_size = 64
    ensure_grouped_norm(model)
    fixed = model.backbone.layers[0].mixer.norm
    assert isinstance(fixed, GroupedGatedRMSNorm) and fixed.weight is norm.weight
    torch.testing.assert_close(fixed(y, z), want)
    assert ensure_grouped_norm(model).backbone.layers[0].mixer.norm is fixed  # idempotent
