"""Gemm (Y = alpha * A' @ B' + beta * C) and MatMul (numpy.matmul semantics), float32.

Both fast kernels are numpy.matmul (OpenBLAS sgemm) writing straight into the preallocated
output; transposed operands are passed as views, which BLAS reads without a copy. Gemm's
scaling and C are then applied in place. A classifier's Gemm at batch 1 to _ROWS_MAX_M (A a few
rows, B the weights as stored) is instead a loop of dot products (or row updates) on Numba: in a
model its weights come from memory every inference, and read so they took about half OpenBLAS's
time on a 1280 x 1000 classifier (whole models: 0.96-0.99x the time,
benchmarks/results/conv_rule_gemm-blas_x86_64.md). References are float64 einsums.
"""
from __future__ import annotations

import math

import numpy as np

from haste_edge.jit import njit, prange
from haste_edge.ops.registry import register, step_state
from haste_edge.threads import kernel_threads

GEMM_ATTRS = ("alpha", "beta", "transA", "transB")


# ---------------------------------------------------------------------------------------------
# Gemm
# ---------------------------------------------------------------------------------------------

def gemm_infer(in_shapes, attrs):
    a, b = in_shapes[0], in_shapes[1]
    c = in_shapes[2] if len(in_shapes) > 2 else None
    if a is None or b is None or len(a) != 2 or len(b) != 2:
        raise ValueError(f"Gemm: A and B must be 2-D, got A {a}, B {b}")
    m, k = (a[1], a[0]) if attrs["transA"] else (a[0], a[1])
    k2, n = (b[1], b[0]) if attrs["transB"] else (b[0], b[1])
    if k != k2:
        raise ValueError(f"Gemm: inner dimensions differ: A {tuple(a)} (transA={attrs['transA']}) "
                         f"vs B {tuple(b)} (transB={attrs['transB']})")
    if c is not None:
        # unidirectional broadcast: C's dims, right-aligned, are 1 or equal to (M, N)'s
        if len(c) > 2 or any(cd not in (1, od) for cd, od in zip(reversed(c), (n, m))):
            raise ValueError(f"Gemm: C {tuple(c)} does not broadcast to ({m}, {n})")
    return [(m, n)]


def gemm_macs(in_shapes, out_shapes, attrs):
    a = in_shapes[0]
    k = a[0] if attrs["transA"] else a[1]
    m, n = out_shapes[0]
    return int(m) * int(n) * int(k)


def gemm_reference(inputs, attrs):
    a = np.asarray(inputs[0], dtype=np.float64)
    b = np.asarray(inputs[1], dtype=np.float64)
    c = inputs[2] if len(inputs) > 2 else None
    if attrs["transA"]:
        a = a.T
    if attrs["transB"]:
        b = b.T
    y = float(attrs["alpha"]) * np.einsum("mk,kn->mn", a, b)
    if c is not None:
        y = y + float(attrs["beta"]) * np.asarray(c, dtype=np.float64)   # broadcasts to (M, N)
    return [y.astype(np.float32)]


_ROWS_MAX_M = 4
# ... and on more threads, with B (N, K) of this many bytes or more, its rows are split over the
# pool: such a product reads B once from memory, and two cores read faster than one
ROWS_POOL_MIN_BYTES = 1 << 20
ROWS = True          # False: every Gemm on OpenBLAS (benchmarks compare; a model's step keeps the
                     # value of its first run)


def _make_rows_times_bt(parallel: bool):
    """y[m, n] = sum_k a[m, k] * w[n, k]: B stored transposed (N, K), each output one dot product
    of two contiguous rows (LLVM vectorises the reduction); on the pool (parallel) B's rows are
    split over the threads. Two compiled copies, as the Winograd stages'."""
    @njit(parallel=parallel)
    def _rows_times_bt(a, w, y):
        for n in prange(w.shape[0]):
            for m in range(a.shape[0]):
                acc = np.float32(0.0)
                for k in range(w.shape[1]):
                    acc += a[m, k] * w[n, k]
                y[m, n] = acc
    return _rows_times_bt


_rows_times_bt, _rows_times_bt_pool = _make_rows_times_bt(False), _make_rows_times_bt(True)


@njit
def _rows_times_b(a, w, y):
    """y[m, :] = sum_k a[m, k] * w[k, :]: B stored (K, N), one contiguous row update per k."""
    for m in range(a.shape[0]):
        yr = y[m]
        yr[:] = 0.0
        for k in range(w.shape[0]):
            av = a[m, k]
            wr = w[k]
            for n in range(w.shape[1]):
                yr[n] += av * wr[n]


def _rows_call(a, w, y, attrs):
    """The row kernel's call for y = A' @ B' when it applies (a step's first choice of ROWS, a few
    rows of A, B float32 C-contiguous), else None. a is A' (transA applied)."""
    state = step_state(attrs)
    rows = ROWS if state is None else state.setdefault("gemm_rows", ROWS)   # a step keeps its first choice
    if not (rows and a.shape[0] <= _ROWS_MAX_M and w.flags.c_contiguous and w.dtype == np.float32):
        return None
    if not attrs["transB"]:
        return _rows_times_b, (a, w, y)
    pool = kernel_threads() > 1 and w.nbytes >= ROWS_POOL_MIN_BYTES
    return (_rows_times_bt_pool if pool else _rows_times_bt), (a, w, y)


