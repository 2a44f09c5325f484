"""Which file names are candidate images, for training's ``prepare``, export and the nightly job."""

from __future__ import annotations

from typing import Final

IMAGE_SUFFIXES: Final = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
)
"""Lower-case suffixes of the formats ``preprocessing.decode`` opens; compare ``suffix.lower()``."""


def is_image_name(name: str) -> bool:
    """Whether a file name has an image suffix, in any case.

    Args:
        name: a file name or path string, e.g. ``"IMG_001.JPG"``.

    Returns:
        ``True`` if the text after the last dot, lower-cased, is in :data:`IMAGE_SUFFIXES`.
    """
    dot = name.rfind(".")
    return dot >= 0 and name[dot:].lower() in IMAGE_SUFFIXES
