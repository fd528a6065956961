"""The deployable model file (.haste): a NumPy .npz archive, readable with NumPy alone.

Layout: one entry `graph.json` (UTF-8 JSON as a uint8 array: format name, version, nodes, inputs,
outputs, meta, and the weight table), and one entry per weight `w<i>`. Weights may be stored as
float16 to halve the file; they are widened to float32 on load. PROM's weight codes are int8:
ternary ones ("dtype": "ternary" in the table, with their shape) are stored 2 bits each
(prom/quantize.py: pack_ternary) and unpacked to int8 on load. load() reads only numeric .npy
entries (never a pickle) and checks the document (schema.py), each .npy header and size against
the memory limit (limits.py) and every node (validate.py) before anything is allocated or run.
"""
from __future__ import annotations

import io
import json
import math
import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from . import limits, mapped, schema, validate
from .errors import ModelFileError
from .graph import Graph, Node
from .prom.quantize import pack_ternary, unpack_ternary

FORMAT = "haste-edge-model"
VERSION = 1
SUFFIX = ".haste"
MAX_RATIO = 100   # largest expansion accepted for a compressed entry


def save(graph: Graph, path, *, fp16: bool = False) -> Path:
    """Write `graph` to `path` atomically: a failure leaves no partial file behind."""
    path = Path(path)
    table, arrays = {}, {}
    ternary = {n.inputs[1] for n in graph.nodes if n.op == "PromConv" and n.attrs.get("weights") == "ternary"}
    for i, (name, w) in enumerate(graph.weights.items()):
        key = f"w{i}"
        if name in ternary:
            table[name] = {"key": key, "dtype": "ternary", "shape": list(w.shape)}
            arrays[key] = pack_ternary(w)
            continue
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
            _write_aligned(f, arrays)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


ALIGN = 64          # data of every stored entry starts at a multiple of this in the file
_PAD_FIELD = 0x6168  # zip "extra field" id of the padding that aligns an entry's data


def _write_aligned(f, arrays: dict) -> None:
    """An .npz archive (np.load reads it) whose entries are stored uncompressed with their data
    ALIGN-aligned in the file, so load() can map float32 weights instead of copying them."""
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
        for key, a in arrays.items():
            a = np.ascontiguousarray(a)
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(a))
            data = header.getvalue() + a.tobytes()     # the .npy header pads itself to 64 bytes
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            start = f.tell() + 30 + len(info.filename.encode()) + 4   # 30: the local header's fixed part
            pad = -start % ALIGN
            info.extra = _PAD_FIELD.to_bytes(2, "little") + pad.to_bytes(2, "little") + bytes(pad)
            z.writestr(info, data)


