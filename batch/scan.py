"""Find the images waiting in the incoming folder.

Pure file-system reading: no network, no ledger. What counts as an input:
- a regular file (symbolic links are not followed: filing moves files, never link targets);
- with an image extension, any case: ``.jpg .jpeg .png .webp .bmp .gif .tif .tiff``;
- no path component below the incoming folder starts with ``.`` (hidden files and folders, also
  the job's own temporary names);
- not a temporary download/editor name: ``*.tmp``, ``*.part``, ``*.partial``, ``*.crdownload``,
  ``*.download``, ``*~``, ``~$*`` (these never match an image extension except as a prefix, but
  ``photo.jpg.part`` or ``photo.jpg~`` must not be taken for ``photo.jpg``);
- last modified at least ``settle_seconds`` ago (a file still being copied in is left for the
  next run).
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from contract import IMAGE_SUFFIXES

TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".download", "~")
"""Name endings of files that are still being written by a browser, rsync or an editor."""


@dataclass(frozen=True)
class ScannedFile:
    """One candidate input.

    Attributes:
        path: absolute path.
        size_bytes: size at scan time.
        mtime_ns: modification time at scan time, nanoseconds since the epoch.
    """

    path: Path
    size_bytes: int
    mtime_ns: int


@dataclass(frozen=True)
class ScanResult:
    """What a scan found.

    Attributes:
        files: inputs ready to process, sorted by path.
        too_recent: image files skipped because they were modified within the settle time.
        ignored: other files skipped (hidden, temporary, not an image extension, not regular).
    """

    files: list[ScannedFile]
    too_recent: list[Path]
    ignored: list[Path]


def is_candidate_name(name: str) -> bool:
    """Whether a file name (no folders) looks like an image the job should take.

    Args:
        name: base name, e.g. ``"IMG_001.JPG"``.

    Returns:
        True for a visible, non-temporary name with an image extension in any case.
    """
    lower = name.lower()
    if name.startswith((".", "~$")) or lower.endswith(TEMP_SUFFIXES):
        return False
    return os.path.splitext(lower)[1] in IMAGE_SUFFIXES


def scan(incoming: Path, settle_seconds: float, now: float | None = None) -> ScanResult:
    """Walks ``incoming`` recursively (hidden folders are not entered).

    Args:
        incoming: the folder to scan; must exist.
        settle_seconds: minimum age, in seconds, of a file's modification time.
        now: current time in seconds since the epoch (default ``time.time()``); tests pass it.

    Returns:
        The candidates, the too-recent images and the ignored entries.

    Raises:
        OSError: ``incoming`` cannot be listed.
    """
    now = time.time() if now is None else now
    files: list[ScannedFile] = []
    too_recent: list[Path] = []
    ignored: list[Path] = []

    def on_error(exc: OSError) -> None:
        raise exc

    for dirpath, dirnames, filenames in os.walk(incoming, onerror=on_error):
        hidden = [d for d in dirnames if d.startswith(".")]
        ignored.extend(Path(dirpath, d) for d in hidden)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            path = Path(dirpath, name)
            if not is_candidate_name(name):
                ignored.append(path)
                continue
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue  # removed while we looked
            if not stat.S_ISREG(st.st_mode):
                ignored.append(path)
                continue
            if now - st.st_mtime < settle_seconds:
                too_recent.append(path)
                continue
            files.append(ScannedFile(path, st.st_size, st.st_mtime_ns))
    files.sort(key=lambda f: str(f.path))
    return ScanResult(files, sorted(too_recent), sorted(ignored))
