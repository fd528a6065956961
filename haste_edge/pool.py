"""Tasks claimed one at a time from a shared counter by the threads of a parallel loop.

Numba's prange hands each thread one fixed share of the range. A thread that starts late (a
worker woken from sleep: README "Performance" on wake-up costs) or is preempted by another process
then holds up the whole loop while the others wait at its end. A loop written as

    counter[0] = 0
    for _ in prange(threads):
        while True:
            t = claim(counter)
            if t >= n_tasks:
                break
            ...task t...

lets whichever thread is running take the next task: the calling thread starts at once and the
others join as they arrive. Tasks must write disjoint outputs (then the result does not depend
on which thread ran which) and be long enough (microseconds) that one atomic add apiece is noise.
"""
from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic


@intrinsic
def claim(typingctx, counter):
    """counter[0] += 1 atomically (sequentially consistent); the value before the add."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64 and counter.ndim == 1):
        return None

    def codegen(context, builder, signature, args):
        arr = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, signature.args[0], arr, [ir.Constant(ir.IntType(64), 0)])
        return builder.atomic_rmw("add", ptr, ir.Constant(ir.IntType(64), 1), "seq_cst")

    return types.int64(counter), codegen
