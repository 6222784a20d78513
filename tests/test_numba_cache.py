"""numba's cache must never stop qsmkit: read-only installs and homes (issue 16)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import os
from pathlib import Path
import qsmkit._numba_cache as nc

os.environ.pop("NUMBA_CACHE_DIR", None)
os.environ["HOME"] = os.environ["XDG_CACHE_HOME"] = os.environ["TMPDIR"] = "/proc/qsmkit-nowhere"
import tempfile
tempfile.tempdir = "/proc/qsmkit-nowhere"
nc._PACKAGE_DIR = Path("/proc/qsmkit-nowhere")
print("MODE", nc.configure())

import numba
source = "def twice(x):\n    return 2 * x\n"
namespace = {}
exec(compile(source, "<no file: numba finds no cache locator>", "exec"), namespace)
print("RESULT", numba.njit(cache=True)(namespace["twice"])(21))
"""


def _run(script):
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)


def test_kernels_compile_without_a_cache_when_nothing_is_writable():
    done = _run(SCRIPT)
    assert done.returncode == 0, done.stderr
    assert "MODE disabled" in done.stdout and "RESULT 42" in done.stdout, done.stdout


def test_without_the_fallback_numba_refuses_such_a_function():
    """The failure the fallback exists for (so the test above cannot pass vacuously)."""
    script = SCRIPT.replace('print("MODE", nc.configure())', "")
    done = _run(script)
    assert done.returncode != 0 and "no locator" in done.stderr, done.stderr


def test_cache_folder_is_redirected_when_the_install_is_read_only(tmp_path, monkeypatch):
    import qsmkit._numba_cache as nc

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(nc, "_PACKAGE_DIR", Path("/proc/qsmkit-nowhere"))
    assert nc.configure() == "redirected"
    import os

    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "qsmkit" / "numba")
