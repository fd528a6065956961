"""Checks the .haste graph document (graph.json) field by field before any of it is used.

Raises ValueError naming the first bad field, e.g. "nodes[3].inputs[1]: expected a string, got int".
Op attribute values are checked later, per op (haste_edge/ops/checks.py); here only their JSON shape.
"""
from __future__ import annotations

# dtypes a weight may have in the table; save() writes float32 weights (stored as float16 with
# --fp16), int8 ones (PROM's codes) as int8, and "ternary" codes packed 2 bits each with their shape
WEIGHT_DTYPES = ("float32", "int8", "ternary")
TOP_FIELDS = ("format", "version", "inputs", "outputs", "nodes", "weights", "meta")
NODE_FIELDS = ("op", "name", "inputs", "outputs", "attrs")


def _type(v) -> str:
    return "null" if v is None else type(v).__name__


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _obj(v, where, fields=None, optional=()):
    if not isinstance(v, dict):
        raise ValueError(f"{where}: expected an object, got {_type(v)}")
    if fields is not None:
        for k in fields:
            if k not in v and k not in optional:
                raise ValueError(f"{where}: missing field '{k}'")
        extra = [k for k in v if k not in fields]
        if extra:
            raise ValueError(f"{where}: unknown field '{extra[0]}'")
    return v


def _str(v, where, empty_ok=False):
    if not isinstance(v, str):
        raise ValueError(f"{where}: expected a string, got {_type(v)}")
    if not v and not empty_ok:
        raise ValueError(f"{where}: empty string")


def _str_list(v, where, empty_ok=False, items_empty_ok=False):
    if not isinstance(v, list):
        raise ValueError(f"{where}: expected a list, got {_type(v)}")
    if not v and not empty_ok:
        raise ValueError(f"{where}: empty list")
    for i, s in enumerate(v):
        _str(s, f"{where}[{i}]", items_empty_ok)


def _attr_value(v, where):
    """Attribute values are null, a bool, number or string, or a flat list of numbers."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return
    if isinstance(v, list):
        for i, x in enumerate(v):
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise ValueError(f"{where}[{i}]: expected a number, got {_type(x)}")
        return
    raise ValueError(f"{where}: expected a number, string, null or list of numbers, got {_type(v)}")


def check_document(doc, fmt: str, version: int) -> None:
    _obj(doc, "graph.json")
    if doc.get("format") != fmt:
        raise ValueError(f"format: expected {fmt!r}, got {doc.get('format')!r} (not a haste-edge model file)")
    _obj(doc, "graph.json", TOP_FIELDS, optional=("meta",))
    v = doc["version"]
    if not _is_int(v) or v < 1:
        raise ValueError(f"version: expected a positive integer, got {v!r}")
    if v > version:
        raise ValueError(f"version: model file version {v} is newer than this haste-edge understands "
                         f"({version}); upgrade haste-edge")
    inputs = _obj(doc["inputs"], "inputs")
    if not inputs:
        raise ValueError("inputs: the model has no inputs")
    for name, shape in inputs.items():
        where = f"inputs['{name}']"
        _str(name, where)
        if not isinstance(shape, list) or not shape:
            raise ValueError(f"{where}: expected a non-empty list of dims, got {_type(shape)}")
        for i, d in enumerate(shape):
            if d is None and i == 0:
                continue  # the batch dim may be free
            if not _is_int(d) or d < 1:
                raise ValueError(f"{where}[{i}]: expected a positive integer dim, got {d!r}")
    _str_list(doc["outputs"], "outputs")
    if not isinstance(doc["nodes"], list) or not doc["nodes"]:
        raise ValueError(f"nodes: expected a non-empty list, got {_type(doc['nodes'])}")
    for i, n in enumerate(doc["nodes"]):
        where = f"nodes[{i}]"
        _obj(n, where, NODE_FIELDS)
        _str(n["op"], f"{where}.op")
        _str(n["name"], f"{where}.name")
        _str_list(n["inputs"], f"{where}.inputs", empty_ok=True, items_empty_ok=True)
        _str_list(n["outputs"], f"{where}.outputs")
        for k, a in _obj(n["attrs"], f"{where}.attrs").items():
            _attr_value(a, f"{where}.attrs.{k}")
    for name, e in _obj(doc["weights"], "weights").items():
        where = f"weights['{name}']"
        _obj(e, where, ("key", "dtype", "shape"), optional=("shape",))
        _str(e["key"], f"{where}.key")
        if e["dtype"] not in WEIGHT_DTYPES:
            raise ValueError(f"{where}.dtype: expected one of {list(WEIGHT_DTYPES)}, got {e['dtype']!r}")
        if e["dtype"] == "ternary" and not (isinstance(e.get("shape"), list) and len(e["shape"]) <= 8
                                            and all(_is_int(d) and 0 <= d < 2 ** 31 for d in e["shape"])):
            raise ValueError(f"{where}.shape: packed ternary weights need their shape, a list of "
                             f"non-negative integers; got {e.get('shape')!r}")
    meta = _obj(doc.get("meta", {}), "meta")
    if "labels" in meta:
        _str_list(meta["labels"], "meta.labels", empty_ok=True, items_empty_ok=True)
    if "input" in meta:
        _check_preprocess(_obj(meta["input"], "meta.input"))


def _check_preprocess(spec: dict) -> None:
    """The preprocessing keys haste_edge/preprocess.py reads."""
    if "mode" in spec and spec["mode"] not in ("L", "RGB"):
        raise ValueError(f"meta.input.mode: expected 'L' or 'RGB', got {spec['mode']!r}")
    for k in ("resize", "crop"):
        if spec.get(k) is not None and (not _is_int(spec[k]) or not 0 < spec[k] <= 1 << 16):
            raise ValueError(f"meta.input.{k}: expected a positive integer up to 65536, got {spec[k]!r}")
    if "scale" in spec and (isinstance(spec["scale"], bool) or not isinstance(spec["scale"], (int, float))):
        raise ValueError(f"meta.input.scale: expected a number, got {_type(spec['scale'])}")
    for k in ("mean", "std"):
        if k in spec:
            v = spec[k]
            if not isinstance(v, list) or not v or any(isinstance(x, bool) or not isinstance(x, (int, float))
                                                      for x in v):
                raise ValueError(f"meta.input.{k}: expected a non-empty list of numbers")
            if k == "std" and any(x == 0 for x in v):
                raise ValueError("meta.input.std: a zero std divides by zero")
