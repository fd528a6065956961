"""`haste-edge warmup`: compile every kernel a model needs and leave it in Numba's on-disk cache, so
the first real inference on a device starts fast; report the start time before and after.

Kernels are compiled per argument type, not per value, so a dense run plus one run with HASTE on every
conv (first conv, 1x1 and strided convs included) compiles every kernel any HASTE setting chosen at
run time will use. Start times come from fresh processes (python -m haste_edge.bench.startup):
  cold    optional: an empty temporary cache, i.e. a device's very first start
  before  the cache as it is now; this run compiles what is missing and saves it: the warm-up itself
  after   a new process with the filled cache: what the next start of the application costs
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from haste_edge.errors import HasteEdgeError

ALL_CONVS_HASTE = "L=12,P=4,start=0,1x1=1,strided=1"


def warm_specs(user_haste: str | None) -> list[str]:
    return [s for s in (user_haste, ALL_CONVS_HASTE) if s]


def start_in_subprocess(model_path, specs, threads, cache_dir=None, timeout=3600) -> dict:
    cmd = [sys.executable, "-m", "haste_edge.bench.startup"]
    cmd += [str(model_path)] if model_path else []
    for s in specs:
        cmd += ["--haste", s]
    if threads:
        cmd += ["--threads", str(threads)]
    env = dict(os.environ)
    if cache_dir:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    process_s = time.perf_counter() - t0
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise HasteEdgeError(f"start-up measurement failed: {last}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["process_s"] = process_s
    return out


def run_warmup(model_path=None, haste=None, threads=None, cold=False, progress=None) -> dict:
    say = progress or (lambda msg: None)
    specs = warm_specs(haste)
    res = {"model": str(model_path) if model_path else None, "haste_specs": specs}
    if cold:
        say("cold start: fresh process, empty temporary Numba cache (compiles everything)...")
        with tempfile.TemporaryDirectory(prefix="haste-edge-cold-") as d:
            res["cold"] = start_in_subprocess(model_path, specs, threads, cache_dir=d)
    say("warm-up: fresh process with the Numba cache as it is now (compiles and saves what is missing)...")
    res["before"] = start_in_subprocess(model_path, specs, threads)
    say("after warm-up: fresh process with the filled cache...")
    res["after"] = start_in_subprocess(model_path, specs, threads)
    return res


def _totals(run: dict) -> tuple[int, int, int]:
    rs = run["runs"]
    return (sum(r["kernels_compiled"] for r in rs), sum(r["kernels_loaded_from_cache"] for r in rs),
            sum(r["kernels_compiled_uncachable"] for r in rs))


def format_warmup(res: dict) -> str:
    after = res["after"]
    labels = [(r["haste"] or "dense") + (" on 1 thread" if r.get("threads") == 1 and i else "")
              for i, r in enumerate(after["runs"])]
    lines = [f"haste-edge warmup: {res['model'] or 'bundled model'}; Numba cache {after['numba_cache_dir']}",
             "first inference in a fresh process, per configuration (" + ", ".join(labels) + "):"]
    rows = [("cold (empty cache)", res.get("cold")), ("before warm-up", res["before"]),
            ("after warm-up", after)]
    for name, run in rows:
        if run is None:
            continue
        compiled, loaded, uncachable = _totals(run)
        firsts = ", ".join(f"{r['first_inference_s']:.2f} s" for r in run["runs"])
        lines.append(f"  {name:<19} {firsts}; whole process {run['process_s']:.1f} s; kernels: {compiled} "
                     f"compiled ({uncachable} not cachable), {loaded} loaded from the cache")
    compiled, _, uncachable = _totals(after)
    if compiled > uncachable:
        lines.append(f"warning: {compiled - uncachable} cachable kernel(s) were still compiled after the "
                     f"warm-up: is {after['numba_cache_dir']} writable?")
    else:
        lines.append("cache filled: every cachable kernel now loads from disk"
                     + (f" ({uncachable} kernel(s) Numba cannot cache compile in every process)" if uncachable else ""))
    return "\n".join(lines)
