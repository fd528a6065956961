"""A seeded, bounded fuzz run (300 mutated model files, in-process with a 256 MiB memory limit).

The long run is tools/fuzz_models.py (a worker process with RLIMIT_AS and timeouts, >= 5,000 cases).
"""
from __future__ import annotations

import collections

import pytest

from haste_edge import limits
from tools.fuzz_cases import make_case
from tools.fuzz_models import CASE_LIMIT, run_case_inprocess

CASES = 300
FINDINGS = ("bug", "memory", "nan_ort_refuses")


@pytest.fixture
def fuzz_limit():
    limits.set_max_bytes(CASE_LIMIT)
    yield
    limits.set_max_bytes(None)


def test_fuzz_quick(fuzz_limit):
    results = [run_case_inprocess(make_case(2024, i), i) for i in range(CASES)]
    counts = collections.Counter(r["outcome"] for r in results)
    findings = [f"{r['case']}: {r['outcome']}: {r['detail']}" for r in results if r["outcome"] in FINDINGS]
    assert not findings, "\n".join(findings)
    # the mix must exercise both sides: files that load and run, and files refused
    assert counts["ok"] >= 30 and counts["refused"] >= 150, counts
    families = {r["case"].split(":")[0] for r in results}
    assert {"onnx", "haste_json", "haste_npz", "byte_flip", "truncate", "external_data"} <= families


def test_cases_are_deterministic():
    a, b = make_case(5, 17), make_case(5, 17)
    assert (a.name, a.files) == (b.name, b.files)
