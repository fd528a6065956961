"""PROM: ternary pointwise convs, int8 everything else (docs/METHOD.md section 2; README "PROM").

quantize.py the rules (weights, activations, 2-bit packing); reference.py plain NumPy kernels;
kernels.py the Numba ones; ops.py the graph ops the converter writes; method.py the compression
method (per-layer counters); energy.py the per-operation energy estimate.
"""
