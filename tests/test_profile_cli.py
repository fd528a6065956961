"""`haste-edge profile`: per-layer rows sorted by time, cumulative share, time by op type."""
from __future__ import annotations

import re

from haste_edge import cli


def test_profile_sorted_with_cumulative_share_and_op_types(capsys):
    assert cli.main(["profile", "--runs", "2", "--haste", "L=12,P=4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[1:] if re.match(r"^\S+\s+[A-Z]\w*\s+\d", line)]
    ms = [float(r[2]) for r in rows]
    cum = [float(r[4].rstrip("%")) for r in rows]
    assert ms == sorted(ms, reverse=True) and cum == sorted(cum) and cum[-1] == 100.0
    by_op = next(line for line in lines if line.startswith("by op type:"))
    convs = sum(1 for r in rows if r[1] == "Conv")
    assert f"Conv x{convs} " in by_op
    assert any("executed" in line and "HASTE on" in line for line in lines)
