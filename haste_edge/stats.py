"""What one inference executed: dense and executed MACs per layer and per image, and HASTE overhead.

Counts come from the kernels (HASTE counts inside its Numba kernel as it runs); dense layers execute
exactly their dense MACs. Overhead operations (hashing additions, centring, input- and filter-merge
additions) are additions, not multiply-accumulates; the "with overhead" reduction counts each as one
MAC, which overstates their cost on hardware where an add is cheaper than a MAC.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

OVERHEAD_FIELDS = ("hash_adds", "centre_ops", "input_merge_adds", "filter_merge_adds")


@dataclass
class LayerStats:
    name: str
    op: str
    dense: np.ndarray          # (N,) dense MACs per image
    executed: np.ndarray       # (N,) MACs actually executed per image
    overhead: np.ndarray       # (N,) HASTE overhead operations per image (0 for dense layers)
    haste: dict = field(default_factory=dict)  # HASTE counters per image (field -> (N,)), if HASTE ran

    @property
    def channels_kept(self) -> np.ndarray | None:
        """Mean fraction of input channels kept (buckets / C_in) per image, HASTE layers only."""
        if not self.haste:
            return None
        return self.haste["buckets_sum"] / np.maximum(self.haste["patches"] * self.haste["channels"], 1)


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


def haste_layer(name: str, counters: np.ndarray, fields: tuple) -> LayerStats:
    cols = {f: counters[:, i].astype(np.int64) for i, f in enumerate(fields)}
    overhead = sum(cols[f] for f in OVERHEAD_FIELDS)
    return LayerStats(name, "Conv", cols["dense_macs"], cols["executed_macs"], overhead, cols)
