"""TensorRT's per-layer times (``qmamba bench --profile``) grouped by what a layer is, across the model's layers.

The runner's profile (``Engine::profileLayers``) lists every TensorRT layer of an engine with its time, a 2.7b
prefill some 2600 of them. Summed over the layers of the model, the same node of each block (``layers.12.mixer.ssd``,
``layers.40.mixer.ssd``) is one line (``layers.*.mixer.ssd``, 64 layers): where the time goes, in a screenful.
"""
from __future__ import annotations

import re
from typing import NamedTuple

# A section's title line, as the runner writes it: "<title>: N layers, X ms per run (mean of K)".
_TITLE = re.compile(r"^(?P<title>.+?): (?P<layers>\d+) layers, (?P<ms>[0-9.]+) ms per run \(mean of (?P<iters>\d+)\)$")
_LAYER = re.compile(r"^\s*(?P<ms>[0-9.]+) ms\s+[0-9.]+%\s+(?P<name>.+)$")
# What differs between the copies of one node in the model's blocks, or between TensorRT's clones of it.
_NORMALIZE = ((re.compile(r"\blayers\.\d+\."), "layers.*."),
              (re.compile(r"\(Unnamed Layer\* \d+\)"), "(Unnamed Layer)"),
              (re.compile(r"_clone_\d+"), "_clone"),
              (re.compile(r"(?<=[A-Za-z])_\d+\b"), ""),
              (re.compile(r"\.\d+(?=[/ .\]]|$)"), ".#"))


class Section(NamedTuple):
    title: str       # e.g. "prefill, batch 1, seqlen 2048"
    ms_per_run: float
    layers: list     # [(name, ms per run)] in the runner's order (slowest first)


class Group(NamedTuple):
    name: str        # the layer name with block numbers and clone suffixes taken out
    ms_per_run: float
    count: int


def parse(text: str) -> list[Section]:
    """The sections of a runner's profile text (prefill, decode step), each with its layers."""
    sections = []
    for line in text.splitlines():
        title = _TITLE.match(line.strip())
        if title:
            sections.append(Section(title["title"], float(title["ms"]), []))
            continue
        layer = _LAYER.match(line)
        if layer and sections:
            sections[-1].layers.append((layer["name"], float(layer["ms"])))
    return sections


def group_name(layer: str) -> str:
    for pattern, repl in _NORMALIZE:
        layer = pattern.sub(repl, layer)
    return layer


def groups(section: Section) -> list[Group]:
    """The section's layers summed by group_name, slowest group first."""
    total, count = {}, {}
    for name, ms in section.layers:
        key = group_name(name)
        total[key] = total.get(key, 0.0) + ms
        count[key] = count.get(key, 0) + 1
    return sorted((Group(k, total[k], count[k]) for k in total), key=lambda g: -g.ms_per_run)


def summary(text: str, top: int = 25) -> str:
    """Each section's ``top`` groups: ms a run, share of the section, how many layers, the group's name."""
    lines = []
    for s in parse(text):
        gs = groups(s)
        lines.append(f"{s.title}: {s.ms_per_run:.4f} ms per run in {len(s.layers)} layers, {len(gs)} groups"
                     f"{f' (the {top} slowest)' if len(gs) > top else ''}")
        for g in gs[:top]:
            share = g.ms_per_run / s.ms_per_run if s.ms_per_run > 0 else 0.0
            lines.append(f"{g.ms_per_run:10.4f} ms {share:7.2%} {g.count:5d} x  {g.name}")
    return "\n".join(lines)
