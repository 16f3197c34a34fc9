"""``qmamba calibrate`` and ``qmamba inspect`` end to end on a tiny Hugging Face directory."""
from __future__ import annotations

import json

from qmamba.cli import main
from qmamba.export.checkpoint import load_quantized

from qm_helpers import SHAKESPEARE, tiny_mamba2


def test_calibrate_then_inspect(tmp_path, capsys, shakespeare):
    hf = tmp_path / "hf"
    tiny_mamba2(n_groups=1).save_pretrained(hf)
    out = tmp_path / "q"
    rc = main(["calibrate", "--model", str(hf), "--text", str(SHAKESPEARE), "-o", str(out),
               "--num-samples", "2", "--seq-len", "64", "--observer", "percentile",
               "--percentile", "0.999", "--hadamard"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "head x dim groups" in printed and f"saved {out}" in printed
    model = load_quantized(out)
    c = model.config
    assert (c.ngroups, c.n_head_groups, c.n_dim_groups, c.hadamard) == (1, 4, 4, True)
    assert c.calibration["observer"] == "percentile" and c.calibration["percentile"] == 0.999
    assert main(["inspect", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["format"] == "qmamba" and rep["layers"][1]["x_out_scales_shape"] == [1, 4, 4]


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 2
    assert "holds no config.json" in capsys.readouterr().err
    assert main(["calibrate", "--model", str(tmp_path / "none"), "--text", str(SHAKESPEARE),
                 "-o", str(tmp_path / "o")]) == 2
    assert "qmamba calibrate: error:" in capsys.readouterr().err


def test_cli_error_names_the_command_once(tmp_path, capsys):
    """A library message that starts with its command's name is printed without a second copy."""
    text = tmp_path / "one.txt"
    text.write_bytes(b"a")
    assert main(["eval", "mamba2-tiny-g1", "--text", str(text)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("qmamba eval: error: ") and "eval: eval:" not in err and "error: eval:" not in err
