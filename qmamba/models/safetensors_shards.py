"""Writing a large state dict piece by piece as Hugging Face's sharded safetensors.

``ShardWriter(directory)`` takes tensors with ``add(name, tensor)`` and writes a shard each time
the pending tensors pass ``max_shard_bytes``, so a model never has to be whole in memory.
``close()`` names the shards ``model-0000i-of-0000n.safetensors`` with a
``model.safetensors.index.json`` (``metadata.total_size``, ``weight_map``), or one
``model.safetensors`` when everything fit one shard: the layout ``from_pretrained`` reads.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


class ShardWriter:
    def __init__(self, directory, max_shard_bytes: int = 2 << 30, metadata: dict | None = None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_shard_bytes = max_shard_bytes
        self.metadata = {"format": "pt", **(metadata or {})}
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: list[list[str]] = []     # tensor names of each written shard
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name in self._pending or any(name in shard for shard in self._shards):
            raise ValueError(f"tensor {name} written twice")
        t = tensor.detach().contiguous()
        self._pending[name] = t
        self._pending_bytes += t.numel() * t.element_size()
        if self._pending_bytes >= self.max_shard_bytes:
            self._flush()

    def _temp_name(self, i: int) -> Path:
        return self.directory / f"shard-{i:05d}.safetensors.partial"

    def _flush(self) -> None:
        from safetensors.torch import save_file

        if not self._pending:
            return
        save_file(self._pending, str(self._temp_name(len(self._shards))), metadata=self.metadata)
        self._shards.append(list(self._pending))
        self.total_bytes += self._pending_bytes
        self._pending, self._pending_bytes = {}, 0

    def close(self) -> list[Path]:
        """Writes what is pending and gives the shards their final names; returns their paths."""
        self._flush()
        n = len(self._shards)
        if n == 1:
            final = [self.directory / SINGLE]
        else:
            final = [self.directory / f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        for i, path in enumerate(final):
            self._temp_name(i).replace(path)
        if n > 1:
            weight_map = {name: path.name for path, shard in zip(final, self._shards) for name in shard}
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
            (self.directory / INDEX).write_text(json.dumps(index, indent=2))
        return final


def safetensors_files(directory) -> list[Path]:
    """The safetensors files of a checkpoint directory: the shards its index names, or the one file."""
    d = Path(directory)
    if (d / INDEX).is_file():
        weight_map = json.loads((d / INDEX).read_text())["weight_map"]
        return [d / name for name in dict.fromkeys(weight_map.values())]
    return [d / SINGLE] if (d / SINGLE).is_file() else []
