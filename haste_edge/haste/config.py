"""HASTE configuration: which convs get channel merging, and with which settings.

`HasteConfig` holds the network-wide knobs (docs/METHOD.md section 1); `plan_layers` turns it into one
`LayerSetting` per conv that gets HASTE; `parse_haste_spec` reads the CLI's "L=12,P=4,..." form.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

# Keys a per_layer override may set.
_OVERRIDE_KEYS = ("L", "s", "P", "seed", "enabled")

# L is capped so a code (sum of bit_l * 2^l) fits an int64 with room to spare; far beyond any
# useful value (2^L buckets already exceed any channel count at L ~ 12).
MAX_L = 62


@dataclass(frozen=True)
class LayerSetting:
    """HASTE settings of one conv: hyperplanes L, hyperplane sparsity s, output tile size P, and
    the seed its hyperplanes are drawn from. Frozen and hashable: kernels key caches on it."""
    L: int
    s: float
    P: int
    seed: int

    def __post_init__(self):
        _check_L(self.L)
        _check_s(self.s)
        _check_P(self.P)
        _check_seed(self.seed)


@dataclass
class HasteConfig:
    """Network-wide HASTE knobs.

    L            hyperplanes per layer (more: finer buckets, fewer merges, higher accuracy)
    s            probability of a 0 entry in a hyperplane (docs/METHOD.md section 1: 2/3 on CIFAR, 1/2 on ImageNet)
    patch        output tile size P (tiles P x P, edge tiles smaller)
    seed         network seed; each layer's seed is derived from it and the layer's position
    start_layer  index (in graph order, over all convs) of the first conv that may be compressed;
                 1 leaves the first conv (which sees only the image channels) dense
    include_1x1  also 1x1 convs (where hashing and filter merging cost relatively most)
    include_strided  also convs with a stride > 1
    per_layer    node name -> overrides {"L", "s", "P", "seed", "enabled"}; "enabled": True
                 forces HASTE on a conv the filters above exclude (never on a grouped conv)
    L_by_cout    output-channel count -> L for the convs with that many output channels (a
                 ResNet's stages, by name-free means); per_layer's "L" still wins
    """
    L: int
    s: float = 2.0 / 3.0
    patch: int = 4
    seed: int = 0
    start_layer: int = 1
    include_1x1: bool = False
    include_strided: bool = True
    per_layer: dict = field(default_factory=dict)
    L_by_cout: dict = field(default_factory=dict)

    def __post_init__(self):
        _check_L(self.L)
        _check_s(self.s)
        _check_P(self.patch)
        _check_seed(self.seed)
        if isinstance(self.start_layer, bool) or not isinstance(self.start_layer, (int, np.integer)) \
                or self.start_layer < 0:
            raise ValueError(f"HASTE start_layer must be an integer >= 0, got {self.start_layer!r}")
        for name, ov in self.per_layer.items():
            if not isinstance(ov, dict):
                raise ValueError(f"HASTE per_layer[{name!r}] must be a dict of overrides, got {ov!r}")
            bad = sorted(set(ov) - set(_OVERRIDE_KEYS))
            if bad:
                raise ValueError(f"HASTE per_layer[{name!r}]: unknown key(s) {bad}; "
                                 f"allowed: {list(_OVERRIDE_KEYS)}")
        for c_out, L in self.L_by_cout.items():
            if not _is_int(c_out) or c_out < 1:
                raise ValueError(f"HASTE L_by_cout: output-channel counts must be integers >= 1, got {c_out!r}")
            _check_L(L)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_L(L):
    if not _is_int(L) or not 1 <= L <= MAX_L:
        raise ValueError(f"HASTE L (hyperplanes) must be an integer in [1, {MAX_L}], got {L!r}")


def _check_s(s):
    if isinstance(s, bool) or not isinstance(s, (int, float, np.floating)) or not 0.0 <= float(s) < 1.0:
        raise ValueError(f"HASTE s (hyperplane sparsity) must be a number in [0, 1), got {s!r}")


def _check_P(P):
    if not _is_int(P) or P < 1:
        raise ValueError(f"HASTE P (patch / output tile size) must be an integer >= 1, got {P!r}")


def _check_seed(seed):
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"HASTE seed must be an integer >= 0, got {seed!r}")


def layer_seed(seed: int, position: int) -> int:
    """Seed of the conv at `position` (its index in plan_layers' conv list) under network seed
    `seed`: SeedSequence mixes both into a well-spread 32-bit value, identical on every run,
    machine and Python version (unlike hash(), which is salted per process for strings)."""
    return int(np.random.SeedSequence([int(seed), int(position)]).generate_state(1)[0])


def haste_applicable(weight_shape, attrs) -> str | None:
    """None if HASTE can run on this conv, else the reason it cannot."""
    if int(attrs.get("group", 1)) != 1:
        return "grouped/depthwise conv (merging input channels needs group 1)"
    if int(weight_shape[1]) < 2:
        return "fewer than 2 input channels (nothing to merge)"
    return None


def plan_layers(conv_nodes, cfg: HasteConfig) -> dict:
    """Which convs get HASTE and with which settings.

    conv_nodes: [(node name, weight shape (C_out, C_in/group, kh, kw), canonical Conv attrs)] in
    graph order. Returns {node name: LayerSetting} for the convs that get HASTE."""
    names = [n for n, _, _ in conv_nodes]
    unknown = sorted(set(cfg.per_layer) - set(names))
    if unknown:
        raise ValueError(f"HASTE per_layer names no conv node: {unknown}")
    out = {}
    for position, (name, wshape, attrs) in enumerate(conv_nodes):
        ov = cfg.per_layer.get(name, {})
        reason = haste_applicable(wshape, attrs)
        if reason is not None:
            if ov.get("enabled"):
                raise ValueError(f"HASTE per_layer enables conv {name!r}, but HASTE cannot apply: {reason}")
            continue
        kh, kw = (int(v) for v in attrs["kernel_shape"])
        strided = any(int(v) > 1 for v in attrs["strides"])
        enabled = (position >= cfg.start_layer
                   and (cfg.include_1x1 or (kh, kw) != (1, 1))
                   and (cfg.include_strided or not strided))
        if "enabled" in ov:
            enabled = bool(ov["enabled"])
        if not enabled:
            continue
        L = ov.get("L", cfg.L_by_cout.get(int(wshape[0]), cfg.L))
        out[name] = LayerSetting(L=L, s=float(ov.get("s", cfg.s)), P=ov.get("P", cfg.patch),
                                 seed=ov.get("seed", layer_seed(cfg.seed, position)))
    return out


# spec key -> HasteConfig field; short forms for the CLI, field names also accepted
_SPEC_KEYS = {"L": "L", "P": "patch", "patch": "patch", "s": "s", "seed": "seed",
              "start": "start_layer", "start_layer": "start_layer",
              "1x1": "include_1x1", "include_1x1": "include_1x1",
              "strided": "include_strided", "include_strided": "include_strided",
              "Lout": "L_by_cout", "L_by_cout": "L_by_cout"}
_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
               "off": False}


def _parse_value(key, fname, text):
    kind = {f.name: f.type for f in fields(HasteConfig)}[fname]
    if kind == "dict":                           # Lout=32:15/64:14: output channels -> L
        try:
            pairs = [item.split(":") for item in text.split("/")]
            out = {int(c): int(L) for c, L in pairs}
            if len(out) != len(pairs):
                raise ValueError
            return out
        except ValueError:
            raise ValueError(f"HASTE spec: bad value {text!r} for {key!r}: expected output-channel "
                             f"counts and L as C:L/C:L, e.g. 32:15/64:14") from None
    try:
        if kind == "bool":
            return _BOOL_WORDS[text.lower()]
        if kind == "float":
            if "/" in text:                      # s=2/3, as docs/METHOD.md section 1 writes it
                num, den = text.split("/", 1)
                return float(num) / float(den)
            return float(text)
        return int(text)
    except (KeyError, ValueError, ZeroDivisionError):
        want = {"bool": "0/1/true/false", "float": "a number (or a fraction like 2/3)", "int": "an integer"}[kind]
        raise ValueError(f"HASTE spec: bad value {text!r} for {key!r}: expected {want}") from None


# Named settings, chosen on training images of the bundled model only (benchmarks/haste_select.py,
# results/haste_select.md; their test-set figures in README "HASTE and time"): no node names, so
# they apply to any model. "auto" (method.Haste) is "fast" where the cost model says it pays.
NAMED_SETTINGS = {
    "fast": "L=4,P=4,start=15",    # fastest within 1 point there (results/haste_front_latency.md);
                                   # start counts convs in graph order: on the bundled ResNet its last stage
    # most conv MACs saved within 1 point there (results/haste_select_margin.md: the plain 1-point
    # rule): L by output channels, the bundled ResNet's four stages; other convs L=12
    "fewest-macs": "L=12,P=2,Lout=32:15/64:14/128:13/256:4",
}


def parse_haste_spec(spec: str) -> HasteConfig:
    """"L=12,P=4,s=0.667,seed=0,start=1" -> HasteConfig, or a named setting (NAMED_SETTINGS). L is
    required; other keys default as in HasteConfig. Keys: L, P (or patch), s, seed, start (or
    start_layer), 1x1 (or include_1x1), strided (or include_strided), Lout (or L_by_cout: L per
    output-channel count, as 32:15/64:14); booleans as 0/1/true/false."""
    spec = NAMED_SETTINGS.get(spec.strip(), spec)
    values = {}
    for item in (t.strip() for t in spec.split(",")):
        if not item:
            continue
        key, eq, text = (t.strip() for t in item.partition("="))
        if not eq or not text:
            raise ValueError(f"HASTE spec: {item!r} is not key=value (e.g. L=12,P=4,s=0.667,seed=0,start=1)")
        if key not in _SPEC_KEYS:
            raise ValueError(f"HASTE spec: unknown key {key!r}; known: {', '.join(_SPEC_KEYS)}")
        fname = _SPEC_KEYS[key]
        if fname in values:
            raise ValueError(f"HASTE spec: {key!r} given twice")
        values[fname] = _parse_value(key, fname, text)
    if "L" not in values:
        raise ValueError(f"HASTE spec {spec!r}: L (number of hyperplanes) is required, e.g. L=12 "
                         f"(or a named setting: {', '.join(['auto', *NAMED_SETTINGS])})")
    return HasteConfig(**values)
