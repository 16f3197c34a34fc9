"""``atomic_output_dir``: refuses existing or overlapping outputs, writes through a temporary
sibling folder, and leaves the previous output intact when the work fails or is interrupted."""
from __future__ import annotations

import os

import pytest

from qmamba.errors import BadInputError, OutputExistsError
from qmamba.output_dir import atomic_output_dir, carry_over


def _write(folder, text="new"):
    (folder / "model.txt").write_text(text)


def _siblings(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir())


def test_writes_a_new_output(tmp_path):
    with atomic_output_dir(tmp_path / "out") as tmp:
        assert tmp.parent == tmp_path and tmp.name != "out" and not any(tmp.iterdir())
        _write(tmp)
        assert not (tmp_path / "out").exists()   # nothing at the output until the work is done
    assert (tmp_path / "out" / "model.txt").read_text() == "new"
    assert _siblings(tmp_path) == ["out"]


def test_creates_missing_parents(tmp_path):
    with atomic_output_dir(tmp_path / "a" / "b" / "out") as tmp:
        _write(tmp)
    assert (tmp_path / "a" / "b" / "out" / "model.txt").is_file()


def test_an_empty_existing_folder_is_reused(tmp_path):
    (tmp_path / "out").mkdir()
    with atomic_output_dir(tmp_path / "out") as tmp:
        _write(tmp)
    assert (tmp_path / "out" / "model.txt").read_text() == "new"


@pytest.mark.parametrize("as_file", [False, True])
def test_refuses_an_existing_output_without_force(tmp_path, as_file):
    out = tmp_path / "out"
    if as_file:
        out.write_text("old")
    else:
        out.mkdir()
        _write(out, "old")
    with pytest.raises(OutputExistsError, match=f"output .*{out.name}.* exists.*--force"):
        with atomic_output_dir(out):
            pytest.fail("the block must not run")
    assert _siblings(tmp_path) == ["out"]


def test_force_replaces_only_on_success(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    _write(out, "old")
    (out / "stale.txt").write_text("from the previous run")
    with atomic_output_dir(out, force=True) as tmp:
        _write(tmp)
        assert (out / "model.txt").read_text() == "old"
    assert sorted(os.listdir(out)) == ["model.txt"] and (out / "model.txt").read_text() == "new"
    assert _siblings(tmp_path) == ["out"]


def test_force_replaces_a_file(tmp_path):
    (tmp_path / "out").write_text("old")
    with atomic_output_dir(tmp_path / "out", force=True) as tmp:
        _write(tmp)
    assert (tmp_path / "out" / "model.txt").read_text() == "new"
    assert _siblings(tmp_path) == ["out"]


@pytest.mark.parametrize("error", [RuntimeError("the work failed"), KeyboardInterrupt()])
def test_failure_keeps_the_previous_output(tmp_path, error):
    out = tmp_path / "out"
    out.mkdir()
    _write(out, "old")
    with pytest.raises(type(error)):
        with atomic_output_dir(out, force=True) as tmp:
            _write(tmp)
            raise error
    assert (out / "model.txt").read_text() == "old"
    assert _siblings(tmp_path) == ["out"]


def test_failure_leaves_no_new_output(tmp_path):
    with pytest.raises(ValueError):
        with atomic_output_dir(tmp_path / "out") as tmp:
            _write(tmp)
            raise ValueError("bad")
    assert _siblings(tmp_path) == []


@pytest.mark.parametrize("where", ["same", "inside", "above"])
def test_refuses_an_output_overlapping_an_input(tmp_path, where):
    model = tmp_path / "hf" / "model"
    model.mkdir(parents=True)
    _write(model, "float")
    out = {"same": model, "inside": model / "quantized", "above": tmp_path / "hf"}[where]
    with pytest.raises(BadInputError, match="would overwrite the input"):
        with atomic_output_dir(out, force=True, inputs=[tmp_path / "text.txt", model]):
            pytest.fail("the block must not run")
    assert (model / "model.txt").read_text() == "float"
    assert sorted(os.listdir(model)) == ["model.txt"]


def test_a_failed_rename_restores_the_previous_output(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    _write(out, "old")
    real_replace = os.replace

    def replace(src, dst):
        if ".partial-" in str(src):
            raise OSError("disk full")
        real_replace(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        with atomic_output_dir(out, force=True) as tmp:
            _write(tmp)
    assert (out / "model.txt").read_text() == "old"
    assert _siblings(tmp_path) == ["out"]


def test_a_failed_run_removes_the_parents_it_created(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_output_dir(tmp_path / "a" / "b" / "out"):
            raise RuntimeError("the work failed")
    assert _siblings(tmp_path) == []


def test_carry_over_copies_the_named_files_of_the_previous_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "timing.cache").write_bytes(b"tactics")
    (out / "prefill.engine").write_bytes(b"old engine")
    with atomic_output_dir(out, force=True) as tmp:
        assert carry_over(out, tmp, ["timing.cache", "absent.cache"]) == [tmp / "timing.cache"]
        (tmp / "prefill.engine").write_bytes(b"new engine")
    assert (out / "timing.cache").read_bytes() == b"tactics"
    assert (out / "prefill.engine").read_bytes() == b"new engine"
