"""HTTM settings: how many queries and keys/values each attention layer keeps, and how tokens are
grouped for matching (docs: README "HTTM", facts in the method notes).

    q        fraction of query tokens kept per head (1.0: queries untouched)
    kv       fraction of key/value tokens kept per head
    ns       patches per matching block (neighbouring tokens of one frame, in row-major order)
    nt       frames per matching block (the same patches of nt consecutive frames)
    outliers fraction d of query positions kept unmerged in every head: those farthest (L2, summed
             over the heads) from the merged token they were put in
    mode     "head": each head matches its own tokens (HTTM); "uniform": one matching for all heads,
             on the heads' vectors side by side (ToMe-style token merging, the baseline)
    start    index (over the model's attention layers, in order) of the first layer merged

`parse_httm_spec("q=0.5,kv=0.5,ns=16")` reads the CLI form; NAMED holds the named settings.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class HttmConfig:
    q: float = 1.0
    kv: float = 1.0
    ns: int = 8
    nt: int = 4
    outliers: float = 0.0
    mode: str = "head"
    start: int = 0

    def __post_init__(self):
        for name in ("q", "kv"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise ValueError(f"httm: {name}={v} must be a kept fraction in (0, 1]")
        if not 0.0 <= self.outliers < 1.0:
            raise ValueError(f"httm: outliers={self.outliers} must be in [0, 1)")
        for name in ("ns", "nt"):
            v = getattr(self, name)
            if not 1 <= v <= 4096:
                raise ValueError(f"httm: {name}={v} must be an integer in 1..4096")
        if self.mode not in ("head", "uniform"):
            raise ValueError(f"httm: mode={self.mode!r} must be 'head' or 'uniform'")
        if self.start < 0:
            raise ValueError(f"httm: start={self.start} must be >= 0")

    def spec(self) -> str:
        """The CLI form of this config (parse_httm_spec reads it back)."""
        return ",".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))


# Named settings. "fast": the fastest head-wise setting within 1 point of the dense top-1 on the
# bundled four-frame ViT (all 10,000 test images: -0.62 pt; attention time:
# benchmarks/results/httm_fashion_vit_t4*.md).
NAMED = {"dense": HttmConfig(), "fast": HttmConfig(q=0.2, kv=0.3)}

_TYPES = {f.name: f.type for f in fields(HttmConfig)}


def parse_httm_spec(spec: str) -> HttmConfig:
    """HttmConfig from "q=0.5,kv=0.3,..." or a named setting; ValueError naming the bad field."""
    spec = spec.strip()
    if spec in NAMED:
        return NAMED[spec]
    values = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or key not in _TYPES:
            raise ValueError(f"httm spec {spec!r}: unknown field {key!r}; fields: {', '.join(_TYPES)}, "
                             f"or a named setting: {', '.join(NAMED)}")
        kind = _TYPES[key]
        try:
            values[key] = raw.strip() if kind == "str" else (int(raw) if kind == "int" else float(raw))
        except ValueError:
            raise ValueError(f"httm spec {spec!r}: {key}={raw!r} is not a {kind}") from None
    return replace(HttmConfig(), **values)
