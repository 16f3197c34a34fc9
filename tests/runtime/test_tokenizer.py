"""Tokenizers: bytes, a real BPE tokenizer trained here with ``tokenizers`` (as tokenizer.json and
as a transformers directory), the choice of a model's tokenizer, and padded-vocabulary masking."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bpe_tokenizer import train_bpe
from qmamba.export.validate import QMambaInputError
from qmamba.tokenizer import (ByteTokenizer, HFTokenizer, copy_tokenizer_files, find_tokenizer,
                              load_tokenizer, mask_padding_logits)


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory) -> Path:
    """A byte-level BPE tokenizer (vocabulary 300 + <|endoftext|>) saved as tokenizer.json."""
    return train_bpe(tmp_path_factory.mktemp("bpe"))


@pytest.fixture(scope="module")
def transformers_dir(bpe_dir, tmp_path_factory) -> Path:
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(bpe_dir / "tokenizer.json"),
                                  eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    d = tmp_path_factory.mktemp("hf_tok")
    tok.save_pretrained(d)
    return d


TEXT = "Speak, speak. You are all resolved rather to die than to famish?\nCaius Marcius: é ü!"


def test_bytes_round_trip():
    t = ByteTokenizer()
    assert t.vocab_size == 256 and t.encode("hé") == [104, 195, 169]
    assert t.decode(t.encode(TEXT)) == TEXT
    assert t.decode([0xff]) == "\ufffd"


def test_bpe_tokenizer_json_round_trips(bpe_dir):
    t = load_tokenizer(str(bpe_dir))
    assert isinstance(t, HFTokenizer) and t.vocab_size == 300
    ids = t.encode(TEXT)
    assert len(ids) < len(TEXT.encode("utf-8")) and max(ids) < t.vocab_size
    assert t.decode(ids) == TEXT
    assert t.eos_token_id == 0            # the first special token of the trainer


def test_transformers_tokenizer_dir_round_trips(transformers_dir):
    t = load_tokenizer(str(transformers_dir))
    assert isinstance(t, HFTokenizer) and t.vocab_size == 300
    assert t.decode(t.encode(TEXT)) == TEXT
    assert (t.eos_token_id, t.pad_token_id) == (0, 0)


def test_find_tokenizer_prefers_argument_then_model_dir_then_bytes(bpe_dir, transformers_dir, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"vocab_size": 304}))
    with pytest.raises(QMambaInputError, match=r"vocabulary of 304 tokens but no tokenizer files; "
                                               r"pass --tokenizer"):
        find_tokenizer(model)
    assert find_tokenizer(model, str(transformers_dir)).vocab_size == 300
    copied = copy_tokenizer_files(transformers_dir, model)
    assert {p.name for p in copied} >= {"tokenizer.json", "tokenizer_config.json"}
    assert find_tokenizer(model).decode(find_tokenizer(model).encode(TEXT)) == TEXT
    byte_model = tmp_path / "bytes"
    byte_model.mkdir()
    (byte_model / "config.json").write_text(json.dumps({"format": "qmamba-w8a8", "config": {"vocab_size": 256}}))
    assert isinstance(find_tokenizer(byte_model), ByteTokenizer)
    assert isinstance(find_tokenizer(model, "bytes"), ByteTokenizer)


def test_unknown_hub_id_offline_names_the_id():
    with pytest.raises(QMambaInputError, match=r"tokenizer 'no-such-org/no-such-tokenizer': not a "
                                               r"local directory"):
        load_tokenizer("no-such-org/no-such-tokenizer", local_files_only=True)


def test_padding_logits_never_win():
    logits = torch.zeros(2, 3, 8)
    logits[..., 6] = 5.0                       # a padding row with the largest logit
    masked = mask_padding_logits(logits, 5)
    assert masked.argmax(-1).max() < 5 and logits[..., 6].eq(5).all()
    probs = torch.softmax(masked, -1)
    assert probs[..., 5:].sum() == 0
    assert torch.multinomial(probs.reshape(-1, 8), 100, replacement=True).max() < 5
    np_masked = mask_padding_logits(logits.numpy(), 5)
    assert np.isneginf(np_masked[..., 5:]).all() and np_masked.argmax(-1).max() < 5
    assert mask_padding_logits(logits, 8) is logits