def gemm_calls(inputs, attrs, outs):
    """Gemm's calls on these arrays (a plan's replay) when it takes the row kernel on A as given
    with no scaling: the product, then C added; else None."""
    a, c = inputs[0], (inputs[2] if len(inputs) > 2 else None)
    beta = float(attrs["beta"])
    if attrs["transA"] or float(attrs["alpha"]) != 1.0 or beta not in (0.0, 1.0) \
            or not (a.flags.c_contiguous and a.dtype == np.float32):
        return None
    call = _rows_call(a, inputs[1], outs[0], attrs)
    if call is None:
        return None
    if c is None or beta == 0.0:
        return [call]
    if c.shape in ((outs[0].shape[1],), (1, outs[0].shape[1])) and c.flags.c_contiguous \
            and c.dtype == np.float32:                                                    # a bias row
        return [call, (_add_row, (outs[0], c.reshape(-1)))]
    return [call, (np.add, (outs[0], c, outs[0]))]


@njit
def _add_row(y, c):
    """y[m, :] += c: a Gemm's bias (a NumPy add costs more than the product here, cold)."""
    for m in range(y.shape[0]):
        for n in range(y.shape[1]):
            y[m, n] += c[n]


@register("Gemm", infer=gemm_infer, reference=gemm_reference, macs=gemm_macs, attrs=GEMM_ATTRS, calls=gemm_calls)
def gemm(inputs, attrs, outs=None):
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    if attrs["transA"]:
        a = a.T
    w = b
    if attrs["transB"]:
        b = b.T          # the usual classifier layout: a transposed view, no copy
    if outs is None:
        outs = [np.empty((a.shape[0], b.shape[1]), dtype=np.float32)]
    listed = gemm_calls(inputs, attrs, outs)     # the usual classifier: what a replay makes too
    if listed is not None:
        for f, args in listed:
            f(*args)
        return outs
    y = outs[0]
    call = _rows_call(a, w, y, attrs)
    if call is not None:
        call[0](np.ascontiguousarray(a, dtype=np.float32), w, y)
    else:
        np.matmul(a, b, out=y)
    alpha, beta = float(attrs["alpha"]), float(attrs["beta"])
    if alpha != 1.0:
        np.multiply(y, np.float32(alpha), out=y)
    if c is not None and beta != 0.0:
        np.add(y, c if beta == 1.0 else np.float32(beta) * c, out=y)
    return outs


# ---------------------------------------------------------------------------------------------
# MatMul
# ---------------------------------------------------------------------------------------------

def _matmul_dims(a, b):
    """(batch shape, M, K, N, output shape) of numpy.matmul on shapes a, b; ValueError if invalid."""
    if a is None or b is None or len(a) == 0 or len(b) == 0:
        raise ValueError(f"MatMul: operands must have rank >= 1, got {a} and {b}")
    a2 = (1,) + tuple(a) if len(a) == 1 else tuple(a)     # 1-D A: a row vector
    b2 = tuple(b) + (1,) if len(b) == 1 else tuple(b)     # 1-D B: a column vector
    m, k = a2[-2:]
    k2, n = b2[-2:]
    if k != k2:
        raise ValueError(f"MatMul: inner dimensions differ: {tuple(a)} @ {tuple(b)}")
    try:
        batch = np.broadcast_shapes(a2[:-2], b2[:-2])
    except ValueError:
        raise ValueError(f"MatMul: batch dimensions do not broadcast: {tuple(a)} @ {tuple(b)}") from None
    out = batch + ((m,) if len(a) > 1 else ()) + ((n,) if len(b) > 1 else ())
    return batch, m, k, n, out


def matmul_infer(in_shapes, attrs):
    return [_matmul_dims(in_shapes[0], in_shapes[1])[4]]


def matmul_macs(in_shapes, out_shapes, attrs):
    batch, m, k, n, _ = _matmul_dims(in_shapes[0], in_shapes[1])
    return math.prod(batch) * int(m) * int(n) * int(k)


def matmul_reference(inputs, attrs):
    a = np.asarray(inputs[0], dtype=np.float64)
    b = np.asarray(inputs[1], dtype=np.float64)
    batch, m, k, n, out = _matmul_dims(a.shape, b.shape)
    a3 = np.broadcast_to(a.reshape(a.shape[:-1] + (1, k)) if a.ndim == 1 else a, batch + (m, k))
    b3 = np.broadcast_to(b.reshape(b.shape + (1,)) if b.ndim == 1 else b, batch + (k, n))
    y = np.einsum("...mk,...kn->...mn", a3, b3).reshape(out)
    if len(inputs) > 2 and inputs[2] is not None:         # the bias the plan fused (runtime.py)
        y = y + np.asarray(inputs[2], dtype=np.float64).reshape(-1)
    return [y.astype(np.float32)]


@register("MatMul", infer=matmul_infer, reference=matmul_reference, macs=matmul_macs, attrs=())
def matmul(inputs, attrs, outs=None):
    """A third input, a vector of the output's last size, is a bias the plan fused from the Add
    that followed (runtime._fuse_matmul_biases)."""
    a, b = inputs[0], inputs[1]
    if outs is None:
        outs = [np.empty(matmul_infer([a.shape, b.shape], attrs)[0], dtype=np.float32)]
    np.matmul(a, b, out=outs[0])
    if len(inputs) > 2 and inputs[2] is not None:
        np.add(outs[0], inputs[2].reshape(-1), out=outs[0])
    return outs
