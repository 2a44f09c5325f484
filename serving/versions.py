"""Which version folders exist under a model's base path, and which of them a policy serves.

Rules as TF Serving's ``FileSystemStoragePathSource``: a version is a direct child folder whose name
is a non-negative integer; anything else (``.staging-*``, ``tmp``, files) is ignored.
"""

from __future__ import annotations

import os

from serving.config import VersionPolicy


def versions_on_disk(base_path: str) -> dict[int, str]:
    """List the version folders of a model.

    Args:
        base_path: the model's base path; a missing folder yields no versions.

    Returns:
        version number -> absolute folder path.
    """
    found: dict[int, str] = {}
    try:
        entries = list(os.scandir(base_path))
    except OSError:
        return found
    for entry in entries:
        if entry.name.isascii() and entry.name.isdigit() and entry.is_dir():
            found[int(entry.name)] = entry.path
    return found


def aspired_versions(policy: VersionPolicy, available: set[int] | dict[int, str]) -> set[int]:
    """The versions a policy wants served, out of those on disk.

    Args:
        policy: ``latest`` (the ``num_versions`` highest), ``all``, or ``specific`` (the listed
            versions that exist).
        available: versions found on disk.

    Returns:
        The subset to load (may be empty).
    """
    versions = set(available)
    if policy.kind == "all":
        return versions
    if policy.kind == "specific":
        return versions & set(policy.versions)
    return set(sorted(versions)[-policy.num_versions :])
