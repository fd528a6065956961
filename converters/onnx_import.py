"""ONNX file -> the engine's Graph: check, fold constants and static shapes, canonicalise, fuse.

Shape arithmetic (Shape -> Gather -> Unsqueeze -> Concat -> Reshape, as torch's `x.view(x.size(0), -1)`
exports it) is folded by evaluating the static part of the graph twice, with two different batch sizes:
values equal in both passes are constants; a Reshape target entry that follows the batch size becomes -1.
Everything that stays is an engine op with canonical attributes (see onnx_canonical.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx.external_data_helper
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from haste_edge import limits, validate
from haste_edge.errors import HasteEdgeError, ModelFileError, UnsupportedOpError
from haste_edge.graph import Graph, Node
from haste_edge.ops import checks, registry

from . import onnx_canonical
from .graph_passes import optimise

# Ops that may appear in a model as long as they only compute constants (folded at conversion).
# Engine ops (Gather...) are folded too where they compute constants.
FOLD_ONLY = {"Shape", "Cast", "Constant", "ConstantOfShape", "Slice", "Range", "Expand",
             "Equal", "Where", "Floor", "Ceil", "Sqrt", "Size", "Dropout"}
_BATCHES = (3, 5)  # two batch sizes for the folding passes; unlikely to collide with real dims


def read_onnx(path) -> onnx.ModelProto:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    limits.check(path.stat().st_size, f"{path}: the ONNX file", ModelFileError)
    try:
        model = onnx.load(str(path), load_external_data=False)
        _check_external_data(model, path)
        onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    except HasteEdgeError:
        raise
    except Exception as e:  # protobuf raises various types on truncated/corrupt files
        raise ModelFileError(f"{path}: not a readable ONNX model (corrupt or truncated?): "
                             f"{_first_line(e)}") from None
    # An output declared without a shape is valid (onnxruntime runs it) but the checker wants the
    # field: give it an empty one while checking. The converter infers every shape itself.
    unshaped = [vi.type.tensor_type for vi in model.graph.output
                if vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape")]
    for t in unshaped:
        t.shape.SetInParent()
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise ModelFileError(f"{path}: invalid ONNX model: {_first_line(e)}") from None
    finally:
        for t in unshaped:
            t.ClearField("shape")
    if not model.graph.node:
        raise ModelFileError(f"{path}: the ONNX graph has no nodes")
    return model


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _check_external_data(model, path: Path) -> None:
    """External tensor files must be plain relative paths inside the model's directory and within the
    memory limit. Checked here rather than left to the onnx package, whose checks vary by version."""
    base = path.parent.resolve()
    for t in onnx.external_data_helper._get_all_tensors(model):
        if not onnx.external_data_helper.uses_external_data(t):
            continue
        loc = onnx.external_data_helper.ExternalDataInfo(t).location
        target = (base / loc).resolve()
        if not loc or Path(loc).is_absolute() or ".." in Path(loc).parts or not target.is_relative_to(base):
            raise ModelFileError(f"{path}: tensor '{t.name}': external data location {loc!r} is not a "
                                 f"relative path inside the model's directory")
        if not target.is_file():
            raise ModelFileError(f"{path}: tensor '{t.name}': external data file {loc!r} not found")
        limits.check(target.stat().st_size, f"{path}: external data {loc!r}", ModelFileError)


def _opset(model, path) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            known = onnx.defs.onnx_opset_version()
            if not 1 <= imp.version <= known:
                raise UnsupportedOpError(f"{path}: opset {imp.version} is outside what this onnx package "
                                         f"knows (1 to {known})")
            return imp.version
    return 1


def _check_supported(model, path, opset):
    bad = [n for n in model.graph.node
           if n.domain not in ("", "ai.onnx") or (n.op_type not in registry.OPS and n.op_type not in FOLD_ONLY)]
    if bad:
        n = bad[0]
        op = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
        others = sorted({m.op_type for m in bad} - {n.op_type})
        more = f" (also unsupported: {', '.join(others)})" if others else ""
        raise UnsupportedOpError(
            f"{path}: unsupported op '{op}' at node '{n.name}' (opset {opset}){more}. "
            f"Supported ops: {', '.join(registry.supported_ops())}")


def _input_shapes(model, consts, path) -> dict[str, tuple]:
    shapes = {}
    for vi in model.graph.input:
        if vi.name in consts:
            continue  # old exporters list initializers as inputs too
        kind = vi.type.WhichOneof("value")
        if kind != "tensor_type":
            raise UnsupportedOpError(f"{path}: input '{vi.name}' has a {kind}; only tensor inputs are supported")
        t = vi.type.tensor_type
        if t.elem_type != onnx.TensorProto.FLOAT:
            raise UnsupportedOpError(
                f"{path}: input '{vi.name}' has element type {_type_name(t.elem_type)}; "
                f"only float32 inputs are supported (the engine computes in float32)")
        if not t.HasField("shape"):
            raise UnsupportedOpError(f"{path}: input '{vi.name}' has no shape")
        dims = []
        for axis, d in enumerate(t.shape.dim):
            if d.HasField("dim_value"):
                if d.dim_value < 1:
                    raise UnsupportedOpError(f"{path}: input '{vi.name}' declares dim {d.dim_value} at axis "
                                             f"{axis}; only positive dims are supported")
                dims.append(int(d.dim_value))
            elif axis == 0:
                dims.append(None)  # the batch dim may be free
            else:
                raise UnsupportedOpError(
                    f"{path}: input '{vi.name}' has a dynamic dim {d.dim_param!r} at axis {axis}; "
                    f"only the batch dim (axis 0) may be dynamic")
        shapes[vi.name] = tuple(dims)
    return shapes


def _constants(model, path) -> dict[str, np.ndarray]:
    consts = {}
    for t in model.graph.initializer:
        limits.check(_declared_bytes(t), f"{path}: initializer '{t.name}'", ModelFileError)
        try:
            consts[t.name] = numpy_helper.to_array(t)
        except Exception as e:  # onnx raises various types for dims that disagree with the data
            raise ModelFileError(f"{path}: initializer '{t.name}' is unreadable: {e}") from None
    return consts


def _declared_bytes(t) -> int:
    """Size the initializer's dims claim, at 8 bytes per element (the widest type numpy_helper makes)."""
    n = 1
    for d in t.dims:
        n *= max(int(d), 0)
    return 8 * n


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _fold_node(node, values, opset):
    """Evaluate a node whose inputs are all known, with onnx's own reference implementation."""
    feeds = {name: values[name] for name in node.input if name}
    # a one-node model, so the evaluator applies the op's semantics at the model's opset
    inputs = [onnx.helper.make_tensor_value_info(k, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), None)
              for k, v in feeds.items()]
    outputs = [onnx.helper.make_empty_tensor_value_info(o) for o in node.output if o]
    proto = onnx.helper.make_model(onnx.helper.make_graph([node], "fold", inputs, outputs),
                                   opset_imports=[onnx.helper.make_opsetid("", opset)])
    try:
        outs = ReferenceEvaluator(proto).run(None, feeds)
    except Exception as e:
        raise UnsupportedOpError(f"{node.op_type} node '{node.name}': cannot fold constant: {e}") from None
    return [np.asarray(o) for o in outs]


