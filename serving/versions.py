"""Which version folders exist under a model's base path, and which of them a policy serves.

Which child names are versions is TF Serving's rule, implemented once in :mod:`contract.versions`
(``7``, ``007``, ``+7`` are version 7; ``.staging-*``, ``tmp``, ``７`` are ignored). Of several
folders giving one number, the one whose name sorts last is served, as TF Serving does. One
deliberate difference: a plain file with a version name is skipped here, where TF Serving would try
(and fail) to load it; the exporter refuses such layouts anyway.
"""

from __future__ import annotations

import os

from contract import version_folders
from serving.config import VersionPolicy


def versions_on_disk(base_path: str) -> dict[int, str]:
    """List the version folders of a model.

    Args:
        base_path: the model's base path; a missing folder yields no versions.

    Returns:
        version number -> path of the child TF Serving would load for it.
    """
    try:
        folders = [entry.name for entry in os.scandir(base_path) if entry.is_dir()]
    except OSError:
        return {}
    return {
        number: os.path.join(base_path, group[-1])
        for number, group in version_folders(folders).items()
    }


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
