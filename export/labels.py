"""The labels file: one class name per line, in class-id order (docs/CONTRACTS.md §2)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

FILENAME: Final = "labels.txt"


def parse(text: str) -> list[str]:
    """Parse a labels file's text.

    Args:
        text: file content; one label per line, a trailing newline allowed.

    Returns:
        The labels in class-id order.

    Raises:
        ValueError: no labels, a blank line, surrounding whitespace, or a duplicate label.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise ValueError("the labels file is empty")
    for number, label in enumerate(lines, start=1):
        if not label or label != label.strip():
            raise ValueError(f"line {number} of the labels file is blank or padded: {label!r}")
    duplicates = sorted({label for label in lines if lines.count(label) > 1})
    if duplicates:
        raise ValueError(f"duplicate labels: {duplicates}")
    return lines


def read(path: Path) -> list[str]:
    """Read and check a labels file.

    Args:
        path: the ``labels.txt`` file.

    Returns:
        The labels in class-id order.

    Raises:
        OSError: the file cannot be read.
        ValueError: see :func:`parse`.
    """
    return parse(path.read_text(encoding="utf-8"))


def write(labels: list[str], path: Path) -> None:
    """Write labels one per line with a trailing newline.

    Args:
        labels: class names in class-id order (checked with :func:`parse`).
        path: the file to create.

    Raises:
        ValueError: the labels would not read back identically.
    """
    text = "".join(f"{label}\n" for label in labels)
    if parse(text) != list(labels):
        raise ValueError(f"labels cannot be written one per line: {labels}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
