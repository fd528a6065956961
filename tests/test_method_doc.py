"""Citations of the method document name docs/METHOD.md and a section it has."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "METHOD.md"
# Recorded outputs of past runs (benchmarks/results) are left as they were printed.
SOURCES = [ROOT / "README.md", *ROOT.glob("haste_edge/**/*.py"), *ROOT.glob("converters/*.py"),
           *ROOT.glob("benchmarks/*.py"), *ROOT.glob("tools/**/*.py")]


def test_every_citation_names_an_existing_section():
    sections = set(re.findall(r"^## (\d+)\. ", DOC.read_text(), flags=re.M))
    assert sections == {"1", "2", "3", "4"}
    cited = 0
    for path in SOURCES:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bMETHOD\s*=|=\s*METHOD\b", line):  # the Python name in energy/estimate.py
                continue
            for m in re.finditer(r"(docs/)?METHOD(\.md)?( section (\d+))?", line):
                assert m.group(1) and m.group(2) and m.group(4) in sections, f"{path}:{n}: {line.strip()}"
                cited += 1
    assert cited >= 10


def test_energy_estimate_line_cites_the_energy_table():
    from haste_edge.energy.estimate import METHOD, PJ_FP32_ADD, PJ_FP32_MULT
    assert "docs/METHOD.md section 4" in METHOD
    table = DOC.read_text().split("## 4.")[1]
    assert f"| 32-bit float add | {PJ_FP32_ADD} |" in table and f"| 32-bit float multiply | {PJ_FP32_MULT} |" in table
