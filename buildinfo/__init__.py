"""What this build is: the package version and the git commit, for ``--version`` and metrics.

One source for every program (``fashion-serving``, ``-gateway``, ``-batch``, ``-train``,
``-export``) and for the ``*_build_info`` gauges. Standard library only.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "fashion-classifier"
"""The name in pyproject.toml."""

COMMIT_ENV = "FASHION_GIT_COMMIT"
"""Set by an image build (``--build-arg``) where no ``.git`` folder is shipped."""

_ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def version() -> str:
    """The package version, e.g. ``"0.1.0"``.

    Returns:
        The installed distribution's version, else the one in the source tree's
        ``pyproject.toml``, else ``"0+unknown"``.
    """
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pass
    try:
        text = (_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return "0+unknown"
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    return match.group(1) if match else "0+unknown"


@functools.cache
def git_commit() -> str:
    """The commit this code came from.

    Returns:
        ``$FASHION_GIT_COMMIT`` if set, else ``git rev-parse HEAD`` in the source tree (40 hex
        digits), else ``"unknown"`` (an installed wheel outside a checkout).
    """
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = out.stdout.strip()
    return commit if re.fullmatch(r"[0-9a-f]{40}", commit) else "unknown"


def version_line(program: str) -> str:
    """The text ``--version`` prints.

    Args:
        program: the command name, e.g. ``"fashion-batch"``.

    Returns:
        e.g. ``"fashion-batch 0.1.0 (commit 1a2b3c4d5e6f)"``.
    """
    commit = git_commit()
    return f"{program} {version()} (commit {commit[:12]})"
