"""The SASS instructions where a kernel's warps stalled most, from Nsight Compute's source page:

    ncu -i REPORT.ncu-rep --page source --print-source sass --csv > sass.csv
    python scripts/ncu_hotspots.py sass.csv [--top 30]

Prints, per kernel in the file, each of the top instructions' share of the warp stall samples (all samples,
then not-issued), the stall reason with most samples there (ncu's `stall_*` columns), its address and text.
A header row (one with a "Source" column) starts a kernel's table; rows that are not part of a table (kernel
names) are echoed as they come. A table equal to the one before it is left out (ncu's source page lists
some kernels' tables twice).
"""
from __future__ import annotations

import argparse
import csv
import pathlib


def _col(header: list[str], *names: str) -> int | None:
    for name in names:
        for i, h in enumerate(header):
            if h.strip() == name:
                return i
    for name in names:
        for i, h in enumerate(header):
            if name.lower() in h.lower():
                return i
    return None


def _number(cell: str) -> float:
    try:
        return float(cell.replace(",", ""))
    except ValueError:
        return 0.0


def _top_reason(header: list[str], row: list[str]) -> str:
    """The stall_* column (issued or not) with the most samples in this row, without its prefix."""
    cols = [(i, h.strip()) for i, h in enumerate(header) if h.strip().startswith("stall_") and "Not Issued" not in h]
    best = max(cols, key=lambda c: _number(row[c[0]]), default=None)
    return best[1][len("stall_"):] if best is not None and _number(row[best[0]]) > 0 else "-"


def report(rows: list[list[str]], top: int) -> None:
    header, table, last = None, [], None

    def flush() -> None:
        nonlocal last
        if header is None or not table:
            return
        if table == last:
            print("  (the same table again)")
            return
        last = table
        src = _col(header, "Source")
        addr = _col(header, "# Address", "Address")
        all_s = _col(header, "Warp Stall Sampling (All Samples)")
        not_issued = _col(header, "Warp Stall Sampling (Not-issued Samples)", "Not-issued")
        if all_s is None:
            print("  (no warp stall sampling column: collect with --section SourceCounters)")
            return
        total = sum(_number(r[all_s]) for r in table) or 1.0
        total_ni = sum(_number(r[not_issued]) for r in table) if not_issued is not None else 0.0
        print(f"  {len(table)} instructions, {total:.0f} stall samples ({total_ni:.0f} not issued)")
        for r in sorted(table, key=lambda r: -_number(r[all_s]))[:top]:
            ni = f" {_number(r[not_issued]) / (total_ni or 1):6.1%}" if not_issued is not None else ""
            print(f"  {_number(r[all_s]) / total:6.1%}{ni}  {_top_reason(header, r):<16} "
                  f"{r[addr] if addr is not None else '':>6}  {r[src].strip()}")

    for r in rows:
        if any(c.strip() == "Source" for c in r):
            flush()
            header, table = r, []
        elif header is not None and len(r) == len(header):
            table.append(r)
        else:
            flush()
            header, table = None, []
            if any(c.strip() for c in r):
                print(" ".join(c.strip() for c in r if c.strip()))
    flush()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", type=pathlib.Path)
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    with args.csv.open(newline="", errors="replace") as f:
        report(list(csv.reader(f)), args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
