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


def turned(arrays: SplitArrays, quarter_turns: Sequence[int] = (0, 1, 2, 3)) -> SplitArrays:
    """The split repeated once per quarter turn, pixels turned counter-clockwise.

    Turning the decoded square equals decoding the turned file (the resize to a square commutes
    with quarter turns, up to interpolation).

    Args:
        arrays: the decoded split, ``n`` rows.
        quarter_turns: how many 90-degree turns per copy (0 = upright).

    Returns:
        ``len(quarter_turns) * n`` rows, copy by copy in the order given; ``paths`` get a
        ``#rot<degrees>`` suffix for the turned copies.
    """
    images = np.concatenate([np.rot90(arrays.images, k, axes=(1, 2)) for k in quarter_turns])
    labels = np.concatenate([arrays.labels] * len(quarter_turns))
    paths = [p if k == 0 else f"{p}#rot{90 * k}" for k in quarter_turns for p in arrays.paths]
    return SplitArrays(np.ascontiguousarray(images), labels, paths)


def with_one_turn(arrays: SplitArrays, seed: int) -> SplitArrays:
    """The split upright, followed by each image once more at a seeded random quarter turn.

    Half the cost of scoring all four orientations, and still measures turned photos.

    Args:
        arrays: the decoded split, ``n`` rows.
        seed: seed of the turn chosen per image.

    Returns:
        ``2 * n`` rows: upright, then turned by 90, 180 or 270 degrees (paths suffixed
        ``#rot<degrees>``).
    """
    turns = np.random.default_rng(seed).integers(1, 4, len(arrays))
    extra = np.stack([np.rot90(image, k) for image, k in zip(arrays.images, turns, strict=True)])
    return SplitArrays(
        np.concatenate([arrays.images, extra]),
        np.concatenate([arrays.labels, arrays.labels]),
        [*arrays.paths, *(f"{p}#rot{90 * k}" for p, k in zip(arrays.paths, turns, strict=True))],
    )


def turn_randomly(images: np.ndarray, probability: float, rng: np.random.Generator) -> np.ndarray:
    """Turns each image by 90, 180 or 270 degrees (equally likely) with ``probability``.

    Args:
        images: uint8 ``(b, S, S, 3)`` square images.
        probability: chance that an image is turned at all (0..1).
        rng: the seeded generator (reproducible runs).

    Returns:
        A new uint8 array of the same shape.
    """
    out = images.copy()
    turns = np.where(rng.random(len(images)) < probability, rng.integers(1, 4, len(images)), 0)
    for i, k in enumerate(turns):
        if k:
            out[i] = np.rot90(images[i], k)
    return out


def pipeline(
    arrays: SplitArrays,
    num_classes: int,
    batch_size: int,
    *,
    shuffle: bool = False,
    augment: keras.Sequential | None = None,
    seed: int = 0,
    turn_probability: float = 0.0,
) -> tf.data.Dataset:
    """A batched dataset of ``(float32 images 0..255, one-hot float32 labels)``.

    Args:
        arrays: the decoded split.
        num_classes: width of the one-hot labels.
        batch_size: images per batch (the last batch may be smaller).
        shuffle: reshuffle the order every epoch (seeded, reproducible).
        augment: augmentation applied to each training batch, or None.
        seed: seed of the shuffle and of the turns.
        turn_probability: chance that a training image is turned by a random quarter turn
            (0 = never).

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
            images = arrays.images[idx]
            if turn_probability > 0:
                images = turn_randomly(images, turn_probability, rng)
            yield images, arrays.labels[idx]

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
