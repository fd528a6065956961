"""HTTM as a compression method (compression.py): the model's ScaledDotProductAttention nodes, from
the config's `start`-th on, run through kernel.httm_attention, counted per image.

    model.compress(Httm("q=0.5,kv=0.5", per_frame=49))   or  model.set_httm("q=0.5,kv=0.5")

Counters per image (kernel.FIELDS): dense_macs (the node's MACs: scores and values, 2 H N^2 d),
executed_macs (the same on the merged sets), match_macs and merge_adds (the method's own work,
the overhead columns), queries_kept and keys_kept (merged tokens summed over heads) and
head_tokens (heads x tokens: what they are kept out of).
"""
from __future__ import annotations

import numpy as np

from haste_edge.httm.config import HttmConfig, parse_httm_spec
from haste_edge.httm.kernel import FIELDS, OVERHEAD, httm_attention

OP = "ScaledDotProductAttention"


def tokens_per_frame(meta: dict) -> int:
    """Tokens of one frame from a model's sidecar (architecture.tokens_per_frame), 0 when it has
    none (then every attention's tokens are one frame)."""
    return int((meta.get("architecture") or {}).get("tokens_per_frame", 0) or 0)


def attention_summary(stats) -> dict:
    """Per image (mean over the batch), over a run's HTTM layers (a RunStats): dense and executed
    attention MACs, the method's own operations, and the fractions of queries and keys kept."""
    layers = [l for l in stats.layers if l.method == "httm"]
    total = {f: float(sum(l.counters[f].mean() for l in layers)) for f in FIELDS}
    tokens = max(1.0, total["head_tokens"])
    return {"dense_macs": total["dense_macs"], "executed_macs": total["executed_macs"],
            "overhead_ops": total["match_macs"] + total["merge_adds"], "layers": len(layers),
            "queries_kept": total["queries_kept"] / tokens, "keys_kept": total["keys_kept"] / tokens}


class Httm:
    name = "httm"

    def __init__(self, config: HttmConfig | str, per_frame: int = 0):
        self.config = parse_httm_spec(config) if isinstance(config, str) else config
        self.per_frame = int(per_frame)

    def layers(self, graph) -> dict:
        nodes = [n for n in graph.nodes if n.op == OP]
        return {n.name: HttmLayer(self.config, self.per_frame) for n in nodes[self.config.start:]}


class HttmLayer:
    fields = FIELDS
    overhead = OVERHEAD

    def __init__(self, config: HttmConfig, per_frame: int):
        self.config = config
        self.per_frame = per_frame
        self._scores = np.empty(0, np.float32)     # the scores' scratch, grown to the largest call

    def run(self, inputs, attrs, outs):
        q, k, v = inputs[:3]
        if q.shape != k.shape or k.shape != v.shape:
            raise ValueError(f"httm: Q {q.shape}, K {k.shape} and V {v.shape} must have one shape "
                             f"(self-attention: every token a query and a key)")
        y = outs[0] if outs else np.empty(q.shape, np.float32)
        rows = np.empty((q.shape[0], len(FIELDS)), np.int64)
        size = q.shape[1] * q.shape[2] ** 2
        if self._scores.size < size:
            self._scores = np.empty(size, np.float32)
        for b in range(q.shape[0]):
            _, rows[b] = httm_attention(q[b], k[b], v[b], float(attrs["scale"]), self.config, self.per_frame,
                                        out=y[b], scores=self._scores)
        return [y], rows

    def __repr__(self):
        return f"HttmLayer({self.config.spec()})"
