"""Mutated model files for fuzzing the loaders: make_case(seed, index) -> Case, deterministic.

Material: the bundled ResNet-18 (.haste and .onnx) and small hand-built ONNX graphs covering every
supported op (and their .haste conversions). Mutations: byte flips, truncations, structured ONNX edits
(attributes, dims, dtypes, op types, inputs, outputs, nodes), external data, .haste JSON tampering
(keys, types, versions, dtypes, shapes, nesting) and .npz specials (pickles, huge or wrong .npy headers,
zip bombs, encrypted or unknown-compression entries).
"""
from __future__ import annotations

import copy
import io
import json
import tempfile
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as TP
from onnx import external_data_helper, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
HASTE_RESNET = ROOT / "haste_edge" / "assets" / "fashion_resnet18.haste"
ONNX_RESNET = ROOT / "models" / "fashion_resnet18.onnx"

INTS = [0, 1, 2, 3, -1, -2, 7, 4096, 2**31, 2**40, -2**40, 2**63 - 1]
FLOATS = [0.0, -1.0, 1e-30, 1e30, float("nan"), float("inf"), -float("inf"), 0.5, 3.0]
STRINGS = [b"NOTSET", b"VALID", b"SAME_UPPER", b"SAME_LOWER", b"bogus", b"", b"reflect", b"constant"]
DTYPES = [TP.FLOAT16, TP.DOUBLE, TP.INT8, TP.INT64, TP.BOOL, TP.BFLOAT16, TP.UINT8, TP.INT32, TP.STRING, 0, 999]
OPS = ["Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "Gemm", "MatMul", "BatchNormalization", "Relu",
       "Clip", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Add", "Sub", "Mul", "Div",
       "Sum", "LRN", "ReduceMean", "Softmax", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
       "Concat", "Pad", "Identity", "Dropout", "Shape", "Gather", "NoSuchOp"]
ATTR_NAMES = ["pads", "strides", "kernel_shape", "dilations", "group", "auto_pad", "axis", "axes", "size",
              "alpha", "beta", "bias", "epsilon", "transA", "transB", "ceil_mode", "count_include_pad", "perm",
              "keepdims", "mode", "min", "max", "allowzero"]
JSON_VALUES = [None, "1", 1, 0, -1, 1.5, [], {}, True, 2**40, -2**40, "float32", [None], [1, 2], {"a": 1},
               float("nan"), 2**70, "x" * 300]


@dataclass
class Case:
    name: str               # mutation label, e.g. "onnx:attr_value"
    kind: str               # "haste" or "onnx": what the main file is
    files: dict             # relative file name -> bytes, written into one fresh directory
    main: str               # the file to load


# ---------------------------------------------------------------------------------------------
# base material
# ---------------------------------------------------------------------------------------------

def _model(nodes, inits, x_shape=("N", 3, 8, 8), y_shape=None):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, list(x_shape))],
                          [helper.make_tensor_value_info("y", TP.FLOAT, y_shape)],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@lru_cache(maxsize=None)
