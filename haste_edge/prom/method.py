"""PROM as a compression method (compression.py): a model converted with --prom or --int8 runs its
PromConv / PromGemm nodes through these layers, which count per image what the kernels execute.

    model.compress(Prom())      done by Model itself when the graph holds PROM nodes

Counters per image (FIELDS): dense_macs (the float layer's MACs); executed_macs = int8_mults (the
int8 x int8 products the layer needs: zero weights are skipped, ternary weights need none; the
kernels' vector lanes also compute positions they discard, the padding of a 64-pixel tile and the
skipped columns of a strided conv's wide rows, which are not counted);
int32_adds (every accumulation); fp32_mults and fp32_adds (the epilogue's scale and bias per
output, the quantisation's scale per input); weight_bytes (the codes as stored: 2 bits a ternary
weight, a byte an int8 one, plus 4 bytes per scale and bias); act_bytes (int8 codes read once
+ float32 outputs written). The overhead column, quantize_ops, counts each input element quantised.
"""
from __future__ import annotations

import numpy as np

from haste_edge.prom.ops import prom_conv, prom_conv_calls, prom_gemm, prom_gemm_calls, ternary_kernel

FIELDS = ("dense_macs", "executed_macs", "int8_mults", "int32_adds", "fp32_mults", "fp32_adds",
          "weight_bytes", "act_bytes", "quantize_ops")
OVERHEAD = ("quantize_ops",)
OPS = ("PromConv", "PromGemm")


def totals(stats, fields=("int8_mults", "int32_adds", "fp32_mults", "fp32_adds", "weight_bytes")) -> dict:
    """Per image (mean over the batch), summed over a run's PROM layers (a RunStats)."""
    return {f: float(sum(l.counters[f].mean() for l in stats.layers if l.method == "prom")) for f in fields}


class Prom:
    """Runs a PROM-converted graph's quantised nodes with per-image counters."""
    name = "prom"

    def layers(self, graph) -> dict:
        return {n.name: PromLayer(n, graph) for n in graph.nodes if n.op in OPS}


class PromLayer:
    fields = FIELDS
    overhead = OVERHEAD

    def __init__(self, node, graph):
        self.op = node.op
        codes = graph.weights[node.inputs[1]]
        stored_ternary = node.op == "PromConv" and node.attrs["weights"] == "ternary"
        # only the multiplication-free kernel does without multiplications (ops.ternary_kernel)
        self.ternary = stored_ternary and ternary_kernel(node.attrs)
        bits = 2 if stored_ternary else 8
        extras = 4 * codes.shape[0] * (1 + (len(node.inputs) > 3 and bool(node.inputs[3])))
        self.weight_bytes = (codes.size * bits + 7) // 8 + extras
        self.nonzero = int(np.count_nonzero(codes))
        self.codes_shape = codes.shape
        self._rows = {}          # (input shape, output shape) -> counters of one image


    def _counts(self, x_shape, y_shape, attrs) -> np.ndarray:
        """Counters of one image."""
        in_elems = int(np.prod(x_shape[1:]))
        out_elems = int(np.prod(y_shape[1:]))
        pixels = int(np.prod(y_shape[2:])) if len(y_shape) == 4 else 1
        taps = self.nonzero * pixels                  # accumulations (the conv kernels skip zeros)
        dense = int(np.prod(self.codes_shape)) * pixels
        mults = 0 if self.ternary else taps
        return np.array([dense, mults, mults, taps, out_elems + in_elems, out_elems, self.weight_bytes,
                         in_elems + 4 * out_elems, in_elems], np.int64)

    def run(self, inputs, attrs, outs):
        if len(inputs) > 4 and inputs[4] is not None:
            raise ValueError("PROM layers take no fused residual")
        y = (prom_conv if self.op == "PromConv" else prom_gemm)(inputs, attrs, outs)[0]
        key = (inputs[0].shape, y.shape)
        rows = self._rows.get(key)
        if rows is None:
            rows = self._rows[key] = np.tile(self._counts(inputs[0].shape, y.shape, attrs), (y.shape[0], 1))
        return [y], rows.copy()

    def replay(self, inputs, attrs, outs):
        """(calls, counters): what redoes run() on these arrays, and the counters every such run
        gives (PROM's work depends on shapes only); None when run() has not seen these shapes."""
        if len(inputs) > 4 and inputs[4] is not None:
            return None
        rows = self._rows.get((inputs[0].shape, outs[0].shape))
        listed = (prom_conv_calls if self.op == "PromConv" else prom_gemm_calls)(inputs, attrs, outs)
        return None if rows is None or listed is None else (listed, rows)

    def __repr__(self):
        return f"PromLayer({'ternary' if self.ternary else 'int8'} {self.op})"
