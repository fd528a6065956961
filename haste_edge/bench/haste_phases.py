"""Whole-model time split into HASTE's phases: where a compressed model spends its time.

Runs the model's plan step by step on real inputs. A HASTE conv is timed phase by phase with
profile_haste_conv (on that conv's actual input); every other step (dense convs, pools, adds, the
classifier) is timed whole and reported as "other ops".
"""
from __future__ import annotations

import time

from haste_edge.haste.kernel import PHASES, profile_haste_conv
from haste_edge.haste.method import HasteLayer
from haste_edge.runtime import _run_step, check_feeds, execute

PHASE_COLUMNS = ("pad",) + PHASES


def phase_profile(model, feeds: dict, repeats: int = 5, clock=time.perf_counter) -> dict:
    """Seconds per run: {"layers": {conv name: {phase: s, "total": s}}, "phases": {phase: s summed
    over HASTE convs}, "other_ops": s, "total": s}. Each figure is the best of `repeats` calls."""
    feeds = check_feeds(model.graph, feeds)
    plan = model.plan({k: v.shape for k, v in feeds.items()})
    layers, other = {}, 0.0

    def profiled_step(st, args, counters):
        nonlocal other
        if isinstance(st.layer, HasteLayer):
            bias = args[2] if len(args) > 2 else None
            layers[st.node_name] = profile_haste_conv(args[0], args[1], bias, st.attrs, st.layer.setting,
                                                      repeats=repeats, clock=clock)
            return _run_step(st, args, counters)
        best = float("inf")
        for _ in range(repeats):
            t0 = clock()
            outs = _run_step(st, args, counters)
            best = min(best, clock() - t0)
        other += best
        return outs

    execute(plan, feeds, run_step=profiled_step)
    phases = {p: sum(layer[p] for layer in layers.values()) for p in PHASE_COLUMNS}
    return {"layers": layers, "phases": phases, "other_ops": other,
            "total": other + sum(layer["total"] for layer in layers.values())}