def templates() -> tuple:
    """Small valid ONNX models (serialised) that together use every supported op."""
    r = np.random.default_rng(0)
    f = lambda *s: r.standard_normal(s).astype(np.float32)  # noqa: E731
    n = helper.make_node
    models = [
        _model([n("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1], strides=[1, 1]),
                n("BatchNormalization", ["c", "g", "be", "m", "v"], ["bn"], name="bn"),
                n("Relu", ["bn"], ["r"], name="relu"),
                n("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
                n("Flatten", ["p"], ["fl"], name="flat", axis=1),
                n("Gemm", ["fl", "fc", "fb"], ["y"], name="fc", transB=1)],
               {"w": f(4, 3, 3, 3), "b": f(4), "g": f(4), "be": f(4), "m": f(4),
                "v": np.abs(f(4)) + 0.5, "fc": f(5, 64), "fb": f(5)}, y_shape=("N", 5)),
        _model([n("Conv", ["x", "w"], ["c"], name="dw", group=3, kernel_shape=[3, 3], auto_pad="SAME_UPPER"),
                n("Clip", ["c", "lo", "hi"], ["cl"], name="clip"),
                n("AveragePool", ["cl"], ["a"], name="avg", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                  count_include_pad=1),
                n("GlobalAveragePool", ["a"], ["gp"], name="gap"),
                n("Reshape", ["gp", "shape"], ["rs"], name="reshape"),
                n("Softmax", ["rs"], ["y"], name="softmax", axis=-1)],
               {"w": f(3, 1, 3, 3), "lo": np.array(0, np.float32), "hi": np.array(6, np.float32),
                "shape": np.array([0, -1], np.int64)}, y_shape=("N", 3)),
        _model([n("LRN", ["x"], ["l"], name="lrn", size=3, alpha=1e-3, beta=0.75, bias=1.0),
                n("LeakyRelu", ["l"], ["lr"], name="leaky", alpha=0.1),
                n("Pad", ["lr", "pads"], ["pd"], name="pad"),
                n("Identity", ["pd"], ["id"], name="ident"),
                n("Concat", ["pd", "id"], ["cc"], name="concat", axis=1),
                n("Transpose", ["cc"], ["t"], name="transpose", perm=[0, 2, 3, 1]),
                n("ReduceMean", ["t"], ["y"], name="mean", axes=[1, 2], keepdims=0)],
               {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)}),
        _model([n("HardSigmoid", ["x"], ["h"], name="hsig", alpha=0.2, beta=0.5),
                n("HardSwish", ["h"], ["hs"], name="hswish"),
                n("Sigmoid", ["hs"], ["s"], name="sig"),
                n("Tanh", ["s"], ["t"], name="tanh"),
                n("PRelu", ["t", "slope"], ["pr"], name="prelu"),
                n("Add", ["pr", "k"], ["a"], name="add"), n("Sub", ["a", "k"], ["sb"], name="sub"),
                n("Mul", ["sb", "k"], ["mu"], name="mul"), n("Div", ["mu", "k"], ["dv"], name="div"),
                n("Sum", ["dv", "pr", "a"], ["sm"], name="sum"),
                n("ReduceMean", ["sm"], ["rm"], name="rmean", axes=[1], keepdims=1),
                n("Squeeze", ["rm", "sq"], ["sq_o"], name="squeeze"),
                n("Unsqueeze", ["sq_o", "sq"], ["un"], name="unsqueeze"),
                n("Flatten", ["un"], ["fl"], name="flat"),
                n("MatMul", ["fl", "mm"], ["y"], name="matmul")],
               {"slope": f(3, 1, 1), "k": np.float32(1.5) + np.abs(f(1, 3, 1, 1)),
                "sq": np.array([1], np.int64), "mm": f(64, 4)}),
    ]
    return tuple(m.SerializeToString() for m in models)


@lru_cache(maxsize=None)
def haste_templates() -> tuple:
    """The small templates converted to .haste (bytes)."""
    from converters.onnx_import import import_onnx
    from haste_edge import modelfile
    out = []
    with tempfile.TemporaryDirectory() as d:
        for i, blob in enumerate(templates()):
            src = Path(d) / f"t{i}.onnx"
            src.write_bytes(blob)
            out.append(modelfile.save(import_onnx(src), Path(d) / f"t{i}.haste").read_bytes())
    return tuple(out)


@lru_cache(maxsize=None)
def resnet_haste() -> bytes:
    return HASTE_RESNET.read_bytes()


@lru_cache(maxsize=None)
def resnet_onnx() -> bytes:
    return ONNX_RESNET.read_bytes()


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _npy(arr, version=None) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, version=version, allow_pickle=True)
    return buf.getvalue()


def _npy_raw(header: dict, data: bytes) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + data


def _members(blob: bytes) -> dict:
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        return {n: z.read(n) for n in z.namelist()}


def _zip(members: dict, compress=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compress) as z:
        for n, d in members.items():
            z.writestr(n, d)
    return buf.getvalue()


def _doc(members: dict) -> dict:
    return json.loads(np.load(io.BytesIO(members["graph.json.npy"])).tobytes().decode())


def _put_doc(members: dict, doc) -> None:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    members["graph.json.npy"] = _npy(np.frombuffer(text.encode("utf-8", "surrogatepass"), np.uint8))


