"""Make numba's on-disk cache optional: qsmkit must run where nothing is writable.

qsmkit's numba kernels ask for ``cache=True`` so that a second run skips compilation. numba
stores the cache beside the source, else in the user's cache folder; in a read-only install
with a read-only ``$HOME`` (containers, service accounts) it has nowhere to write and refuses
to decorate the function ("cannot cache function ...: no locator available"), so the import
fails. :func:`configure` runs before any kernel is defined: it points ``NUMBA_CACHE_DIR`` at a
writable folder when the usual places are not writable, and when no folder is writable at all
it lets the kernels compile without a cache (slower start, same results).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _candidate_folders() -> list[Path]:
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    folders = []
    if os.environ.get("XDG_CACHE_HOME"):
        folders.append(Path(os.environ["XDG_CACHE_HOME"]) / "qsmkit" / "numba")
    folders.append(Path.home() / ".cache" / "qsmkit" / "numba")
    folders.append(Path(tempfile.gettempdir()) / f"qsmkit-numba-{uid}")
    return folders


def configure() -> str:
    """Choose where numba caches compiled kernels; returns a word saying what was done."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return "user"
    if os.access(_PACKAGE_DIR, os.W_OK) and _writable(_PACKAGE_DIR / "__pycache__"):
        return "in-tree"
    for folder in _candidate_folders():
        try:
            if _writable(folder):
                os.environ["NUMBA_CACHE_DIR"] = str(folder)
                return "redirected"
        except RuntimeError:  # Path.home() without a home
            continue
    _compile_without_cache()
    return "disabled"


def _compile_without_cache() -> None:
    """Let ``cache=True`` kernels compile uncached when numba finds no cache locator."""
    try:
        from numba.core.dispatcher import Dispatcher
    except ImportError:  # numba missing: the kernels' own import reports it
        return
    original = Dispatcher.enable_caching
    if getattr(original, "_qsmkit_optional", False):
        return

    def enable_caching(self):
        try:
            original(self)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            pass

    enable_caching._qsmkit_optional = True
    Dispatcher.enable_caching = enable_caching
