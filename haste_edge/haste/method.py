"""HASTE as a compression method (compression.py): which convs it takes, and each one's layer.

    model.compress(Haste("L=12,P=4"))        or a HasteConfig; model.set_haste(spec) is shorthand
"""
from __future__ import annotations

import numpy as np

from haste_edge.haste import cost
from haste_edge.haste.config import HasteConfig, LayerSetting, parse_haste_spec, plan_layers
from haste_edge.haste.kernel import haste_conv
from haste_edge.haste.reference import STAT_FIELDS
from haste_edge.ops.conv import add_residual
from haste_edge.shapes import infer_shapes
from haste_edge.threads import run_threads

# the counters that are HASTE's own work, not the conv's (docs/METHOD.md section 1)
OVERHEAD_FIELDS = ("hash_adds", "centre_ops", "input_merge_adds", "filter_merge_adds")


# auto compresses a conv only if the cost model predicts HASTE under 0.97x of its dense time when
# it keeps this fraction of the input channels, or the setting's bound (2^L / C_in) if lower: at
# L=11 the bundled model's convs kept 0.51-0.85 (results/haste_cost_x86_64.md); 0.6, so a conv
# must pay with typical, not best-case, buckets
AUTO_KEPT = 0.6


class Haste:
    """HASTE with one network-wide configuration: a HasteConfig, a spec string ("L=12,P=4"), a
    named setting (config.NAMED_SETTINGS) or "auto[:SPEC]": SPEC (a spec or a name; default
    "fast") on the convs where this machine's cost model (cost.py) predicts it pays, none
    elsewhere. auto decides time only: SPEC's accuracy is SPEC's. `rates` (cost.Rates) replaces
    the machine's calibrated rates for auto."""
    name = "haste"

    def __init__(self, config, rates=None):
        head, _, base = config.strip().partition(":") if isinstance(config, str) else ("", "", "")
        self.auto = head.strip() == "auto"
        if self.auto:
            config = base.strip() or "fast"
        cfg = parse_haste_spec(config) if isinstance(config, str) else config
        if not isinstance(cfg, HasteConfig):
            raise TypeError(f"HASTE takes a HasteConfig or a spec string, not {type(config).__name__}")
        self.config = cfg
        self.rates = rates
        self.decisions = {}         # auto: conv name -> (break-even kept fraction, compressed?)

    def layers(self, graph) -> dict:
        convs = [(n.name, graph.weights[n.inputs[1]].shape, n.attrs) for n in graph.nodes
                 if n.op == "Conv" and n.inputs[1] in graph.weights]
        layers = {name: HasteLayer(s) for name, s in plan_layers(convs, self.config).items()}
        return self._paying(graph, layers) if self.auto else layers

    def _paying(self, graph, layers: dict) -> dict:
        """The layers whose predicted HASTE time is under 0.97x dense (batch 1, the thread count set
        now) when they keep AUTO_KEPT of their channels, or fewer if the setting allows no more."""
        rates = self.rates or cost.machine_rates()
        threads = run_threads()
        shapes = infer_shapes(graph, {k: tuple(1 if d is None else d for d in s) for k, s in graph.inputs.items()})
        kept = {}
        for n in graph.nodes:
            if n.name in layers:
                shape = cost.conv_shape(shapes[n.inputs[0]], graph.weights[n.inputs[1]].shape, n.attrs,
                                        shapes[n.outputs[0]])
                setting = layers[n.name].setting
                breakeven = cost.kept_breakeven(rates, shape, setting, threads=threads)
                pays = breakeven > min(AUTO_KEPT, cost.kept_bound(shape, setting))
                self.decisions[n.name] = (breakeven, pays)
                if pays:
                    kept[n.name] = layers[n.name]
        return kept


class HasteLayer:
    """One conv with HASTE: its setting; the per-call set-up is kept on the plan step (kernel.py)."""
    fields = STAT_FIELDS
    overhead = OVERHEAD_FIELDS

    def __init__(self, setting: LayerSetting):
        self.setting = setting

    def run(self, inputs, attrs, outs):
        bias = inputs[2] if len(inputs) > 2 else None
        y, counters = haste_conv(inputs[0], inputs[1], bias, attrs, self.setting, y_out=outs[0])
        if len(inputs) > 3 and inputs[3] is not None:       # the residual Add the runtime fused in
            add_residual(y, inputs[3], attrs)
        return [y], counters

    def __repr__(self):
        return f"HasteLayer({self.setting})"


def channels_kept(layer_stats) -> np.ndarray | None:
    """Mean fraction of input channels kept (buckets / C_in) per image of a HASTE layer's stats
    (stats.LayerStats), None for other layers."""
    if layer_stats.method != Haste.name:
        return None
    c = layer_stats.counters
    return c["buckets_sum"] / np.maximum(c["patches"] * c["channels"], 1)