def _paths(obj, prefix=()):
    """Every (path, value) inside a JSON document."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _get(obj, path):
    for p in path:
        obj = obj[p]
    return obj


# ---------------------------------------------------------------------------------------------
# .haste mutations
# ---------------------------------------------------------------------------------------------

def _haste_base(rng) -> bytes:
    return resnet_haste() if rng.random() < 0.15 else _pick(rng, haste_templates())


def haste_json(rng) -> tuple[str, bytes]:
    members = _members(_haste_base(rng))
    doc = _doc(members)
    paths = [p for p, _ in _paths(doc) if p and p[0] != "meta"] or [("nodes",)]
    what = _pick(rng, ["drop", "retype", "version", "dtype", "input_dims", "attr", "op", "rename", "extra",
                       "whole", "deep", "utf8", "not_json", "weight_key", "node_io"])
    if what == "drop":
        path = _pick(rng, paths)
        parent = _get(doc, path[:-1])
        parent.pop(path[-1])
    elif what == "retype":
        path = _pick(rng, paths)
        _get(doc, path[:-1])[path[-1]] = copy.deepcopy(_pick(rng, JSON_VALUES))
    elif what == "version":
        doc["version"] = _pick(rng, ["1", None, 0, 2, -1, 1.0, True, [1], 2**64])
    elif what == "dtype" and doc["weights"]:
        e = _pick(rng, list(doc["weights"].values()))
        e["dtype"] = _pick(rng, ["int8", "float16", "float64", "int64", "bool", "object", "float99", "<f4",
                                 "uint8", "complex64", "bfloat16", "V8", "S4", None, 3])
    elif what == "input_dims":
        name = next(iter(doc["inputs"]))
        dims = doc["inputs"][name]
        dims[int(rng.integers(len(dims)))] = _pick(rng, [0, -1, None, 4096, 2**20, 2**40, 1.5, "8", 2**63])
        if rng.random() < 0.3:
            dims.append(1)
    elif what == "attr":
        node = _pick(rng, doc["nodes"])
        key = _pick(rng, list(node["attrs"]) + ["bogus"]) if node["attrs"] else "bogus"
        val = _pick(rng, INTS + FLOATS + [None, [], [0, 0], [1, 1, 1, 1], [2**40] * 4, [0, 0, 0, 0], "Relu",
                                          "Gelu", [1.5, 2.5], [-1, -1, -1, -1]])
        node["attrs"][key] = val
    elif what == "op":
        _pick(rng, doc["nodes"])["op"] = _pick(rng, OPS)
    elif what == "rename":
        node = _pick(rng, doc["nodes"])
        field = _pick(rng, ["inputs", "outputs"])
        if node[field]:
            node[field][int(rng.integers(len(node[field])))] = _pick(rng, ["", "nope", "x", node["name"]])
    elif what == "extra":
        doc[_pick(rng, ["extra", "weights2"])] = 1
    elif what == "whole":
        doc = _pick(rng, [[doc], "doc", 1, None, {}, {"format": "haste-edge-model"}])
    elif what == "deep":
        depth = int(rng.integers(1000, 200000))
        doc = '{"format": "haste-edge-model", "version": 1, "meta": ' + "[" * depth + "]" * depth + "}"
    elif what == "utf8":
        members["graph.json.npy"] = _npy(np.frombuffer(b'{"format": "\xff\xfe"}', np.uint8))
        return f"haste_json:{what}", _zip(members)
    elif what == "not_json":
        members["graph.json.npy"] = _npy(np.frombuffer(b"{not json", np.uint8))
        return f"haste_json:{what}", _zip(members)
    elif what == "weight_key" and doc["weights"]:
        e = _pick(rng, list(doc["weights"].values()))
        e["key"] = _pick(rng, ["graph.json", "w999", "", "../w0", e["key"]])
    elif what == "node_io":
        node = _pick(rng, doc["nodes"])
        node["inputs"] = node["inputs"][:int(rng.integers(len(node["inputs"]) + 1))] + \
            (["x"] if rng.random() < 0.3 else [])
    _put_doc(members, doc)
    return f"haste_json:{what}", _zip(members)


@lru_cache(maxsize=None)
def _bomb() -> bytes:
    """A deflated entry whose .npy header claims 320 MiB of float32 zeros (~320 KiB packed): over the
    fuzzing memory limit, so it must be refused before it is decompressed."""
    return _npy_raw({"descr": "<f4", "fortran_order": False, "shape": (80 << 20,)}, bytes(320 << 20))


def haste_npz(rng) -> tuple[str, bytes]:
    members = _members(_haste_base(rng))
    weights = [k for k in members if k != "graph.json.npy"] or ["graph.json.npy"]
    key = _pick(rng, weights)
    arr = np.load(io.BytesIO(members[key]))
    what = _pick(rng, ["pickle", "huge_header", "shape_mismatch", "dtype", "fortran", "version", "magic",
                       "bomb", "missing", "graph_float", "encrypted", "compression", "negative_shape",
                       "big_endian", "extra_member", "graph_pickle"])
    compress = zipfile.ZIP_STORED
    if what == "pickle":
        members[key] = _npy(np.array([{"a": 1}, None], dtype=object))
    elif what == "graph_pickle":
        members["graph.json.npy"] = _npy(np.array(["x"], dtype=object))
    elif what == "huge_header":
        members[key] = _npy_raw({"descr": "<f4", "fortran_order": False, "shape": (2**40,)}, b"\0" * 64)
    elif what == "shape_mismatch":
        shape = tuple(d + 1 for d in arr.shape) or (2,)
        members[key] = _npy_raw({"descr": "<f4", "fortran_order": False, "shape": shape}, arr.tobytes())
    elif what == "negative_shape":
        members[key] = _npy_raw({"descr": "<f4", "fortran_order": False, "shape": (-1, 4)}, arr.tobytes())
    elif what == "dtype":
        members[key] = _npy(arr.astype(_pick(rng, [np.float64, np.int8, np.int64, np.bool_, np.complex64,
                                                   np.uint8, np.float16])))
    elif what == "big_endian":
        members[key] = _npy(arr.astype(">f4"))
    elif what == "fortran":
        members[key] = _npy(np.asfortranarray(arr))
    elif what == "version":
        members[key] = _npy(arr, version=_pick(rng, [(2, 0), (3, 0)]))
    elif what == "magic":
        blob = bytearray(members[key])
        blob[6] = _pick(rng, [0, 4, 9, 255])
        members[key] = bytes(blob)
    elif what == "bomb":
        members[key] = _bomb()
        compress = zipfile.ZIP_DEFLATED
    elif what == "missing":
        members.pop(_pick(rng, list(members)))
    elif what == "graph_float":
        members["graph.json.npy"] = _npy(np.zeros(8, np.float32))
    elif what == "extra_member":
        members["../evil.npy"] = _npy(np.zeros(2, np.float32))
    blob = _zip(members, compress)
    if what in ("encrypted", "compression"):
        blob = bytearray(blob)
        at = blob.find(b"PK\x03\x04")
        cd = blob.find(b"PK\x01\x02")
        if what == "encrypted":   # general purpose flag bit 0 in the local and central headers
            blob[at + 6] |= 1
            blob[cd + 8] |= 1
        else:                     # compression method 99 (unknown)
            blob[at + 8] = blob[cd + 10] = 99
        blob = bytes(blob)
    return f"haste_npz:{what}", blob


# ---------------------------------------------------------------------------------------------
# ONNX mutations
# ---------------------------------------------------------------------------------------------

def _attr_value(rng, like=None):
    kind = like.type if like is not None else _pick(rng, [onnx.AttributeProto.INT, onnx.AttributeProto.INTS,
                                                           onnx.AttributeProto.FLOAT, onnx.AttributeProto.STRING])
    if kind == onnx.AttributeProto.INTS:
        return [_pick(rng, INTS) if rng.random() < 0.5 else int(rng.integers(-2, 5))
                for _ in range(int(rng.integers(0, 6)))]
    if kind == onnx.AttributeProto.FLOAT:
        return _pick(rng, FLOATS)
    if kind == onnx.AttributeProto.STRING:
        return _pick(rng, STRINGS)
    if kind == onnx.AttributeProto.FLOATS:
        return [_pick(rng, FLOATS) for _ in range(int(rng.integers(0, 4)))]
    return _pick(rng, INTS) if rng.random() < 0.6 else int(rng.integers(-2, 5))


def _set_attr(node, name, value):
    keep = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(keep)
    empty = onnx.AttributeProto.INTS if isinstance(value, list) and not value else None
    node.attribute.append(helper.make_attribute(name, value, attr_type=empty))


def _cast_init(rng, m):
    t = _pick(rng, list(m.graph.initializer))
    arr = numpy_helper.to_array(t)
    dtype = _pick(rng, [np.int8, np.bool_, np.int64, np.float64, np.float16, "bfloat16", np.int32])
    if dtype == "bfloat16":
        new = helper.make_tensor(t.name, TP.BFLOAT16, arr.shape, arr.astype(np.float32).ravel().tolist())
    else:
        new = numpy_helper.from_array(arr.astype(dtype), t.name)
    t.CopyFrom(new)


def onnx_struct(rng, m: onnx.ModelProto) -> str:
    """One structured edit of `m` in place; returns its label."""
    g = m.graph
    what = _pick(rng, ["attr_value", "attr_value", "attr_remove", "attr_add", "input_dim", "input_dtype",
                       "init_dtype", "init_shape", "op_type", "drop_input", "drop_node", "output_unshaped",
                       "output_rename", "add_input", "opset"])
    node = _pick(rng, list(g.node))
    if what == "attr_value" and node.attribute:
        a = _pick(rng, list(node.attribute))
        _set_attr(node, a.name, _attr_value(rng, a))
    elif what == "attr_remove" and node.attribute:
        keep = [a for a in node.attribute if a.name != _pick(rng, list(node.attribute)).name]
        del node.attribute[:]
        node.attribute.extend(keep)
    elif what in ("attr_add", "attr_value", "attr_remove"):
        what = "attr_add"
        _set_attr(node, _pick(rng, ATTR_NAMES), _attr_value(rng))
    elif what == "input_dim":
        dims = g.input[0].type.tensor_type.shape.dim
        d = dims[int(rng.integers(len(dims)))]
        v = _pick(rng, [0, -1, 1, 2, 4096, 2**20, 2**40, "N", None])
        if v is None:
            d.Clear()
        elif isinstance(v, str):
            d.dim_param = v
        else:
            d.dim_value = v
        if rng.random() < 0.2:
            dims.add().dim_value = 1
    elif what == "input_dtype":
        g.input[0].type.tensor_type.elem_type = _pick(rng, DTYPES)
    elif what == "init_dtype" and g.initializer:
        _cast_init(rng, m)
    elif what == "init_shape" and g.initializer:
        t = _pick(rng, list(g.initializer))
        if rng.random() < 0.5:   # dims that disagree with the stored data
            t.dims[:] = [int(x) for x in rng.integers(0, 6, int(rng.integers(0, 5)))]
        else:
            arr = numpy_helper.to_array(t)
            t.CopyFrom(numpy_helper.from_array(
                rng.standard_normal(tuple(int(x) for x in rng.integers(1, 5, max(arr.ndim, 1)))).astype(arr.dtype),
                t.name))
    elif what == "op_type":
        node.op_type = _pick(rng, OPS)
    elif what == "drop_input" and node.input:
        i = int(rng.integers(len(node.input)))
        ins = list(node.input)
        ins[i] = "" if rng.random() < 0.5 else ins[i]
        if ins[i]:
            ins.pop(i)
        del node.input[:]
        node.input.extend(ins)
    elif what == "add_input":
        node.input.append(_pick(rng, ["x", "nope", ""]))
    elif what == "drop_node" and len(g.node) > 1:
        keep = [n for n in g.node if n is not node]
        del g.node[:]
        g.node.extend(keep)
    elif what == "output_unshaped":
        g.output[0].type.tensor_type.ClearField("shape")
    elif what == "output_rename":
        g.output[0].name = _pick(rng, ["nope", "x", g.node[0].output[0]])
    elif what == "opset":
        m.opset_import[0].version = _pick(rng, [1, 5, 7, 10, 11, 12, 13, 18, 21, 99])
    else:
        what = "noop"
    return what


def onnx_mutation(rng) -> tuple[str, bytes]:
    m = onnx.ModelProto()
    m.ParseFromString(_pick(rng, templates()))
    labels = []
    for _ in range(int(rng.integers(1, 3))):
        try:
            labels.append(onnx_struct(rng, m))
        except ValueError:  # an earlier edit left an initializer numpy_helper cannot read: keep that one
            labels.append("skipped")
    return "onnx:" + "+".join(labels), m.SerializeToString()


def resnet_onnx_mutation(rng) -> tuple[str, bytes]:
    m = onnx.ModelProto()
    m.ParseFromString(resnet_onnx())
    return "resnet_onnx:" + onnx_struct(rng, m), m.SerializeToString()


def external_data(rng) -> tuple[str, dict]:
    m = onnx.ModelProto()
    m.ParseFromString(_pick(rng, templates()[:2]))
    t = m.graph.initializer[0]
    raw = numpy_helper.to_array(t).tobytes()
    where = _pick(rng, ["../../etc/passwd", "/etc/passwd", "missing.bin", "w.bin", "w.bin:offset",
                        "w.bin:length", "sub/../w.bin", "w.bin:short"])
    files = {"w.bin": raw if where != "w.bin:short" else raw[:len(raw) // 2]}
    loc, offset, length = where.split(":")[0], 0, len(raw)
    if where.endswith(":offset"):
        offset = 2**40
    elif where.endswith(":length"):
        length = 2**40
    external_data_helper.set_external_data(t, location=loc, offset=offset, length=length)
    t.ClearField("raw_data")
    t.data_location = TP.EXTERNAL
    files["m.onnx"] = m.SerializeToString()
    return f"external_data:{where}", files


# ---------------------------------------------------------------------------------------------
# byte-level
# ---------------------------------------------------------------------------------------------

def _any_file(rng) -> tuple[str, bytes]:
    r = rng.random()
    if r < 0.1:
        return "haste", resnet_haste()
    if r < 0.13:
        return "onnx", resnet_onnx()
    if r < 0.55:
        return "haste", _pick(rng, haste_templates())
    return "onnx", _pick(rng, templates())


def byte_flips(rng) -> tuple[str, str, bytes]:
    kind, blob = _any_file(rng)
    blob = bytearray(blob)
    for _ in range(int(rng.integers(1, 9))):
        blob[int(rng.integers(len(blob)))] = int(rng.integers(256))
    return "byte_flip", kind, bytes(blob)


def truncation(rng) -> tuple[str, str, bytes]:
    kind, blob = _any_file(rng)
    return "truncate", kind, blob[:int(rng.integers(len(blob)))]


# ---------------------------------------------------------------------------------------------

MIX = [  # (share, generator)
    (0.32, "onnx"), (0.22, "haste_json"), (0.14, "haste_npz"), (0.10, "flip"), (0.08, "truncate"),
    (0.05, "external"), (0.04, "valid"), (0.02, "resnet_onnx"), (0.03, "resnet_valid"),
]


def make_case(seed: int, index: int) -> Case:
    rng = np.random.default_rng([seed, index])
    shares = np.array([s for s, _ in MIX])
    gen = MIX[int(rng.choice(len(MIX), p=shares / shares.sum()))][1]
    single = {"onnx": (onnx_mutation, "onnx"), "resnet_onnx": (resnet_onnx_mutation, "onnx"),
              "haste_json": (haste_json, "haste"), "haste_npz": (haste_npz, "haste")}
    if gen in single:                                     # one mutated file of one kind
        mutate, kind = single[gen]
        name, blob = mutate(rng)
        return Case(name, kind, {f"m.{kind}": blob}, f"m.{kind}")
    if gen in ("flip", "truncate"):
        name, kind, blob = (byte_flips if gen == "flip" else truncation)(rng)
        return Case(f"{name}:{kind}", kind, {f"m.{kind}": blob}, f"m.{kind}")
    if gen == "external":
        name, files = external_data(rng)
        return Case(name, "onnx", files, "m.onnx")
    if gen == "resnet_valid":
        if rng.random() < 0.5:
            return Case("valid:resnet_haste", "haste", {"m.haste": resnet_haste()}, "m.haste")
        return Case("valid:resnet_onnx", "onnx", {"m.onnx": resnet_onnx()}, "m.onnx")
    i = int(rng.integers(len(templates())))
    if rng.random() < 0.5:
        return Case("valid:onnx", "onnx", {"m.onnx": templates()[i]}, "m.onnx")
    return Case("valid:haste", "haste", {"m.haste": haste_templates()[i]}, "m.haste")
