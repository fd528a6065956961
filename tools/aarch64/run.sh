#!/usr/bin/env bash
# Run haste-edge's tests on emulated aarch64 (64-bit Raspberry Pi OS = Debian 12 arm64, Python 3.11)
# on an x86 Debian/Ubuntu host.
#
#   tools/aarch64/run.sh [PYTEST ARGS...]        (default: tests/test_aarch64.py)
#
# How it works (every step is cached under $HASTE_EDGE_ARM_CACHE, default
# ~/.cache/haste-edge/aarch64, so a second run only starts the tests):
#   1. host tools: qemu-user-static and debootstrap (apt-get install when missing; needs root).
#   2. an arm64 Debian 12 userland: `debootstrap --foreign --arch=arm64 --variant=minbase` downloads
#      and unpacks the base system. The second stage (running the packages' maintainer scripts
#      inside a chroot) needs binfmt_misc and chroot privileges, which containers and CI machines
#      often lack, and python needs none of those scripts: so instead of the second stage every
#      downloaded .deb (python3.11 and its libraries included) is unpacked with `dpkg-deb -x`.
#      Python then runs as `qemu-aarch64-static -L ROOT ROOT/usr/bin/python3.11`: qemu loads the
#      arm64 dynamic linker and libraries from ROOT and sees the host's files everywhere else
#      (the repository, the cache), so nothing has to be copied or bind-mounted.
#   3. aarch64 wheels (numpy, numba, llvmlite, pillow, threadpoolctl, pytest and its dependencies)
#      from PyPI with the host's pip (`pip download --platform manylinux_2_28_aarch64
#      --only-binary=:all: --python-version 3.11`), installed with `pip install --target` into a
#      directory the emulated python gets on PYTHONPATH, with the repository itself (haste_edge is
#      pure Python). onnx is not installed: the device path loads .haste files with NumPy only.
#   4. `python3.11 -m pytest -q -p no:cacheprovider ARGS` under emulation, NUMBA_CACHE_DIR in the cache.
#
# The emulated CPU is a Cortex-A72 (Raspberry Pi 4, ARMv8.0: no ARMv8.2 instructions) unless
# HASTE_EDGE_ARM_CPU says otherwise (cortex-a76 = Raspberry Pi 5, max = everything qemu has).
# Numba is told the same CPU (NUMBA_CPU_NAME), as LLVM would detect it on the board.
# Emulated timings say nothing about the board's speed; results and MAC counts must match exactly.
#
# A run passes only if pytest passes, ran at least one test and skipped none (a skipped or
# xfailed test fails the run: under emulation a skip would hide exactly what is being checked);
# HASTE_EDGE_ARM_ALLOW_SKIPS=1 relaxes that. The tests see HASTE_EDGE_EXPECT_MACHINE=aarch64 and
# tests/test_aarch64.py asserts it.
#
# Environment: HASTE_EDGE_ARM_CACHE, HASTE_EDGE_ARM_CPU, HASTE_EDGE_ARM_MIRROR (Debian mirror),
# HASTE_EDGE_ARM_PACKAGES (pip requirement list, space-separated), HASTE_EDGE_ARM_ALLOW_SKIPS,
# PYTHON (host python with pip).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${HASTE_EDGE_ARM_CACHE:-$HOME/.cache/haste-edge/aarch64}"
CPU="${HASTE_EDGE_ARM_CPU:-cortex-a72}"
MIRROR="${HASTE_EDGE_ARM_MIRROR:-http://deb.debian.org/debian}"
PYTHON="${PYTHON:-python3}"
# Pinned so the cache stays valid and results are reproducible; the versions the host tests use.
DEFAULT_PACKAGES="numpy==2.4.6 numba==0.68.1 llvmlite==0.50.0 pillow==13.0.0 threadpoolctl==3.8.0"
DEFAULT_PACKAGES="$DEFAULT_PACKAGES pytest==9.0.3"
PACKAGES="${HASTE_EDGE_ARM_PACKAGES:-$DEFAULT_PACKAGES}"
PLATFORM=(--platform manylinux_2_28_aarch64 --only-binary=:all: --python-version 3.11
          --implementation cp --abi cp311)
ROOT="$CACHE/root"
PY=/usr/bin/python3.11

step() { echo "== aarch64: $*" >&2; }
die() { echo "aarch64: FAILED: $*" >&2; exit 1; }
trap 'rc=$?; [ $rc -eq 0 ] || echo "aarch64: a command failed (exit $rc) at line $LINENO of $0" >&2' ERR

have() { command -v "$1" >/dev/null 2>&1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; elif have sudo; then sudo "$@"; else die "need root for: $*"; fi; }

