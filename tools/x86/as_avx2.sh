#!/usr/bin/env bash
# Run a command with the kernels an AVX2-only x86-64 CPU gets: OpenBLAS's Haswell kernels, NumPy's
# dispatch without its AVX-512 targets, Numba compiling for haswell. On a CPU without AVX-512 this
# changes nothing. Used by .ci/run to check tests/test_aarch64.py's reference on both x86 kinds.
#   bash tools/x86/as_avx2.sh python3 -m pytest -q tests/test_aarch64.py
set -euo pipefail
# NumPy refuses to disable a target the CPU lacks, so only those this CPU has.
disable=$(python3 -c "import numpy._core._multiarray_umath as m; f = m.__cpu_features__; \
print(' '.join(k for k in m.__cpu_dispatch__ if k not in ('X86_V3',) and f.get(k)))")
export OPENBLAS_CORETYPE=Haswell NUMBA_CPU_NAME=haswell
[ -n "$disable" ] && export NPY_DISABLE_CPU_FEATURES="$disable"
exec "$@"
