"""Sample model inputs for the warm-up requests and the export's output comparison.

Real photos when the data set is available (the ``test`` split, or a folder-per-class set), decoded
by :func:`preprocessing.decode` exactly as the gateway decodes uploads; otherwise synthetic images
that go through the same decoder. No TensorFlow here.
"""

from __future__ import annotations

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


def load(count: int, size: tuple[int, int], data_dir: Path | None = None) -> Samples:
    """Decode ``count`` sample images of ``size``, real when possible.

    Args:
        count: number of images wanted (e.g. 32, the largest warm-up batch).
        size: ``(height, width)`` the model takes.
        data_dir: a data set folder with a ``test/<class>/`` split or ``<class>/`` folders;
            defaults to ``$FASHION_DATA_DIR``. Missing or empty -> synthetic images.

    Returns:
        :class:`Samples` with exactly ``count`` images (real ones repeated if the set is smaller).

    Raises:
        preprocessing.ImageError: a data set file does not decode.
    """
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
