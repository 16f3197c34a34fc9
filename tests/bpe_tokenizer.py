"""A real byte-level BPE tokenizer trained in the test run with ``tokenizers`` on the shipped text
(no download): what a model with a non-byte vocabulary carries."""
from __future__ import annotations

import json
from pathlib import Path

SHIPPED_TEXT = Path(__file__).resolve().parents[1] / "qmamba" / "data" / "tinyshakespeare" / "input.txt"
PARAGRAPH = (
    "First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. First "
    "Citizen: You are all resolved rather to die than to famish? All: Resolved. resolved. First "
    "Citizen: First, you know Caius Marcius is chief enemy to the people. All: We know't, we "
    "know't. First Citizen: Let us kill him, and we'll have corn at our own price. Is't a verdict? "
    "All: No more talking on't; let it be done: away, away! Second Citizen: One word, good citizens. "
)


def training_text() -> str:
    if SHIPPED_TEXT.is_file():
        return SHIPPED_TEXT.read_text(encoding="utf-8")[:16384]
    return PARAGRAPH * 20


def train_bpe(directory: Path, vocab_size: int = 300) -> Path:
    """tokenizer.json (vocab_size tokens, ``<|endoftext|>`` first) + special_tokens_map.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([training_text()], trainer)
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "special_tokens_map.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    return directory
