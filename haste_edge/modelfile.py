"""The deployable model file (.haste): a NumPy .npz archive, readable with NumPy alone.

Layout: one entry `graph.json` (UTF-8 JSON as a uint8 array: format name, version, nodes, inputs,
outputs, meta, and the weight table), and one entry per weight `w<i>`. Loaded with
allow_pickle=False, so a file cannot execute code. Weights may be stored as float16 to halve the
file; they are widened to float32 on load.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .errors import ModelFileError
from .graph import Graph, Node

FORMAT = "haste-edge-model"
VERSION = 1
SUFFIX = ".haste"


def save(graph: Graph, path, *, fp16: bool = False) -> Path:
    """Write `graph` to `path` atomically: a failure leaves no partial file behind."""
    path = Path(path)
    table, arrays = {}, {}
    for i, (name, w) in enumerate(graph.weights.items()):
        key = f"w{i}"
        stored = w.astype(np.float16) if fp16 and w.dtype == np.float32 else w
        table[name] = {"key": key, "dtype": str(w.dtype)}
        arrays[key] = stored
    doc = {
        "format": FORMAT, "version": VERSION,
        "inputs": {k: list(v) for k, v in graph.inputs.items()},
        "outputs": graph.outputs,
        "nodes": [{"op": n.op, "name": n.name, "inputs": n.inputs, "outputs": n.outputs, "attrs": n.attrs}
                  for n in graph.nodes],
        "weights": table,
        "meta": graph.meta,
    }
    arrays["graph.json"] = np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path) -> Graph:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            doc = json.loads(bytes(z["graph.json"]).decode())
            if doc.get("format") != FORMAT:
                raise ModelFileError(f"{path}: not a haste-edge model file")
            if doc.get("version", 0) > VERSION:
                raise ModelFileError(f"{path}: model file version {doc['version']} is newer than this "
                                     f"haste-edge understands ({VERSION}); upgrade haste-edge")
            weights = {name: np.ascontiguousarray(z[e["key"]], dtype=e["dtype"])
                       for name, e in doc["weights"].items()}
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError, OSError, io.UnsupportedOperation) as e:
        raise ModelFileError(f"{path}: corrupt or truncated model file ({type(e).__name__}: {e})") from None
    nodes = [Node(n["op"], n["name"], n["inputs"], n["outputs"], n["attrs"]) for n in doc["nodes"]]
    inputs = {k: tuple(v) for k, v in doc["inputs"].items()}
    graph = Graph(nodes, weights, inputs, doc["outputs"], doc.get("meta", {}))
    graph.check()
    return graph
