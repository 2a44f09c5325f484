"""Test hook: kill the job at a named point, to test crash recovery deterministically.

Set ``FASHION_BATCH_FAILPOINT=<point>:<n>`` and the process sends itself SIGKILL the n-th time
(1-based) it reaches ``<point>``: no ``finally`` block, no flush, no atexit runs, exactly like
``kill -9`` or a power cut at that instant (SQLite's committed transactions survive, as they
would). Never set in production. Points, in the order a file passes them:

- ``after_classify``: the gateway's result for a file is committed to the ledger; nothing moved.
- ``before_move``: the destination is recorded (state ``moving``); the file is still in incoming.
- ``during_copy``: cross-filesystem move only: the temporary copy in the destination folder is
  half written.
- ``after_copy_before_link``: cross-filesystem move only: the temporary copy is complete and
  verified, the final name does not exist yet.
- ``after_link_before_unlink``: the file exists both at its destination and in incoming.
- ``after_move_before_ledger``: the file is at its destination only; the ledger still says
  ``moving``.
- ``before_reports``: every file is filed; the run's reports are not written yet.
- ``during_reports``: the report page and summary are written in the run's staging folder, the
  CSV is not; nothing of the run is under its final name.
- ``after_reports``: the reports are written; the ledger does not know yet.
"""

from __future__ import annotations

import os
import signal
import threading

ENV_VAR = "FASHION_BATCH_FAILPOINT"

POINTS = frozenset(
    {
        "after_classify",
        "before_move",
        "during_copy",
        "after_copy_before_link",
        "after_link_before_unlink",
        "after_move_before_ledger",
        "before_reports",
        "during_reports",
        "after_reports",
    }
)

_lock = threading.Lock()
_hits: dict[str, int] = {}


def _target() -> tuple[str, int] | None:
    raw = os.environ.get(ENV_VAR, "")
    if not raw:
        return None
    name, _, count = raw.partition(":")
    if name not in POINTS:
        raise ValueError(f"{ENV_VAR}: unknown point {name!r}; known: {sorted(POINTS)}")
    return name, int(count or "1")


def reach(point: str) -> None:
    """Marks that execution reached ``point``; SIGKILLs the process if the hook says so.

    Args:
        point: one of :data:`POINTS`.

    Raises:
        ValueError: ``point`` is not a known point, or the env var names an unknown one.
    """
    if point not in POINTS:
        raise ValueError(f"unknown failpoint {point!r}")
    target = _target()
    if target is None or target[0] != point:
        return
    with _lock:
        _hits[point] = _hits.get(point, 0) + 1
        if _hits[point] == target[1]:
            os.kill(os.getpid(), signal.SIGKILL)
