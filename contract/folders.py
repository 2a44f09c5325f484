"""Labels as folder names: a reversible mapping, and the check export makes before publishing.

The nightly job files each photo under ``<processed>/<folder>/`` where ``folder =
label_to_folder(label)``; :func:`folder_to_label` gives the label back. The rule, one label
character at a time:

=================================================  ==========================================
character                                          becomes
=================================================  ==========================================
ASCII letter or digit, ``-``                       itself
any other letter or digit (``str.isalnum``: é, ß)  itself
space (not the first character)                    ``_``
``.`` (not the first or last character)            itself
anything else, and ``_`` ``%`` themselves          ``%XX`` per UTF-8 byte (upper-case hex)
=================================================  ==========================================

Then, if the name (before its first ``.``) is a Windows device name (``CON``, ``NUL``,
``COM1`` ...), its first character is written as ``%XX`` too. Examples: ``t-shirt`` ->
``t-shirt`` (the ten release labels are unchanged), ``Casual Shoes`` -> ``Casual_Shoes``,
``Jupes d'été`` -> ``Jupes_d%27été``, ``50%_off`` -> ``50%25%5Foff``.

Consequences: a folder made from a label never starts with ``_`` or ``.``, so it cannot be
hidden or clash with the job's own folders (``_uncertain``); ``/``, ``\\``, ``:`` and control
characters never reach the file system. The mapping is one-to-one, but on a case-insensitive
file system (Windows, macOS by default) ``Shirts`` and ``shirts`` would share one folder, and
a name longer than 255 bytes cannot be created: :func:`check_labels` refuses both, and export
calls it before publishing a version.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Final

MAX_FOLDER_BYTES: Final = 255
"""Longest file name, in UTF-8 bytes, of common file systems (ext4, APFS, NTFS in UTF-16 units)."""

WINDOWS_DEVICE_NAMES: Final = frozenset(
    {"con", "prn", "aux", "nul"}
    | {f"com{i}" for i in range(1, 10)}
    | {f"lpt{i}" for i in range(1, 10)}
)
"""Names Windows reserves in every folder, with any extension, in any case."""

_ASCII_KEPT: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")
_ESCAPE = re.compile(r"%[0-9A-F]{2}")


def _escape(char: str) -> str:
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))


def _kept(char: str, i: int, last: int) -> str:
    if char in _ASCII_KEPT or (not char.isascii() and char.isalnum()):
        return char
    if char == " " and i > 0:
        return "_"
    if char == "." and 0 < i < last:
        return char
    return _escape(char)


def label_to_folder(label: str) -> str:
    """The folder name of a label (see the module's table).

    Args:
        label: a class label, non-empty.

    Returns:
        The folder name; :func:`folder_to_label` maps it back to ``label``.

    Raises:
        ValueError: ``label`` is empty.
    """
    if not label:
        raise ValueError("an empty label has no folder name")
    last = len(label) - 1
    name = "".join(_kept(c, i, last) for i, c in enumerate(label))
    if name.split(".", 1)[0].lower() in WINDOWS_DEVICE_NAMES:
        name = _escape(name[0]) + name[1:]
    return name


def folder_to_label(name: str) -> str:
    """The label a folder name was made from: the inverse of :func:`label_to_folder`.

    Args:
        name: a folder name, e.g. ``"Casual_Shoes"``.

    Returns:
        The label, e.g. ``"Casual Shoes"``.

    Raises:
        ValueError: no label maps to ``name`` (e.g. ``"_uncertain"``, ``"a b"``, ``"%zz"``).
    """
    try:
        data = bytearray()
        i = 0
        while i < len(name):
            if _ESCAPE.match(name, i):
                data.append(int(name[i + 1 : i + 3], 16))
                i += 3
            else:
                data += (" " if name[i] == "_" else name[i]).encode("utf-8")
                i += 1
        label = data.decode("utf-8")
        if label and label_to_folder(label) == name:
            return label
    except (UnicodeDecodeError, ValueError):
        pass
    raise ValueError(f"{name!r} is not a folder name made from a label")


def clash_key(name: str) -> str:
    """What a case-insensitive, normalising file system compares: NFC of the case-folded name."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())


def _short(label: str) -> str:
    return repr(label if len(label) <= 40 else label[:37] + "...")


def check_labels(labels: Sequence[str]) -> list[str]:
    """Checks that every label gets its own usable folder on any common file system.

    Args:
        labels: a version's labels, in class-id order.

    Returns:
        The folder names, in the same order.

    Raises:
        ValueError: a label is empty, a folder name is longer than :data:`MAX_FOLDER_BYTES`
            bytes, or two labels map to the same folder name on a case-insensitive file system
            (e.g. ``Shirts`` and ``shirts``); the message names every such label.
    """
    names = [label_to_folder(label) for label in labels]
    problems = [
        f"{_short(label)} -> {len(name.encode())}-byte folder name (at most {MAX_FOLDER_BYTES})"
        for label, name in zip(labels, names, strict=True)
        if len(name.encode()) > MAX_FOLDER_BYTES
    ]
    groups: dict[str, list[str]] = {}
    for label, name in zip(labels, names, strict=True):
        groups.setdefault(clash_key(name), []).append(label)
    problems += [
        f"{', '.join(repr(label) for label in group)} -> the same folder "
        f"{label_to_folder(group[0])!r} on a case-insensitive file system"
        for group in groups.values()
        if len(group) > 1
    ]
    if problems:
        raise ValueError("labels without a folder of their own: " + "; ".join(problems))
    return names
