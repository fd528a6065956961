"""Op implementations. Importing this package fills the registry."""
from . import registry  # noqa: F401
from . import activation, binary, conv, gemm, lrn, norm, pool, reduce, shape  # noqa: F401
from .registry import OPS, get, supported_ops  # noqa: F401
