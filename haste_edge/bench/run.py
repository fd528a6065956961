"""One benchmark of one model: every figure `haste-edge bench` prints, gathered into one dict.

Order: load; first inference (Numba compiles or loads kernels) and second inference, each watched by
JitWatch; one untimed run per input for the MAC counts; warm-up runs; an idle window for the energy
meter; the timed loop. Ctrl-C at any point returns what has been gathered, marked interrupted.
"""
from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass

import numpy as np

from haste_edge.bench.inputs import make_inputs
from haste_edge.bench.jitwatch import timed
from haste_edge.bench.machine import machine_info
from haste_edge.bench.timing import latency_stats, run_loop

FORMAT = "haste-edge bench"
FORMAT_VERSION = 1


@dataclass
class BenchOptions:
    runs: int | None = 100
    seconds: float | None = None
    warmup: int = 5
    input: str | None = None          # see inputs.make_inputs
    idle_seconds: float = 2.0
    probe: dict | None = None         # keyword arguments for energy.probe_meter (sysfs roots, command)


def peak_rss_mib() -> float:
    """Peak resident set size of this process (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2 ** 20 if sys.platform == "darwin" else 2 ** 10)


def spread(values) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max())}


def _mac_counts(model, feeds) -> tuple[dict, np.ndarray]:
    """MACs per input, from one run of each: summary dict and an (inputs, 2) table of
    (executed MACs, overhead ops) for the energy estimate."""
    rows = []
    for f in feeds:
        model.run(f)
        st = model.last_stats()
        rows.append((st.dense().sum(), st.executed().sum(), st.overhead().sum(),
                     st.reduction().mean(), st.reduction(True).mean()))
    a = np.array(rows, dtype=np.float64)
    summary = {"inputs": len(feeds), "dense": spread(a[:, 0]), "executed": spread(a[:, 1]),
               "overhead_ops": spread(a[:, 2]), "saved": spread(a[:, 3]),
               "saved_with_overhead": spread(a[:, 4])}
    return summary, a[:, 1:3]


def _energy(meter, probe, idle_w, idle_window, joules, window, runs) -> dict:
    out = {"method": meter.method, "measured": meter.measured, "inferences": runs,
           "window_s": window, "gross_j_total": joules, "gross_j_per_inference": joules / runs,
           "tried": [{"source": s, "reason": r} for s, r in probe.tried], "meter": meter.info()}
    if meter.measured:
        net = joules - idle_w * window
        out.update(idle_w=idle_w, idle_window_s=idle_window, mean_w=joules / max(window, 1e-9),
                   net_j_per_inference=net / runs)
    else:   # counted arithmetic has no idle share: gross and net are the same estimate
        out.update(idle_w=None, idle_window_s=0.0, mean_w=None, net_j_per_inference=joules / runs)
    return out


def run_bench(model_path=None, haste: str | None = None, opts: BenchOptions | None = None,
              stream=None, clock=time.perf_counter, httm: str | None = None) -> dict:
    from haste_edge import DEFAULT_MODEL, load
    from haste_edge.energy import MeterUnavailable, measure_idle_watts, probe_meter
    from haste_edge.jit import CACHE_DIR
    opts = opts or BenchOptions()
    res = {"format": FORMAT, "version": FORMAT_VERSION, "interrupted": False,
           "model": {"path": str(model_path or DEFAULT_MODEL), "haste": haste, "httm": httm},
           "settings": {"runs": opts.runs, "seconds": opts.seconds, "warmup": opts.warmup,
                        "batch": 1, "idle_seconds": opts.idle_seconds}}
    meter = None
    try:
        t0 = clock()
        model = load(model_path)
        if haste:
            res["model"]["haste_convs"] = len(model.set_haste(haste))
        if httm:
            res["model"]["httm_layers"] = len(model.set_httm(httm))
        res["load_s"] = clock() - t0
        res["peak_rss_after_load_mib"] = peak_rss_mib()
        inputs, res["settings"]["input"] = make_inputs(model, opts.input)
        name = model.input_names[0]
        feeds = [{name: x} for x in inputs]

        first_s, jit1 = timed(lambda: model.run(feeds[0]))
        second_s, jit2 = timed(lambda: model.run(feeds[0]))
        res["startup"] = {"first_inference_s": first_s, "second_inference_s": second_s,
                          "compile_estimate_s": first_s - second_s, "first_jit": jit1.as_dict(),
                          "second_jit": jit2.as_dict(), "numba_cache_dir": CACHE_DIR}
        res["machine"] = machine_info()     # after a parallel kernel ran: threading layer known
        res["arena_mib"] = model.last_plan.arena_bytes / 2 ** 20
        res["kernel_state_mib"] = model.kernel_state_bytes() / 2 ** 20
        res["macs"], ops_per_input = _mac_counts(model, feeds)

        n = len(feeds)
        warm = run_loop(lambda i: model.run(feeds[i % n]), runs=opts.warmup, label="warm-up",
                        stream=stream, clock=clock)
        res["warmup_runs"] = len(warm.times)
        if warm.interrupted:
            raise KeyboardInterrupt

        ops_done = np.zeros(2)   # executed MACs, overhead ops of the timed runs so far

        def count_ops(i):
            ops_done[:] += ops_per_input[i % n]

        probe = probe_meter(op_counter=lambda: tuple(ops_done), **(opts.probe or {}))
        meter = probe.meter
        idle_w = 0.0
        if meter.measured and opts.idle_seconds > 0:
            idle_w = measure_idle_watts(meter, opts.idle_seconds)
        idle_window = meter.elapsed if meter.measured else 0.0
        meter.begin()
        loop = run_loop(lambda i: model.run(feeds[i % n]), runs=opts.runs, seconds=opts.seconds,
                        label="bench", stream=stream, clock=clock, after_run=count_ops)
        joules = meter.end()
        meter = None
        res["steady"] = latency_stats(loop.times, loop.wall_s)
        res["times_ms"] = [t * 1e3 for t in loop.times]
        if loop.times:
            res["energy"] = _energy(probe.meter, probe, idle_w, idle_window, joules, probe.meter.elapsed,
                                    len(loop.times))
        res["interrupted"] = loop.interrupted
    except KeyboardInterrupt:
        res["interrupted"] = True
    except MeterUnavailable as e:   # a meter that read at probing time failed later
        res["energy"] = {"method": None, "error": str(e)}
    finally:
        if meter is not None:
            try:
                meter.end()
            except Exception:   # stopping a meter on the way out must not hide the real outcome
                pass
        res["peak_rss_mib"] = peak_rss_mib()
    return res
