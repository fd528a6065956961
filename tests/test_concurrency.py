"""One Model run from several Python threads at once gives the single-thread outputs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numba
import numpy as np
import pytest

import haste_edge
from haste_edge import threads
from haste_edge.preprocess import load_batch

REPO = Path(__file__).resolve().parents[1]


def _hammer(model, x, expected, n_threads=4, runs=25):
    """Runs every thread's share of (image, batch) requests; returns the wrong outputs seen."""
    wrong, errors = [], []

    def worker(k):
        try:
            for r in range(runs):
                i = (k + r) % len(x)
                out = model.run({model.input_names[0]: x[i:i + 1]})[model.output_names[0]]
                if not np.array_equal(out, expected[i]):
                    wrong.append((k, r, float(np.abs(out - expected[i]).max())))
        except Exception as e:          # surfaced below: a thread's exception is otherwise lost
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return wrong


@pytest.mark.parametrize("spec", [None, "L=8,P=4,seed=1"])
def test_concurrent_runs_give_single_thread_outputs(spec):
    model = haste_edge.load()
    model.set_haste(spec)
    x = load_batch(haste_edge.sample_images(), model.meta["input"])
    expected = [model.run({model.input_names[0]: x[i:i + 1]})[model.output_names[0]] for i in range(len(x))]
    wrong = _hammer(model, x, expected)
    assert not wrong, f"{len(wrong)} of 100 concurrent runs differ from the single-thread output: {wrong[:3]}"


def test_last_stats_are_the_calling_threads():
    model = haste_edge.load()
    model.set_haste("L=8,P=4,seed=1")
    x = load_batch(haste_edge.sample_images(), model.meta["input"])
    seen = {}
    barrier = threading.Barrier(2)

    def worker(batch):
        model.run({model.input_names[0]: x[:batch]})
        barrier.wait()                  # both have run before either reads its stats
        seen[batch] = model.last_stats().dense().shape[0]

    threads = [threading.Thread(target=worker, args=(b,)) for b in (1, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {1: 1, 3: 3}


def test_set_haste_reaches_every_thread():
    model = haste_edge.load()
    x = load_batch(haste_edge.sample_images(), model.meta["input"])[:1]
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("dense", model.run({"input": x})["logits"]))
    t.start()
    t.join()
    model.set_haste("L=4,P=4,seed=0")
    t = threading.Thread(target=lambda: (model.run({"input": x}), box.setdefault("stats", model.last_stats())))
    t.start()
    t.join()
    assert any(r.method == "haste" for r in box["stats"].layers)


def test_workqueue_layer_serialises_instead_of_aborting():
    """Numba's workqueue layer aborts the process when two threads launch parallel kernels at
    once; runs under it are serialised (threads.run_context)."""
    code = f"""
import sys, threading
sys.path.insert(0, {str(REPO)!r})
import numba, numpy as np, haste_edge
from haste_edge.preprocess import load_batch
m = haste_edge.load()
x = load_batch(haste_edge.sample_images(), m.meta["input"])
ref = m.run({{"input": x}})["logits"]
bad = []
def work():
    for _ in range(10):
        if not np.array_equal(m.run({{"input": x}})["logits"], ref):
            bad.append(1)
ts = [threading.Thread(target=work) for _ in range(3)]
[t.start() for t in ts]; [t.join() for t in ts]
print(numba.threading_layer(), len(bad))
"""
    env = {**__import__("os").environ, "NUMBA_THREADING_LAYER": "workqueue"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["workqueue", "0"], r.stdout


def test_default_threads_reach_every_python_thread():
    """A fresh process that only loads a model and runs it in a new Python thread: the engine's
    loops on every core there too (Numba keeps a thread count per Python thread), and the BLAS
    on one thread until the machine has been seen idle."""
    code = f"""
import json, os, sys, threading
sys.path.insert(0, {str(REPO)!r})
import numba, numpy as np, haste_edge
from threadpoolctl import threadpool_info
m = haste_edge.load()
box = {{}}
def work():
    m.run({{"input": np.zeros((1, 1, 28, 28), np.float32)}})
    box["numba"] = numba.get_num_threads()
t = threading.Thread(target=work); t.start(); t.join()
blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas" and "numpy" in i["filepath"]]
print(json.dumps([box["numba"], blas, min(os.cpu_count(), numba.config.NUMBA_NUM_THREADS)]))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    numba_threads, blas, cores = json.loads(r.stdout)
    assert blas == [1], r.stdout
    assert numba_threads == cores, r.stdout


def _numpy_blas_threads():
    from threadpoolctl import threadpool_info
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas" and "numpy" in i["filepath"]]


@pytest.mark.skipif(min(os.cpu_count() or 1, numba.config.NUMBA_NUM_THREADS) < 2, reason="one core")
def test_blas_threads_follow_the_other_processes_load(monkeypatch):
    """The BLAS gets the engine's threads only while other processes leave the cores idle
    (haste_edge/threads.py); a fixed count or --threads 1 overrides. The load is faked here: the
    policy is tested, not the machine."""
    model = haste_edge.load()
    feeds = {"input": np.zeros((1, 1, 28, 28), np.float32)}
    n = haste_edge.set_threads(None)
    try:
        # one pool (the default): the BLAS stays on one thread whatever the load
        monkeypatch.setattr(threads._load, "cores", lambda: 0.0)
        model.run(feeds)
        assert threads.blas_threads() == 1 and _numpy_blas_threads() == [1]
        monkeypatch.setattr(threads, "ONE_POOL", False)
        for others, want in ((1.0, 1), (0.0, n), (0.7, 1), (0.1, n)):
            monkeypatch.setattr(threads._load, "cores", lambda v=others: v)
            model.run(feeds)
            assert threads.blas_threads() == want, (others, want)
            assert _numpy_blas_threads() == [want]
        haste_edge.set_threads(None, blas=1)
        model.run(feeds)
        assert _numpy_blas_threads() == [1]
        haste_edge.set_threads(1)
        monkeypatch.setattr(threads._load, "cores", lambda: 0.0)
        model.run(feeds)
        assert _numpy_blas_threads() == [1]
    finally:
        haste_edge.set_threads(None)


def test_kernel_threads_is_numbas_count_where_it_is_held():
    """kernel_threads() answers without asking Numba inside a run and inside numba_single_thread;
    it must still be what Numba would say there, and Numba's own count outside."""
    before = threads._wanted
    haste_edge.set_threads(2)
    try:
        assert threads.kernel_threads() == numba.get_num_threads() == 2
        with threads.run_context():
            assert threads.kernel_threads() == numba.get_num_threads() == 2
            with threads.numba_single_thread():
                assert threads.kernel_threads() == numba.get_num_threads() == 1
            assert threads.kernel_threads() == numba.get_num_threads() == 2
        numba.set_num_threads(1)                  # behind the engine's back: seen outside a run
        assert threads.kernel_threads() == 1
    finally:
        haste_edge.set_threads(before)
