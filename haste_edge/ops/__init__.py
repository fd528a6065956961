"""Op implementations. Importing this package fills the registry."""
from . import registry  # noqa: F401
from . import activation, binary, conv, gemm, lrn, norm, pool, reduce, shape  # noqa: F401
from . import attention, erf_gelu, layer_norm, split_gather  # noqa: F401  (transformer ops)
from haste_edge.prom import ops as _prom_ops  # noqa: F401,E402  (PROM's PromConv, PromGemm)
from .registry import OPS, get, supported_ops  # noqa: F401
