"""HTTM: head-wise token merging inside attention (config.py settings, reference.py the NumPy oracle,
kernel.py the compiled kernel, method.py the compression method)."""
