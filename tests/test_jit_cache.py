"""Numba's compiled-kernel cache lives in a user-writable directory, never beside the package source
(site-packages may be read-only on a device), and a second process loads from it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from haste_edge.jit import _source_tag

REPO = Path(__file__).resolve().parents[1]
UNWRITABLE = "/proc/haste-edge-no-such-dir"   # mkdir fails here, even for root

# A kernel in its own module, compiled with the project's njit: where do its cache files go?
KERNEL = """
from haste_edge.jit import njit

@njit
def add_one(x):
    return x + 1
"""

PROBE = """
import json, sys, tempfile
if {tmp_unwritable}:
    tempfile.tempdir = {unwritable!r}
if {numba_first}:
    import numba
import haste_edge.jit as jit
import numba
import kernelmod
assert kernelmod.add_one(41) == 42
st = kernelmod.add_one.stats
print(json.dumps({{"jit": jit.CACHE_DIR, "numba": numba.config.CACHE_DIR,
                  "hits": sum(st.cache_hits.values()), "misses": sum(st.cache_misses.values())}}))
"""


def _probe(tmp_path, env_over, numba_first=False, tmp_unwritable=False):
    moddir = tmp_path / "mod"
    moddir.mkdir(exist_ok=True)
    (moddir / "kernelmod.py").write_text(KERNEL)
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "HOME")}
    env.update(PYTHONPATH=os.pathsep.join([str(moddir), str(REPO)]), **env_over)
    code = PROBE.format(numba_first=numba_first, tmp_unwritable=tmp_unwritable, unwritable=UNWRITABLE)
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr, moddir


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc as an unwritable path")
def test_cache_in_user_dir_and_reused(tmp_path):
    home = tmp_path / "home"
    want = str(home / ".cache" / "haste-edge" / "numba" / _source_tag())
    first, _, moddir = _probe(tmp_path, {"HOME": str(home)})
    assert first["jit"] == first["numba"] == want
    assert first["misses"] == 1 and first["hits"] == 0
    assert list(Path(want).rglob("*.nbi")), "no cache index written in the user cache directory"
    assert not list(moddir.rglob("*.nbi")), "cache written beside the source"
    # a second process loads the compiled kernel; numba imported before haste_edge changes nothing
    second, _, _ = _probe(tmp_path, {"HOME": str(home)}, numba_first=True)
    assert second["numba"] == want
    assert second["hits"] == 1 and second["misses"] == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc as an unwritable path")
def test_cache_dir_fallbacks(tmp_path):
    xdg = tmp_path / "xdg"
    got, _, _ = _probe(tmp_path, {"HOME": UNWRITABLE, "XDG_CACHE_HOME": str(xdg)})
    assert got["numba"] == str(xdg / "haste-edge" / "numba" / _source_tag())
    # an unwritable NUMBA_CACHE_DIR or home: the next writable candidate
    got, _, _ = _probe(tmp_path, {"HOME": UNWRITABLE, "XDG_CACHE_HOME": str(xdg),
                                  "NUMBA_CACHE_DIR": UNWRITABLE})
    assert got["numba"] == str(xdg / "haste-edge" / "numba" / _source_tag())
    # nothing writable at all: kernels still compile and run, uncached, with a one-line notice
    got, err, moddir = _probe(tmp_path, {"HOME": UNWRITABLE, "NUMBA_CACHE_DIR": UNWRITABLE},
                              tmp_unwritable=True)
    assert got["jit"] is None and got["hits"] == 0
    assert "no writable Numba cache directory" in err
    assert not list(moddir.rglob("*.nbi"))


def test_cache_directory_follows_sources_and_switches(tmp_path, monkeypatch):
    """Numba re-checks a cached kernel against its own file only: an edit to a kernel it inlines
    (or a kernel switch) must land in another directory, or the old code would run."""
    import haste_edge.jit as jit
    tag = _source_tag()
    monkeypatch.setenv("HASTE_EDGE_MICROKERNEL", "scalar")
    assert _source_tag() != tag
    monkeypatch.delenv("HASTE_EDGE_MICROKERNEL")
    assert _source_tag() == tag
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    for name in ("jit.py", "microkernel.py"):
        (pkg / name).write_text((REPO / "haste_edge" / name).read_text())
    monkeypatch.setattr(jit, "__file__", str(pkg / "jit.py"))
    copied = _source_tag()
    (pkg / "microkernel.py").write_text((pkg / "microkernel.py").read_text() + "\n# edited\n")
    assert _source_tag() != copied


def test_openmp_threading_layer_comes_first():
    """The idle policy (OMP_WAIT_POLICY) and the thread rules assume Numba's OpenMP layer: it is
    first in Numba's priority even when numba was imported before haste_edge, and it is the layer
    a parallel kernel then runs on (this machine has OpenMP, as the CI's do)."""
    code = ("import numba, numpy as np\n"
            "import haste_edge.ops.conv\n"
            "@numba.njit(parallel=True)\n"
            "def f(a):\n"
            "    for i in numba.prange(a.size):\n"
            "        a[i] += 1\n"
            "f(np.zeros(4))\n"
            "print(numba.config.THREADING_LAYER_PRIORITY[0], numba.threading_layer())\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_THREADING_LAYER")}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["omp", "omp"]
