"""Sample model inputs for the warm-up requests and the export's output comparison.

Real photos when the data set is available (the ``test`` split, or a folder-per-class set), decoded
by :func:`preprocessing.decode` exactly as the gateway decodes uploads; otherwise synthetic images
that go through the same decoder. No TensorFlow here.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image

import preprocessing
from contract import IMAGE_SUFFIXES

DATA_DIR_ENV: Final = "FASHION_DATA_DIR"


@dataclass(frozen=True)
class Samples:
    """A batch of decoded sample images.

    Attributes:
        images: ``uint8`` array of shape ``(N, H, W, 3)``.
        source: where they came from, for the model card: ``"<dir> (test split)"`` or
            ``"synthetic"``.
        files: the image files used, relative to the data directory (empty when synthetic).
    """

    images: np.ndarray
    source: str
    files: tuple[str, ...]


def _image_root(data_dir: Path) -> Path | None:
    for candidate in (data_dir / "test", data_dir):
        if candidate.is_dir() and any(p.is_dir() for p in candidate.iterdir()):
            return candidate
    return None


def _round_robin(root: Path, count: int) -> list[Path]:
    """Pick ``count`` files, cycling through the sorted class folders so every class appears."""
    per_class = [
        sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for folder in sorted(p for p in root.iterdir() if p.is_dir())
    ]
    picked: list[Path] = []
    depth = 0
    while len(picked) < count and any(depth < len(files) for files in per_class):
        picked.extend(files[depth] for files in per_class if depth < len(files))
        depth += 1
    return picked[:count]


def synthetic(count: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Deterministic synthetic photos (colour gradients plus noise), PNG-encoded and decoded.

    Args:
        count: number of images.
        size: ``(height, width)`` in pixels.
        seed: NumPy random seed.

    Returns:
        ``uint8`` array of shape ``(count, height, width, 3)``.
    """
    rng = np.random.default_rng(seed)
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width]
    out = np.empty((count, height, width, 3), np.uint8)
    for i in range(count):
        base = rng.uniform(0, 255, 3)
        slope = rng.uniform(-1, 1, (2, 3)) * 255 / max(height, width)
        noise = rng.normal(0, 12, (height, width, 3))
        pixels = base + yy[..., None] * slope[0] + xx[..., None] * slope[1] + noise
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(buffer, "PNG")
        out[i] = preprocessing.decode(buffer.getvalue(), size)
    return out


def _manifest_test_files(manifest: Path, count: int) -> list[Path]:
    """The test-split files of a training ``manifest.csv``, one class after another in turn."""
    by_label: dict[str, list[Path]] = {}
    with open(manifest, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row.get("split") == "test" and row.get("path"):
                by_label.setdefault(row.get("label") or "", []).append(Path(row["path"]))
    per_class = [files for _, files in sorted(by_label.items())]
    picked = [
        files[i]
        for i in range(max(map(len, per_class), default=0))
        for files in per_class
        if i < len(files)
    ]
    return picked[:count]


def load(
    count: int,
    size: tuple[int, int],
    data_dir: Path | None = None,
    *,
    manifest: Path | None = None,
) -> Samples:
    """Decode ``count`` sample images of ``size``, real when possible.

    Sources, first found wins: ``data_dir``; the test split of ``manifest`` (the training
    manifest, whatever layout ``prepare`` read: Kaggle ``styles.csv``, a labels CSV, folders);
    ``$FASHION_DATA_DIR``; synthetic images.

    Args:
        count: number of images wanted (e.g. 32, the largest warm-up batch).
        size: ``(height, width)`` the model takes.
        data_dir: a data set folder with a ``test/<class>/`` split or ``<class>/`` folders.
            Missing or empty -> the next source.
        manifest: a ``manifest.csv`` with the columns ``path,label,split``; used when it
            exists and lists test images.

    Returns:
        :class:`Samples` with exactly ``count`` images (real ones repeated if the set is smaller).

    Raises:
        preprocessing.ImageError: a data set file does not decode.
    """
    if data_dir is None and manifest is not None and manifest.is_file():
        files = _manifest_test_files(manifest, count)
        if files:
            files = [files[i % len(files)] for i in range(count)]
            images = np.stack([preprocessing.decode(p.read_bytes(), size) for p in files])
            return Samples(images, f"{manifest} (test split)", tuple(map(str, files)))
    if data_dir is None and os.environ.get(DATA_DIR_ENV):
        data_dir = Path(os.environ[DATA_DIR_ENV])
    root = _image_root(data_dir) if data_dir is not None and data_dir.is_dir() else None
    files = _round_robin(root, count) if root is not None else []
    if not files:
        return Samples(synthetic(count, size), "synthetic", ())
    files = [files[i % len(files)] for i in range(count)]
    images = np.stack([preprocessing.decode(p.read_bytes(), size) for p in files])
    split = " (test split)" if root.name == "test" else ""
    return Samples(images, f"{data_dir}{split}", tuple(str(p.relative_to(data_dir)) for p in files))