def _static_pass(model, consts, input_shapes, batch, opset):
    """One walk over the graph at a fixed batch size: constant values, tensor shapes, canonical attrs."""
    values = dict(consts)
    shapes = {k: tuple(batch if d is None else d for d in s) for k, s in input_shapes.items()}
    shapes.update({k: v.shape for k, v in consts.items()})
    canon = {}
    used = {x for n in model.graph.node for x in n.input} | {o.name for o in model.graph.output}
    for node in model.graph.node:
        op, attrs = node.op_type, _attrs(node)
        known = all(name in values for name in node.input if name)
        if op == "Shape" and node.input[0] in shapes:
            s = np.array(shapes[node.input[0]], dtype=np.int64)
            values[node.output[0]] = s[attrs.get("start", 0):attrs.get("end", None)]
        elif op == "Size" and node.input[0] in shapes:
            values[node.output[0]] = np.array(int(np.prod(shapes[node.input[0]])), dtype=np.int64)
        elif known and op != "Dropout":
            for name, v in zip(node.output, _fold_node(node, values, opset)):
                values[name] = v
        elif op in FOLD_ONLY and op != "Dropout":
            raise UnsupportedOpError(
                f"{op} node '{node.name}' (opset {opset}) works on run-time data; it is only supported "
                f"where it computes constants (static shapes)")
        else:
            nv = onnx_canonical.NodeView(node, attrs, values, shapes, opset)
            if op == "Dropout":  # inference: identity
                onnx_canonical.check_inference_dropout(nv, used)
                op, c_attrs, tensor_inputs = "Identity", {}, list(node.input[:1])
            else:
                c_attrs, tensor_inputs = onnx_canonical.canonical(nv)
            in_shapes = [shapes.get(n) if n else None for n in tensor_inputs]
            outputs = _outputs(node, op)
            try:
                checks.check(op, c_attrs, tensor_inputs, outputs, registry.OPS[op].attrs)
                out_shapes = registry.OPS[op].infer(in_shapes, c_attrs)
            except ValueError as e:
                raise ModelFileError(f"{op} node '{node.name}': {e}") from None
            for name, s in zip(node.output, out_shapes):
                shapes[name] = tuple(int(d) for d in s)
            canon[node.name or node.output[0]] = (op, c_attrs, list(tensor_inputs), outputs)
        for name in node.output:
            if name in values:
                shapes[name] = values[name].shape
    return values, shapes, canon


