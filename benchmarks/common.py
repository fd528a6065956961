"""Shared benchmark plumbing: machine header, onnxruntime sessions, interleaved timing."""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "tests"))  # model_zoo builds/caches the exported test models


def header() -> str:
    """The engine's machine header (haste_edge.bench.machine) plus the onnxruntime version."""
    import onnxruntime

    from haste_edge.bench.machine import header_lines, machine_info
    return "; ".join(header_lines(machine_info())) + f"; onnxruntime {onnxruntime.__version__}"


def ort_session(path, threads: int):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # Its idle workers would otherwise spin after every run and steal the core our next run needs
    # (interleaved timing); haste-edge's spin a bounded while (jit.py: GOMP_SPINCOUNT), then sleep.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


# Idle time before each timed call: a runtime whose worker threads spin after a call (haste-edge's
# OpenMP workers do, briefly: jit.py) must not steal the next call's cores, whoever's it is.
GAP_S = 0.002


def interleaved(fns: dict, runs: int, warmup: int = 3, gap: float = GAP_S) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved so machine noise hits all alike,
    each after `gap` seconds idle."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            time.sleep(gap)
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def write_results(name: str, lines: list[str], doc: dict) -> None:
    """results/<name>.md (the table lines) and results/<name>.json (doc); the table is printed too."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    print("\n".join(lines))


def pyplot():
    """matplotlib.pyplot drawing to files, or None (with a note) when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return None
    return plt
