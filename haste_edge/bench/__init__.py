"""Measuring on a device: `haste-edge bench`, `haste-edge warmup`, and what they report.

  machine.py   the header: machine, CPU, cores, Python, NumPy/Numba, threading layer, threads
  jitwatch.py  time spent inside Numba and kernels compiled vs loaded from its disk cache
  inputs.py    the inputs a benchmark cycles through (bundled images, random, an image or folder)
  timing.py    the timed loop (progress, Ctrl-C) and latency statistics
  run.py       one benchmark: load, first runs, MACs per input, warm-up, timed loop, energy
  report.py    the text report, the JSON file (written atomically), two files side by side
  startup.py   first-inference time of a fresh process (run as `python -m haste_edge.bench.startup`)
  warmup.py    fill the Numba cache for every kernel a model needs; start times before and after
"""