def _outputs(node, op) -> list[str]:
    """The node's outputs the engine computes: Identity's (Dropout's) first; otherwise all up to the
    last named one (absent optional outputs at the end are dropped, e.g. LayerNormalization's Mean)."""
    if op == "Identity":
        return [o for o in node.output if o][:1]
    outs = list(node.output)
    while outs and not outs[-1]:
        outs.pop()
    return outs


def _merge_passes(passes, node_names):
    """Combine the passes at two batch sizes: a Reshape target entry that follows the batch size
    becomes 0 (copy the input's dim) where the input's dim follows it too, else -1."""
    (vals_a, shapes_a, canon_a), (vals_b, shapes_b, canon_b) = passes
    for key in node_names:
        if key not in canon_a:
            continue
        op, attrs_a, ins, _ = canon_a[key]
        attrs_b = canon_b[key][1]
        if attrs_a == attrs_b:
            continue
        if op != "Reshape" or len(attrs_a["shape"]) != len(attrs_b["shape"]):
            raise UnsupportedOpError(f"{op} node '{key}': its parameters depend on the batch size")
        shape = list(attrs_a["shape"])
        in_a, in_b = shapes_a[ins[0]], shapes_b[ins[0]]
        for i, (x, y) in enumerate(zip(attrs_a["shape"], attrs_b["shape"])):
            if x == y:
                continue
            if i < len(in_a) and (in_a[i], in_b[i]) == (x, y) and not attrs_a["allowzero"]:
                shape[i] = 0
            elif -1 not in shape:
                shape[i] = -1
            else:
                raise UnsupportedOpError(f"Reshape node '{key}': cannot express its batch-dependent target shape")
        attrs_a["shape"] = shape
    return {k for k, v in vals_a.items() if k in vals_b and np.array_equal(v, vals_b[k])}


def import_onnx(path) -> Graph:
    """Read an .onnx file into the engine's Graph (folded, canonical, BN and activations fused)."""
    path = Path(path)
    model = read_onnx(path)
    opset = _opset(model, path)
    _check_supported(model, path, opset)
    consts = _constants(model, path)
    input_shapes = _input_shapes(model, consts, path)
    if not input_shapes:
        raise UnsupportedOpError(f"{path}: the model has no run-time inputs; nothing to compute")
    batch_free = any(s and s[0] is None for s in input_shapes.values())
    batches = _BATCHES if batch_free else (None,)
    passes = [_static_pass(model, consts, input_shapes, b, opset) for b in batches]
    names = [n.name or n.output[0] for n in model.graph.node]
    if batch_free:
        constant = _merge_passes(passes, names)
    else:
        constant = set(passes[0][0])
    values, _, canon = passes[0]

    nodes = []
    for node, key in zip(model.graph.node, names):
        if key not in canon:
            continue
        op, attrs, ins, outs = canon[key]
        nodes.append(Node(op, key, ins, outs, attrs))
    outputs = [o.name for o in model.graph.output]
    weights = {}
    for n in nodes:
        for name in n.inputs:
            if name and name in constant and name not in input_shapes:
                weights[name] = _weight_array(values[name], n, path)
    for o in outputs:
        if o in constant and o not in weights:
            raise UnsupportedOpError(f"{path}: output '{o}' is a constant; nothing to compute")
    meta = {"source": path.name, "opset": opset, "producer": model.producer_name}
    meta.update(_sidecar(path))
    graph = optimise(Graph(nodes, weights, input_shapes, outputs, meta))
    validate.check_graph(graph, str(path))
    return graph


def _weight_array(v: np.ndarray, node: Node, path) -> np.ndarray:
    # every op input shares the float32 type of the activations; onnxruntime refuses other types
    if v.dtype != np.float32:
        raise UnsupportedOpError(f"{path}: {node.op} node '{node.name}': constant input has dtype {v.dtype}; "
                                 f"only float32 weights are supported")
    return np.ascontiguousarray(v)


def _type_name(elem_type: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"code {elem_type}"


def _sidecar(path: Path) -> dict:
    """Preprocessing, labels and the architecture's description (HTTM reads tokens_per_frame there) from
    `<model>.json` beside the model, when present."""
    side = path.with_suffix(".json")
    if not side.is_file():
        return {}
    try:
        info = json.loads(side.read_text())
    except (OSError, ValueError) as e:
        raise ModelFileError(f"{side}: unreadable model description: {e}") from None
    return {k: info[k] for k in ("name", "dataset", "input", "labels", "architecture") if k in info}
