"""What one inference executed: dense and executed MACs per layer and per image, and the overhead
of the compression method that ran it (compression.py).

Counts come from the kernels (HASTE counts inside its Numba kernel as it runs); dense layers execute
exactly their dense MACs. Overhead operations (for HASTE: hashing additions, centring, input- and
filter-merge additions) are the method's own work, mostly additions; the "with overhead" reduction
counts each as one MAC, which overstates their cost on hardware where an add is cheaper than a MAC.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class LayerStats:
    name: str
    op: str
    dense: np.ndarray          # (N,) dense MACs per image
    executed: np.ndarray       # (N,) MACs actually executed per image
    overhead: np.ndarray       # (N,) the method's overhead operations per image (0 for dense layers)
    method: str = ""           # the compression method that ran the layer ("" dense)
    counters: dict = field(default_factory=dict)  # the method's counters per image (field -> (N,))


@dataclass
class RunStats:
    layers: list[LayerStats]

    def _sum(self, attr, ops=None) -> np.ndarray:
        rows = [getattr(r, attr) for r in self.layers if ops is None or r.op in ops]
        return np.sum(rows, axis=0) if rows else np.zeros(1, np.int64)

    def dense(self, ops=None) -> np.ndarray:
        return self._sum("dense", ops)

    def executed(self, ops=None) -> np.ndarray:
        return self._sum("executed", ops)

    def overhead(self, ops=None) -> np.ndarray:
        return self._sum("overhead", ops)

    def reduction(self, with_overhead: bool = False, ops=None) -> np.ndarray:
        """Fraction of dense MACs saved, per image (ops=("Conv",) for convolutions only)."""
        cost = self.executed(ops) + (self.overhead(ops) if with_overhead else 0)
        return 1.0 - cost / np.maximum(self.dense(ops), 1)

    def summary(self) -> dict:
        """Per-inference totals as plain numbers (means over the images of the batch)."""
        out = {"dense_macs": float(self.dense().mean()), "executed_macs": float(self.executed().mean()),
               "overhead_ops": float(self.overhead().mean()),
               "reduction": float(self.reduction().mean()),
               "reduction_with_overhead": float(self.reduction(True).mean()),
               "conv_reduction": float(self.reduction(ops=("Conv",)).mean()),
               "conv_reduction_with_overhead": float(self.reduction(True, ops=("Conv",)).mean())}
        return out


def dense_layer(name: str, op: str, macs: int, n_images: int) -> LayerStats:
    per_image = np.full(n_images, macs // max(n_images, 1), dtype=np.int64)
    return LayerStats(name, op, per_image, per_image.copy(), np.zeros(n_images, np.int64))


def method_layer(name: str, op: str, method: str, counters: np.ndarray, fields: tuple,
                 overhead: tuple) -> LayerStats:
    """A compressed layer's stats from its counters (N, len(fields)) (compression.py)."""
    cols = {f: counters[:, i].astype(np.int64) for i, f in enumerate(fields)}
    extra = sum((cols[f] for f in overhead), np.zeros(counters.shape[0], np.int64))
    return LayerStats(name, op, cols["dense_macs"], cols["executed_macs"], extra, method, cols)
