"""Progress on the terminal: one bar over the stages of a command, one for long solver loops.

Bars are written to stderr with ``tqdm`` and only when stderr is a terminal (never in pipes,
logs, test runs or Dask workers), so the standard output and captured output stay clean.
A command turns them on with :func:`terminal_progress`; library code asks
:func:`iterations` for its loop range and gets a plain ``range`` when they are off. tqdm's
own ``TQDM_DISABLE=1`` environment variable also turns them off.

Example (what ``qsmkit run`` does)::

    with terminal_progress():
        stages = StageProgress(total=9, desc="qsmkit run")
        reconstruct_and_save(acq, config, folder, progress=stages)
        stages.close()
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import time
from collections.abc import Iterator

_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("qsmkit_progress",
                                                                 default=False)
# A solver loop shows its own bar only when it runs longer than this (s).
SOLVER_BAR_DELAY_S = 1.0


def stderr_is_terminal() -> bool:
    """True when stderr is an interactive terminal."""
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # closed or replaced stream
        return False


def progress_enabled() -> bool:
    """Whether progress bars are on in this context (see :func:`terminal_progress`)."""
    return _ENABLED.get()


@contextlib.contextmanager
def terminal_progress(enabled: bool | None = None) -> Iterator[bool]:
    """Turn progress bars on for the code inside (default: when stderr is a terminal)."""
    token = _ENABLED.set(stderr_is_terminal() if enabled is None else bool(enabled))
    try:
        yield _ENABLED.get()
    finally:
        _ENABLED.reset(token)


def iterations(max_iter: int, desc: str):
    """``range(1, max_iter + 1)`` for a solver loop, wrapped in a transient tqdm bar (shown
    after :data:`SOLVER_BAR_DELAY_S`, removed when the loop ends) when progress is on."""
    steps = range(1, int(max_iter) + 1)
    if not _ENABLED.get():
        return steps
    from tqdm import tqdm

    return tqdm(steps, desc=f"  {desc}", unit="it", leave=False, delay=SOLVER_BAR_DELAY_S,
                file=sys.stderr, dynamic_ncols=True)


class StageProgress:
    """A bar over the named stages of a command; call it with each stage's name as the
    stage starts (the ``progress`` callback of :func:`qsmkit.pipeline.run_qsm`).

    Draws nothing when progress is off; :attr:`elapsed_s` is the wall time since creation
    either way.
    """

    def __init__(self, total: int, *, desc: str):
        self.started = time.perf_counter()
        self.desc = desc
        self.current: str | None = None
        self.bar = None
        if _ENABLED.get():
            from tqdm import tqdm

            self.bar = tqdm(total=int(total), desc=desc, unit="stage", file=sys.stderr,
                            dynamic_ncols=True, leave=False,
                            bar_format="{desc}: {n_fmt}/{total_fmt} stages |{bar}| "
                                       "{elapsed}")

    def __call__(self, name: str) -> None:
        if self.bar is not None:
            if self.current is not None:
                self.bar.update(1)
            self.bar.set_description_str(f"{self.desc}: {name}")
        self.current = name

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    def close(self) -> None:
        """Finish the bar (it is removed from the terminal)."""
        if self.bar is not None:
            if self.current is not None:
                self.bar.update(1)
            self.bar.close()
            self.bar = None
        self.current = None