def load(path) -> Graph:
    """Read a .haste file. Every field, header and size is checked before use: a bad file gives one
    ModelFileError naming the problem, and nothing is allocated beyond the memory limit."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    mm = mapped.open_file(path)            # float32 weights are read in place where aligned (mapped.py)
    try:
        with zipfile.ZipFile(path) as z:
            doc = json.loads(bytes(_read_npy(z, "graph.json", ("|u1",), 1)).decode())
            schema.check_document(doc, FORMAT, VERSION)
            weights, total = {}, 0
            for name, e in doc["weights"].items():
                what = f"weight '{name}'"
                if e["dtype"] == "ternary":       # 2-bit codes, unpacked to int8
                    shape = tuple(e["shape"])
                    total += math.prod(shape)
                    limits.check(total, f"{path}: the weights", ModelFileError)
                    packed = _read_npy(z, e["key"], ("|u1",), 1, what)
                    try:
                        weights[name] = unpack_ternary(packed, shape)
                    except ValueError as err:
                        raise ModelFileError(f"{path}: {what}: {err}") from None
                    continue
                if e["dtype"] == "int8":
                    w = _read_npy(z, e["key"], ("|i1",), None, what)
                    if w.size and w.min() < -127:
                        raise ModelFileError(f"{path}: {what}: int8 codes must lie in [-127, 127]")
                    total += w.nbytes
                    limits.check(total, f"{path}: the weights", ModelFileError)
                    weights[name] = np.ascontiguousarray(w)
                    continue
                # float32 weights may be stored as float16 (save(fp16=True)); nothing else is widened
                w = _read_npy(z, e["key"], ("<f4", "<f2"), None, what, mm)
                total += w.nbytes
                limits.check(total, f"{path}: the weights", ModelFileError)
                weights[name] = np.ascontiguousarray(w, dtype=np.float32)
    except ModelFileError:
        raise
    except ValueError as e:
        raise ModelFileError(f"{path}: {e}") from None
    except RecursionError:
        raise ModelFileError(f"{path}: graph.json is nested too deeply") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, EOFError, OSError, RuntimeError,
            NotImplementedError, zlib.error) as e:
        raise ModelFileError(f"{path}: corrupt or truncated model file ({type(e).__name__}: {e})") from None
    nodes = [Node(n["op"], n["name"], n["inputs"], n["outputs"], n["attrs"]) for n in doc["nodes"]]
    inputs = {k: tuple(v) for k, v in doc["inputs"].items()}
    graph = Graph(nodes, weights, inputs, doc["outputs"], doc.get("meta", {}))
    graph.check()
    validate.check_graph(graph, str(path))
    return graph


def _mapped_entry(mm, info: zipfile.ZipInfo, header: int, dtype, shape, where: str) -> np.ndarray | None:
    """The entry's data as a view of the file's mapping, None where it is not aligned for its
    dtype (files written before save aligned them). zipfile checked the local header (z.open)."""
    at = info.header_offset
    start = at + 30 + int.from_bytes(mm[at + 26:at + 28], "little") + int.from_bytes(mm[at + 28:at + 30], "little")
    if (start + header) % dtype.alignment or start + info.file_size > len(mm):
        return None
    with memoryview(mm) as mv:
        crc = zlib.crc32(mv[start:start + info.file_size])
    if crc != info.CRC:
        raise ModelFileError(f"{where}: CRC check failed (the file is corrupt)")
    a = mapped.array(mm, start + header, dtype, shape)
    mapped.release(a)
    return a


def _read_npy(z: zipfile.ZipFile, key: str, dtypes: tuple, ndim: int | None, what: str | None = None, mm=None):
    """One .npy entry of the archive; its header (dtype, shape, size) is checked before reading data.
    With the file's mapping `mm`, a float32 entry stored aligned (save) is a view of the mapping,
    its CRC checked and its pages handed back until a kernel reads them (mapped.py)."""
    what = what or key
    try:
        info = z.getinfo(key + ".npy")
    except KeyError:
        raise ModelFileError(f"{z.filename}: {what}: entry '{key}' is missing") from None
    limits.check(info.file_size, f"{z.filename}: {what}", ModelFileError)
    # save() stores entries uncompressed; weights never deflate 100x, a zip bomb does
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > max(MAX_RATIO * info.compress_size, 1 << 20):
        raise ModelFileError(f"{z.filename}: {what}: {info.compress_size} compressed bytes claim to expand to "
                             f"{info.file_size} (a zip bomb?)")
    with z.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ModelFileError(f"{z.filename}: {what}: unsupported .npy version {version}")
        if dtype.str not in dtypes:
            raise ModelFileError(f"{z.filename}: {what}: stored dtype {dtype.str} is not one of {list(dtypes)}")
        if ndim is not None and len(shape) != ndim or any(d < 0 for d in shape):
            raise ModelFileError(f"{z.filename}: {what}: bad shape {shape}")
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        if nbytes != info.file_size - f.tell():
            raise ModelFileError(f"{z.filename}: {what}: header shape {shape} does not match the "
                                 f"{info.file_size - f.tell()} data bytes stored")
        if mm is not None and dtype.str == "<f4" and not fortran and count and info.compress_type == zipfile.ZIP_STORED:
            a = _mapped_entry(mm, info, f.tell(), dtype, shape, f"{z.filename}: {what}")
            if a is not None:
                return a
        flat = np.empty(count, dtype)
        view = memoryview(flat).cast("B")
        got = 0
        while got < nbytes:
            n = f.readinto(view[got:])
            if not n:
                raise ModelFileError(f"{z.filename}: {what}: truncated data")
            got += n
    return flat.reshape(shape, order="F" if fortran else "C")
