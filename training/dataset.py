"""Image arrays and ``tf.data`` input pipelines for training and evaluation.

Each image is decoded once with the shared :func:`preprocessing.decode` (the code the gateway
runs) and kept in memory as uint8; the pipelines only index, augment and batch those arrays.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import preprocessing
from training.manifest import Entry


@dataclass(frozen=True)
class SplitArrays:
    """The decoded images of one split.

    Attributes:
        images: uint8 array, shape ``(n, size, size, 3)``, RGB.
        labels: int32 class ids, shape ``(n,)``.
        paths: source file of each row.
    """

    images: np.ndarray
    labels: np.ndarray
    paths: list[str]

    def __len__(self) -> int:
        return len(self.paths)


def _decode_file(path: str, size: int) -> np.ndarray:
    return preprocessing.decode(Path(path).read_bytes(), (size, size))


def load_split(
    entries: Sequence[Entry], labels: Sequence[str], split: str, size: int, *, workers: int = 2
) -> SplitArrays:
    """Decodes every image of one split into memory.

    Args:
        entries: manifest rows (any splits; only ``split`` is kept).
        labels: class names in class-id order.
        split: ``train``, ``validation`` or ``test``.
        size: side of the square output in pixels.
        workers: decoding threads (Pillow releases the GIL while decoding).

    Returns:
        The split's images and class ids, in manifest order.

    Raises:
        KeyError: a row's label is not in ``labels``.
        preprocessing.ImageError: a file no longer decodes (the manifest is stale).
    """
    rows = [e for e in entries if e.split == split]
    index = {label: i for i, label in enumerate(labels)}
    ids = np.array([index[e.label] for e in rows], dtype=np.int32)
    images = np.zeros((len(rows), size, size, 3), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, array in enumerate(pool.map(lambda e: _decode_file(e.path, size), rows)):
            images[i] = array
    return SplitArrays(images, ids, [e.path for e in rows])


def augmenter(zoom: float, translate: float, seed: int) -> keras.Sequential:
    """The training augmentation: horizontal flip, random zoom-in (crop), small shift.

    Args:
        zoom: maximum zoom-in fraction (0.15 = up to 15 % of each side cropped away).
        translate: maximum shift as a fraction of the side; edges reflected.
        seed: seed of the random layers.

    Returns:
        A Keras model mapping float32 ``(batch, H, W, 3)`` in 0..255 to the same shape and range.
    """
    layers = [keras.layers.RandomFlip("horizontal", seed=seed)]
    if zoom > 0:
        layers.append(keras.layers.RandomZoom((-zoom, 0.0), seed=seed + 1, fill_mode="reflect"))
    if translate > 0:
        layers.append(
            keras.layers.RandomTranslation(translate, translate, seed=seed + 2, fill_mode="reflect")
        )
    return keras.Sequential(layers, name="augmentation")


def pipeline(
    arrays: SplitArrays,
    num_classes: int,
    batch_size: int,
    *,
    shuffle: bool = False,
    augment: keras.Sequential | None = None,
    seed: int = 0,
) -> tf.data.Dataset:
    """A batched dataset of ``(float32 images 0..255, one-hot float32 labels)``.

    Args:
        arrays: the decoded split.
        num_classes: width of the one-hot labels.
        batch_size: images per batch (the last batch may be smaller).
        shuffle: reshuffle the order every epoch (seeded, reproducible).
        augment: augmentation applied to each training batch, or None.
        seed: seed of the shuffle.

    Returns:
        ``tf.data.Dataset`` of ``(images (b, H, W, 3) float32, labels (b, num_classes) float32)``.
    """
    n = len(arrays)
    rng = np.random.default_rng(seed)
    side = arrays.images.shape[1:]

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = rng.permutation(n) if shuffle else np.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield arrays.images[idx], arrays.labels[idx]

    ds = tf.data.Dataset.from_generator(
        batches,
        output_signature=(
            tf.TensorSpec((None, *side), tf.uint8),
            tf.TensorSpec((None,), tf.int32),
        ),
    )

    def to_model_input(images: tf.Tensor, ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x = tf.cast(images, tf.float32)
        if augment is not None:
            x = augment(x, training=True)
        return x, tf.one_hot(ids, num_classes, dtype=tf.float32)

    n_batches = -(-n // batch_size)
    ds = ds.apply(tf.data.experimental.assert_cardinality(n_batches))
    return ds.map(to_model_input, num_parallel_calls=1).prefetch(2)
