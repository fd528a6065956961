"""haste-edge: framework-free CNN inference on small computers, with HASTE channel merging."""
from __future__ import annotations

from pathlib import Path

from . import jit  # noqa: F401  (sets the Numba cache directory before any kernel compiles)
from .errors import HasteEdgeError, InputError, ModelFileError, UnsupportedOpError  # noqa: F401
from .runtime import Model
from .threads import get_threads, set_threads  # noqa: F401

__version__ = "0.1.0"

ASSETS = Path(__file__).parent / "assets"
DEFAULT_MODEL = ASSETS / "fashion_resnet18.haste"


def load(path=None) -> Model:
    """Load a model: a deployable .haste file or an .onnx file (converted on the fly).

    With no path, the bundled default model (a Fashion-MNIST ResNet-18).
    """
    from . import modelfile
    path = Path(path) if path is not None else DEFAULT_MODEL
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"
    if is_zip:
        graph = modelfile.load(path)
    else:
        try:
            from converters.onnx_import import import_onnx
        except ImportError as e:  # the device install may lack the converter's dependencies
            raise ModelFileError(f"{path}: loading .onnx needs the converter ({e}); "
                                 f"convert it on a host with `haste-edge convert`") from None
        graph = import_onnx(path)
    return Model(graph, path)


def sample_images() -> list[Path]:
    """The real test images bundled with the package."""
    return sorted((ASSETS / "images").glob("*.png"))
