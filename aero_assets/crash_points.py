"""Test-only crash windows: a named point where a run pauses, so a test can SIGKILL its worker exactly there.

`AERO_TEST_PAUSE_AT` names the point (see the calls of `pause_at`), `AERO_TEST_PAUSE_MARKER` a file.
The first process to reach the point creates the marker (O_EXCL), writes "<pid> <note>\\n" and
sleeps; every later one (the retry of the killed run) finds the marker and goes on. Unset, a point
costs one environment lookup. Used by tests/test_run_recovery.py, with a real daemon.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

PAUSE_S = 60.0


def armed(point: str) -> bool:
    return os.environ.get("AERO_TEST_PAUSE_AT") == point and bool(os.environ.get("AERO_TEST_PAUSE_MARKER"))


def pause_at(point: str, note: str = "") -> None:
    """Pause here (once per marker) when a test armed `point`; otherwise nothing."""
    if not armed(point):
        return
    try:
        fd = os.open(os.environ["AERO_TEST_PAUSE_MARKER"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()} {note}".rstrip() + "\n")
    time.sleep(PAUSE_S)


def hook(point: str, note: Callable[..., str]) -> Callable[..., None] | None:
    """A callback for code that takes an optional hook (e.g. the landing's `before_commit`): None unless armed."""
    if not armed(point):
        return None
    return lambda *args: pause_at(point, note(*args))
