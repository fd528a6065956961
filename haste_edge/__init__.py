"""haste-edge: framework-free CNN inference on small computers, with HASTE channel merging."""
from __future__ import annotations

import zipfile
from pathlib import Path

from . import jit  # noqa: F401  (sets the Numba cache directory before any kernel compiles)
from .errors import HasteEdgeError, InputError, ModelFileError, UnsupportedOpError  # noqa: F401
from .runtime import Model
from .threads import get_threads, set_threads  # noqa: F401

__version__ = "0.1.0"

ASSETS = Path(__file__).parent / "assets"
DEFAULT_MODEL = ASSETS / "fashion_resnet18.haste"


def bundled_models() -> list[str]:
    """Names of the models shipped in haste_edge/assets (load(name) finds them)."""
    return sorted(p.stem for p in ASSETS.glob("*.haste"))


def load(path=None) -> Model:
    """Load a model: a deployable .haste file or an .onnx file (converted on the fly).

    With no path, the bundled default model (a Fashion-MNIST ResNet-18); a bare name such as
    "fashion_mobilenetv2" or "fashion_mobilenetv2_prom" is a bundled model (bundled_models()).
    """
    from . import modelfile
    path = Path(path) if path is not None else DEFAULT_MODEL
    if not path.exists() and path.parent == Path(".") and (ASSETS / f"{path.name}.haste").is_file():
        path = ASSETS / f"{path.name}.haste"          # a bundled model by name: fashion_mobilenetv2_prom
    if _is_zip(path):
        graph = modelfile.load(path)
    else:
        try:
            from converters.onnx_import import import_onnx
        except ImportError as e:  # the device install may lack the converter's dependencies
            raise ModelFileError(f"{path}: loading .onnx needs the converter ({e}); "
                                 f"convert it on a host with `haste-edge convert`") from None
        graph = import_onnx(path)
    return Model(graph, path)


def _is_zip(path: Path) -> bool:
    """True for a .haste file (a zip archive), False for ONNX (protobuf, no magic number of its own);
    anything else gets a message saying what it is rather than a parser's complaint."""
    if path.is_dir():
        raise ModelFileError(f"{path}: is a directory, not a model file")
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise ModelFileError(f"{path}: empty file, not a model")
    if head == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as z:  # a zip of something else, e.g. a PyTorch checkpoint
                names = z.namelist()
        except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError, ValueError):
            return True  # damaged (or a zip feature Python lacks): the model file reader says how
        if "graph.json.npy" not in names:
            raise ModelFileError(f"{path}: a zip archive but not a haste-edge model file (no graph.json)")
        return True
    if path.suffix.lower() in (".haste", ".npz"):
        raise ModelFileError(f"{path}: not a haste-edge model file (bad magic {head!r}; a .haste file is a "
                             f"zip archive starting with b'PK\\x03\\x04')")
    if path.suffix.lower() != ".onnx" and head[0] != 0x08:  # ONNX starts with field 1, ir_version
        raise ModelFileError(f"{path}: neither a haste-edge model file (.haste) nor an ONNX model")
    return False


def sample_images() -> list[Path]:
    """The real test images bundled with the package."""
    return sorted((ASSETS / "images").glob("*.png"))
