"""HASTE: training-free, data-free, dynamic channel merging in convolutions (docs/METHOD.md section 1).

  HasteConfig, LayerSetting, plan_layers, parse_haste_spec   which convs, which settings (config.py)
  draw_hyperplanes                                           sparse ternary LSH (hyperplanes.py)
  haste_conv, profile_haste_conv                             fast Numba kernel (kernel.py)
  haste_conv_reference                                       NumPy oracle (reference.py)
  STAT_FIELDS                                                per-image counter columns of both
  Haste, HasteLayer, channels_kept                           HASTE behind the compression interface (method.py)
"""
from haste_edge.haste.config import HasteConfig, LayerSetting, haste_applicable, parse_haste_spec, plan_layers  # noqa: F401
from haste_edge.haste.hyperplanes import draw_hyperplanes  # noqa: F401
from haste_edge.haste.kernel import PHASES, haste_conv, profile_haste_conv  # noqa: F401
from haste_edge.haste.reference import STAT_FIELDS, haste_conv_reference  # noqa: F401
from haste_edge.haste.method import Haste, HasteLayer, channels_kept  # noqa: F401
