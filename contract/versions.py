"""Which children of a model base path are versions: TF Serving's rule, the one implementation.

TF Serving's ``FileSystemStoragePathSource`` reads every child name of the base path with
``safe_strto64``, which is ``absl::SimpleAtoi`` in TF Serving 2.20: optional ASCII whitespace around
the number, an optional ``+`` or ``-`` sign, then ASCII digits only, within int64. So ``7``,
``007``, ``+7`` and `` 7`` are all version 7; ``-3`` is version -3 and ``-0`` is version 0 (the
source neither rejects nor skips negative numbers: they take part in the ``latest`` ordering like
any other); ``７`` (full-width), ``²``, ``7a``, ``7.0`` and ``.staging-7`` are not versions and are
ignored. When several names give one number, TF Serving logs "Duplicate version directories
detected" and, for the ``latest`` and ``specific`` policies, serves the name that sorts last
(its children are kept in a sorted set and a later name replaces an earlier one).

Pure standard library.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

INT64_MAX: Final = 2**63 - 1
INT64_MIN: Final = -(2**63)

_SIMPLE_ATOI: Final = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)[ \t\n\v\f\r]*")


def parse_version(name: str) -> int | None:
    """Read a child name of a model base path the way TF Serving does.

    Args:
        name: a folder name, e.g. ``"007"``.

    Returns:
        The version number (an int64, possibly zero or negative), or ``None`` if TF Serving
        ignores the name.
    """
    match = _SIMPLE_ATOI.fullmatch(name)
    if match is None:
        return None
    value = int(match.group(1))
    return value if INT64_MIN <= value <= INT64_MAX else None


def version_folders(names: Iterable[str]) -> dict[int, list[str]]:
    """Group child names by the version TF Serving reads from them.

    Args:
        names: child names of a model base path (files and folders alike; the caller filters).

    Returns:
        version -> every name giving that version, sorted so that the last one is the name TF
        Serving serves; more than one name means a collision. Names that are not versions are
        left out.
    """
    found: dict[int, list[str]] = {}
    for name in names:
        number = parse_version(name)
        if number is not None:
            found.setdefault(number, []).append(name)
    return {number: sorted(group) for number, group in found.items()}
