"""First-inference times of a fresh process, printed as JSON; `haste-edge warmup` runs it in subprocesses.

    python -m haste_edge.bench.startup [MODEL] [--haste SPEC ...] [--threads N]

Runs the model once dense (and once more dense on one thread, whose conv kernels differ, when
running on more), then once per HASTE spec, each watched by JitWatch (time in Numba,
kernels compiled, kernels loaded from the disk cache). Kernels depend on types, not values, so one
seeded random input compiles what every input needs.
"""
from __future__ import annotations

import argparse
import json
import time


def measure(model_path, specs, threads) -> dict:
    import numpy as np

    from haste_edge import get_threads, load, set_threads
    from haste_edge.bench.jitwatch import timed
    from haste_edge.jit import CACHE_DIR
    set_threads(threads)
    t0 = time.perf_counter()
    model = load(model_path)
    out = {"load_s": time.perf_counter() - t0, "numba_cache_dir": CACHE_DIR, "runs": []}
    x = np.random.default_rng(0).standard_normal(model.input_shape(1)).astype(np.float32)
    feeds = {model.input_names[0]: x}
    n = get_threads()
    # the dense convs take other kernels on one thread than on more (ops/conv.py): warm both
    configs = [(None, n)] + ([(None, 1)] if n > 1 else []) + [(spec, n) for spec in specs]
    for spec, t in configs:
        set_threads(t)
        convs = len(model.set_haste(spec))
        seconds, jit = timed(lambda: model.run(feeds))
        out["runs"].append({"haste": spec, "threads": t, "haste_convs": convs, "first_inference_s": seconds,
                            **jit.as_dict()})
    set_threads(n)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--haste", action="append", default=[])
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    print(json.dumps(measure(args.model, args.haste, args.threads)))


if __name__ == "__main__":
    main()