# --- 1. host tools -----------------------------------------------------------------------------
[ "$(uname -m)" = x86_64 ] || [ "$(uname -m)" = aarch64 ] || die "unsupported host $(uname -m)"
missing=()
have qemu-aarch64-static || missing+=(qemu-user-static)
have debootstrap || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
have dpkg-deb || die "dpkg-deb not found: this script needs a Debian or Ubuntu host"
"$PYTHON" -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if [ ${#missing[@]} -gt 0 ]; then
    step "installing host packages: ${missing[*]}"
    as_root apt-get update -qq || die "apt-get update failed"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
fi
QEMU="$(command -v qemu-aarch64-static)" || die "qemu-aarch64-static not found after install"
DEBOOTSTRAP="$(command -v debootstrap || echo /usr/sbin/debootstrap)"
mkdir -p "$CACHE"
export PIP_ROOT_USER_ACTION=ignore

# --- 2. arm64 Debian 12 userland ---------------------------------------------------------------
if [ ! -f "$ROOT/.haste-edge-ready" ]; then
    step "building an arm64 Debian 12 root in $ROOT (downloads ~40 MB, once)"
    rm -rf "$ROOT"
    mkdir -p "$ROOT"
    # libstdc++6/libgcc-s1: llvmlite; libgomp1: Numba's OpenMP threading layer.
    as_root "$DEBOOTSTRAP" --foreign --arch=arm64 --variant=minbase \
        --include=python3.11,libstdc++6,libgcc-s1,libgomp1,zlib1g \
        bookworm "$ROOT" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
        || die "debootstrap first stage failed; see $CACHE/debootstrap.log"
    debs=("$ROOT"/var/cache/apt/archives/*.deb)
    [ -e "${debs[0]}" ] || die "debootstrap downloaded no packages; see $CACHE/debootstrap.log"
    step "unpacking ${#debs[@]} packages (instead of the chroot second stage)"
    for deb in "${debs[@]}"; do
        as_root dpkg-deb -x "$deb" "$ROOT" || die "dpkg-deb -x $deb failed"
    done
    [ -x "$ROOT$PY" ] || die "$ROOT$PY missing after unpacking"
    # Smoke test: the emulated interpreter starts and says it is aarch64.
    machine="$(QEMU_CPU="$CPU" "$QEMU" -L "$ROOT" "$ROOT$PY" -c 'import platform; print(platform.machine())')" \
        || die "the emulated python does not start (qemu-aarch64-static -L $ROOT $ROOT$PY)"
    [ "$machine" = aarch64 ] || die "emulated python reports machine '$machine', expected aarch64"
    touch "$ROOT/.haste-edge-ready"
fi

# --- 3. aarch64 wheels -------------------------------------------------------------------------
key="$(printf '%s\n' "$PACKAGES" | sha256sum | cut -c1-12)"
WHEELS="$CACHE/wheels-$key"
SITE="$CACHE/site-$key"
if [ ! -f "$SITE/.haste-edge-ready" ]; then
    step "downloading aarch64 wheels: $PACKAGES"
    mkdir -p "$WHEELS"
    # shellcheck disable=SC2086  # PACKAGES is a space-separated list
    "$PYTHON" -m pip download -q --dest "$WHEELS" "${PLATFORM[@]}" $PACKAGES \
        || die "pip download of the aarch64 wheels failed"
    step "installing them into $SITE"
    rm -rf "$SITE"
    "$PYTHON" -m pip install -q --no-deps --no-index --target "$SITE" "${PLATFORM[@]}" "$WHEELS"/*.whl \
        || die "pip install --target $SITE failed"
    touch "$SITE/.haste-edge-ready"
fi

# --- 4. the tests, emulated --------------------------------------------------------------------
[ $# -gt 0 ] || set -- tests/test_aarch64.py
export QEMU_CPU="$CPU"
case "$CPU" in cortex-*) export NUMBA_CPU_NAME="${NUMBA_CPU_NAME:-$CPU}" ;; esac
export NUMBA_CACHE_DIR="$CACHE/numba-$CPU"
export PYTHONPATH="$SITE:$REPO"
export PYTHONDONTWRITEBYTECODE=1   # keep aarch64 .pyc files out of the repository
export HASTE_EDGE_EXPECT_MACHINE=aarch64
unset PYTHONHOME PYTHONSTARTUP
REPORT="$CACHE/pytest-report.xml"
rm -f "$REPORT"
step "pytest $* (emulated $CPU; Numba cache $NUMBA_CACHE_DIR)"
cd "$REPO"
start=$(date +%s)
set +e
"$QEMU" -L "$ROOT" "$ROOT$PY" -m pytest -q -rs -p no:cacheprovider --junitxml="$REPORT" "$@"
rc=$?
set -e
elapsed=$(( $(date +%s) - start ))
if [ $rc -ne 0 ]; then
    echo "aarch64: FAILED: pytest exited $rc under emulation ($CPU) after ${elapsed} s" >&2
    exit $rc
fi
# Count what ran from pytest's JUnit report (host python; xfailed tests are reported as skipped).
[ -f "$REPORT" ] || die "pytest wrote no report ($REPORT)"
counts="$("$PYTHON" - "$REPORT" <<'EOF'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
n = lambda k: sum(int(s.get(k, 0)) for s in suites)
print(n("tests"), n("skipped"), n("failures") + n("errors"))
EOF
)" || die "cannot read the pytest report $REPORT"
read -r total skipped bad <<<"$counts"
[ "$total" -gt 0 ] || die "no test ran under emulation"
[ "$bad" -eq 0 ] || die "$bad tests failed under emulation"
if [ "$skipped" -gt 0 ] && [ "${HASTE_EDGE_ARM_ALLOW_SKIPS:-0}" != 1 ]; then
    die "$skipped of $total tests were skipped or xfailed under emulation (see the short test summary above)"
fi
echo "aarch64: OK: $((total - skipped)) tests passed, $skipped skipped, under emulation ($CPU) in ${elapsed} s" >&2
