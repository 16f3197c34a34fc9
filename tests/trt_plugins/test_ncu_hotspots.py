"""scripts/ncu_hotspots.py on a small table in the layout of `ncu --page source --print-source sass --csv`."""
from __future__ import annotations

import csv
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
HEADER = ('"Address","Source","Warp Stall Sampling (All Samples)","Warp Stall Sampling (Not-issued Samples)",'
          '"stall_long_sb","stall_wait","stall_long_sb (Not Issued)"')
TABLE = [HEADER,
         '"0x10","LDG.E R2, desc[UR4][R4.64]","10","2","1","9","0"',
         '"0x20","MUFU.RCP R3, R2","60","50","55","5","50"',
         '"0x30","EXIT","0","0","0","0","0"',
         '"0x40","FMUL R5, R3, R3","30","20","0","30","0"']


def _module():
    spec = importlib.util.spec_from_file_location("ncu_hotspots", ROOT / "scripts" / "ncu_hotspots.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_top_instructions_their_shares_and_reasons(capsys):
    """Ordered by stall samples, each with its share, its not-issued share and its main reason; a table that
    repeats the one before is named, not printed again."""
    kernel = '"Kernel Name","void k<1>(Args)",'
    lines = [kernel, *TABLE, kernel, *TABLE]
    _module().report(list(csv.reader(lines)), top=2)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Kernel Name void k<1>(Args)"
    assert out[1] == "  4 instructions, 100 stall samples (72 not issued)"
    assert out[2].split() == ["60.0%", "69.4%", "long_sb", "0x20", "MUFU.RCP", "R3,", "R2"]
    assert out[3].split()[:4] == ["30.0%", "27.8%", "wait", "0x40"]
    assert out[4:] == ["Kernel Name void k<1>(Args)", "  (the same table again)"]
