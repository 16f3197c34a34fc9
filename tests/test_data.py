"""qmamba.data: the shipped text samples and the QMAMBA_DATA folder that overrides them."""
from __future__ import annotations

import pytest

from qmamba import data

SAMPLES = ("tinyshakespeare/input.txt", "wikitext-2/valid.txt", "wikitext-2/test.txt")


@pytest.mark.parametrize("name", SAMPLES)
def test_samples_ship_with_the_package(name, monkeypatch):
    monkeypatch.delenv("QMAMBA_DATA", raising=False)
    path = data.text_file(name)
    assert path == data.SAMPLES_DIR / name
    # at least the bytes the calibration, checks and README figures read
    assert path.stat().st_size >= (131073 if name.endswith("test.txt") else 65536)


def test_qmamba_data_takes_precedence_where_it_holds_the_file(tmp_path, monkeypatch):
    (tmp_path / "wikitext-2").mkdir()
    (tmp_path / "wikitext-2" / "valid.txt").write_bytes(b"full corpus\n")
    monkeypatch.setenv("QMAMBA_DATA", str(tmp_path))
    assert data.text_file("wikitext-2/valid.txt") == tmp_path / "wikitext-2" / "valid.txt"
    assert data.text_file("wikitext-2/test.txt") == data.SAMPLES_DIR / "wikitext-2" / "test.txt"


def test_unknown_text_names_the_folders_looked_in(tmp_path, monkeypatch):
    monkeypatch.setenv("QMAMBA_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"'no/such\.txt' in .*, .*QMAMBA_DATA"):
        data.text_file("no/such.txt")
    with pytest.raises(ValueError, match="relative"):
        data.text_file(str(tmp_path / "x.txt"))
