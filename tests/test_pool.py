"""pool.claim: tasks taken from a shared counter by the threads of a parallel loop."""
from __future__ import annotations

import numpy as np

from haste_edge.jit import njit, prange
from haste_edge.pool import claim


@njit(parallel=True)
def _cover(n_tasks, workers, hits, owner, counter):
    counter[0] = 0
    for w in prange(workers):
        while True:
            t = claim(counter)
            if t >= n_tasks:
                break
            hits[t] += 1
            owner[t] = w


def test_every_task_claimed_exactly_once():
    for n_tasks, workers in ((0, 2), (1, 2), (7, 3), (100_000, 2)):
        hits = np.zeros(max(n_tasks, 1), np.int64)
        owner = np.full(max(n_tasks, 1), -1, np.int64)
        counter = np.full(1, 12345, np.int64)
        _cover(n_tasks, workers, hits, owner, counter)
        assert (hits[:n_tasks] == 1).all() and (owner[:n_tasks] >= 0).all() and (owner < workers).all()
        assert counter[0] == n_tasks + workers          # each worker's last claim overshoots once


def test_claim_returns_the_value_before_the_add():
    @njit
    def twice(counter):
        return claim(counter), claim(counter)
    counter = np.array([5], np.int64)
    assert twice(counter) == (5, 6) and counter[0] == 7
