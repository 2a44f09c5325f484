"""The model base path layout: which folder names are versions, what is refused, staging names.

Which names are versions is TF Serving's rule, implemented once in :mod:`contract.versions`:
``7``, ``007`` and ``+7`` are all version 7, and when two names give one number TF Serving serves
only one of them. Names that do not parse (``.staging-3-1234``) are ignored, and a
``saved_model.pb`` directly in the base path is never served ("Did you forget to name your leaf
directory as a number"). This module refuses those layouts before anything is written.

Pure standard library: no TensorFlow.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from contract import version_folders
from export.errors import LayoutError

STAGING_PREFIX: Final = ".staging-"
"""Staging folders are ``.staging-<version>-<pid>``; TF Serving cannot parse them as a version."""

_STAGING = re.compile(re.escape(STAGING_PREFIX) + r"(\d+)-(\d+)", re.ASCII)


@dataclass(frozen=True)
class StagingFolder:
    """A staging folder left in the base path.

    Attributes:
        path: the folder.
        version: the version it was going to become.
        pid: the process that created it.
    """

    path: Path
    version: int
    pid: int


@dataclass(frozen=True)
class Layout:
    """What a model base path holds.

    Attributes:
        base_path: the model base path.
        versions: version number -> folder names TF Serving maps to it (more than one = collision).
        staging: staging folders found.
        has_saved_model: ``saved_model.pb`` sits directly in the base path.
    """

    base_path: Path
    versions: dict[int, list[str]] = field(default_factory=dict)
    staging: list[StagingFolder] = field(default_factory=list)
    has_saved_model: bool = False

    def problems(self) -> list[str]:
        """Describe every layout TF Serving would misread.

        Returns:
            One human-readable sentence per problem; empty when the layout is sound.
        """
        found = []
        if self.has_saved_model:
            found.append(
                f"{self.base_path / 'saved_model.pb'} sits directly in the base path: TF Serving "
                "serves only integer-named version folders (move it into e.g. "
                f"{self.base_path / '1'}/)"
            )
        for number, names in sorted(self.versions.items()):
            if len(names) > 1:
                listed = ", ".join(repr(n) for n in sorted(names))
                found.append(
                    f"folders {listed} are all version {number} to TF Serving, which would "
                    "serve one of them and ignore the others; rename or remove all but one"
                )
        return found

    def next_version(self) -> int:
        """The version a new export gets by default: the highest existing number plus one.

        Returns:
            ``max(versions) + 1``, or 1 for an empty base path.
        """
        return max((v for v in self.versions if v >= 0), default=0) + 1


def scan(base_path: Path) -> Layout:
    """List a model base path. A missing base path is an empty layout.

    Args:
        base_path: the model base path, e.g. ``models/fashion``.

    Returns:
        The :class:`Layout` found.

    Raises:
        LayoutError: ``base_path`` exists but is not a directory.
    """
    if not base_path.exists():
        return Layout(base_path)
    if not base_path.is_dir():
        raise LayoutError(f"model base path {base_path} is not a directory")
    entries = list(os.scandir(base_path))
    versions = version_folders(entry.name for entry in entries)
    staging = []
    for entry in entries:
        match = _STAGING.fullmatch(entry.name)
        if match and entry.is_dir(follow_symlinks=False):
            staging.append(
                StagingFolder(Path(entry.path), int(match.group(1)), int(match.group(2)))
            )
    return Layout(
        base_path=base_path,
        versions=versions,
        staging=sorted(staging, key=lambda s: s.path.name),
        has_saved_model=(base_path / "saved_model.pb").exists(),
    )


def check_publishable(layout: Layout, version: int) -> None:
    """Refuse to publish ``version`` into ``layout``.

    Args:
        layout: the base path as scanned just before publishing.
        version: the version to publish; must be a positive integer.

    Raises:
        LayoutError: the layout has problems (see :meth:`Layout.problems`), the version is not
            positive, or a folder that TF Serving reads as ``version`` already exists.
    """
    problems = layout.problems()
    if problems:
        raise LayoutError(
            "refusing to publish into " + str(layout.base_path) + ": " + "; ".join(problems)
        )
    if version < 1:
        raise LayoutError(f"version must be a positive integer, got {version}")
    if version in layout.versions:
        names = ", ".join(repr(n) for n in layout.versions[version])
        raise LayoutError(
            f"version {version} already exists in {layout.base_path} (folder {names}); versions "
            "are never overwritten: pick another --version or omit it to get the next one"
        )


def staging_path(base_path: Path, version: int, pid: int | None = None) -> Path:
    """Where a version is assembled before the atomic rename.

    Args:
        base_path: the model base path (staging is inside it: same filesystem, so the rename is
            atomic).
        version: the version being exported.
        pid: the exporting process id; defaults to this process.

    Returns:
        ``<base_path>/.staging-<version>-<pid>``.
    """
    return base_path / f"{STAGING_PREFIX}{version}-{os.getpid() if pid is None else pid}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine.

    Args:
        pid: a process id.

    Returns:
        ``True`` if the process exists (even if owned by another user).
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def stale_staging(layout: Layout) -> list[StagingFolder]:
    """Staging folders whose exporting process is gone (an earlier export crashed or was killed).

    Folders of a live process other than this one are left alone: another export may be running.

    Args:
        layout: the scanned base path.

    Returns:
        The stale staging folders.
    """
    return [s for s in layout.staging if s.pid == os.getpid() or not pid_alive(s.pid)]
