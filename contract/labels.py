"""The labels file: one class name per line, in class-id order, UTF-8, trailing newline.

Written by training (``artifacts/labels.txt``), copied by export into ``assets.extra/``, read back
by export's verification. Line ``i`` (from 0) names column ``i`` of ``probabilities``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

LABELS_FILENAME: Final = "labels.txt"
"""The file name, in the training artifacts and in a version's ``assets.extra/``."""


def parse_labels(text: str) -> list[str]:
    """Parse a labels file's text.

    Args:
        text: file content; one label per line, a trailing newline allowed.

    Returns:
        The labels in class-id order.

    Raises:
        ValueError: no labels, a blank line, surrounding whitespace, a carriage return inside a
            label (``str.splitlines`` readers would split it), or a duplicate label.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise ValueError("the labels file is empty")
    for number, label in enumerate(lines, start=1):
        if not label or label != label.strip() or "\r" in label:
            raise ValueError(f"line {number} of the labels file is blank or padded: {label!r}")
    duplicates = sorted({label for label in lines if lines.count(label) > 1})
    if duplicates:
        raise ValueError(f"duplicate labels: {duplicates}")
    return lines


def format_labels(labels: Sequence[str]) -> str:
    """The text of a labels file.

    Args:
        labels: class names in class-id order.

    Returns:
        One label per line with a trailing newline.

    Raises:
        ValueError: the text would not parse back to the same labels (empty list, a label with a
            newline, padding, blank or duplicate labels).
    """
    text = "".join(f"{label}\n" for label in labels)
    if parse_labels(text) != list(labels):
        raise ValueError(f"labels cannot be written one per line: {list(labels)}")
    return text


def read_labels(path: Path | str) -> list[str]:
    """Read and check a labels file.

    Args:
        path: the ``labels.txt`` file.

    Returns:
        The labels in class-id order.

    Raises:
        OSError: the file cannot be read.
        ValueError: see :func:`parse_labels` (also for bytes that are not UTF-8).
    """
    return parse_labels(Path(path).read_text(encoding="utf-8"))


def write_labels(labels: Sequence[str], path: Path | str) -> None:
    """Write a labels file, creating its folder.

    Args:
        labels: class names in class-id order.
        path: the file to create or replace.

    Raises:
        ValueError: see :func:`format_labels`; nothing is written then.
        OSError: the file cannot be written.
    """
    text = format_labels(labels)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
