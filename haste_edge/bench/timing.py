"""The timed loop and its statistics. Long loops print progress to stderr about once a second;
Ctrl-C ends the loop and keeps the runs measured so far."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np


def latency_stats(seconds: list[float], wall_s: float) -> dict:
    """Per-run latency in ms (mean, std, min, max, p50, p90, p99) and throughput over the loop's wall time."""
    if not seconds:
        return {"count": 0}
    ms = np.asarray(seconds) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"count": int(ms.size), "mean_ms": float(ms.mean()), "std_ms": float(ms.std()),
            "min_ms": float(ms.min()), "max_ms": float(ms.max()), "p50_ms": float(p50),
            "p90_ms": float(p90), "p99_ms": float(p99), "wall_s": float(wall_s),
            "inferences_per_s": float(ms.size / wall_s) if wall_s > 0 else None}


class Progress:
    """At most one line per `every` seconds: '<label>: 120/500 runs, 3 s, mean 5.12 ms'."""

    def __init__(self, label: str, total: str, stream=None, every: float = 1.0, clock=time.perf_counter):
        self.label, self.total, self.every, self.clock = label, total, every, clock
        self.stream = stream if stream is not None else sys.stderr
        self.start = self.last = clock()

    def update(self, times: list[float]):
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            mean = sum(times) / len(times) * 1e3 if times else 0.0
            self.stream.write(f"{self.label}: {len(times)}{self.total} runs, {now - self.start:.0f} s, "
                              f"mean {mean:.2f} ms\n")
            self.stream.flush()


@dataclass
class LoopResult:
    times: list[float] = field(default_factory=list)   # seconds per run
    wall_s: float = 0.0
    interrupted: bool = False


def run_loop(step, runs: int | None = None, seconds: float | None = None, label: str = "bench",
             stream=None, clock=time.perf_counter, after_run=None) -> LoopResult:
    """Call step(i) `runs` times, or for `seconds` (at least once); time each call.

    after_run(i) runs after each call, outside its timing. Ctrl-C stops the loop: the result keeps
    the completed runs and says it was interrupted."""
    out = LoopResult()
    total = f"/{runs}" if runs is not None else f" ({seconds:g} s)"
    progress = Progress(label, total, stream, clock=clock)
    start = clock()
    i = 0
    try:
        while (i < runs) if runs is not None else (i == 0 or clock() - start < seconds):
            t0 = clock()
            step(i)
            out.times.append(clock() - t0)
            if after_run is not None:
                after_run(i)
            i += 1
            progress.update(out.times)
    except KeyboardInterrupt:
        out.interrupted = True
    out.wall_s = clock() - start
    return out
