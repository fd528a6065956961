"""Sparse ternary LSH hyperplanes (docs/METHOD.md section 1, step 4).

Geometry of a layer's hyperplanes: a full patch (the input receptive field of a P x P output tile)
is PH x PW pixels, PH = (P-1)*S_h + (k_h-1)*d_h + 1 (likewise PW). Hyperplanes are drawn once per
layer for this full patch, D_max = PH*PW, and viewed as (L, PH, PW) grids in the patch's
(row, col) order. Edge tiles are smaller, so their patches are (ph, pw) with ph <= PH, pw <= PW:
such a patch is hashed with the sub-grid R[:, :ph, :pw], i.e. the entries at the same (row, col)
positions relative to the patch's top-left corner. Every patch of a layer thus uses one draw, and
an edge patch sees exactly the entries of the pixels it has.
"""
from __future__ import annotations

import numpy as np


def patch_dims(P: int, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, th: int | None = None,
               tw: int | None = None) -> tuple[int, int]:
    """(rows, cols) of the input patch a th x tw output tile reads (default: a full P x P tile)."""
    th = P if th is None else th
    tw = P if tw is None else tw
    return (th - 1) * sh + (kh - 1) * dh + 1, (tw - 1) * sw + (kw - 1) * dw + 1


def draw_hyperplanes(L: int, D: int, s: float, seed: int) -> np.ndarray:
    """(L, D) float32 with entries 0 w.p. s, +1 and -1 w.p. (1-s)/2 each, from default_rng(seed).

    One uniform per entry, row-major: hyperplane l only depends on (D, s, seed) and l, so the first
    L' rows of a draw with L > L' equal the draw with L'. Raising L therefore only refines the
    codes (each bucket at L splits at most into buckets at L + 1)."""
    u = np.random.default_rng(seed).random((L, D))
    half = s + (1.0 - s) / 2.0
    r = np.where(u < s, 0.0, np.where(u < half, 1.0, -1.0))
    return r.astype(np.float32)


def layer_hyperplanes(L: int, s: float, seed: int, ph_max: int, pw_max: int) -> np.ndarray:
    """The layer's hyperplanes as (L, PH, PW) grids (see module docstring)."""
    return draw_hyperplanes(L, ph_max * pw_max, s, seed).reshape(L, ph_max, pw_max)
