"""A tiny classifier and orientation head whose answers are known exactly.

The classifier reads 8 pixels: the red and the green value of the four corners of an 8x8 photo
(its ``pool`` layer), and its class head reads only the green of the top-left (``left``) and
top-right (``right``) corners. Every photo has a red marker in its top-left corner when upright,
so the orientation head knows the turn from where the red corner is; turned photos answered
without turning back move their green marker to another corner.
"""

from __future__ import annotations

import keras
import numpy as np

LABELS = ["left", "right", "middle"]
"""The classifier's three columns."""

SIZE = 8
CORNERS = [(0, 0), (SIZE - 1, 0), (SIZE - 1, SIZE - 1), (0, SIZE - 1)]
"""Top-left, bottom-left, bottom-right, top-right: where np.rot90 by k moves the top-left."""


def classifier() -> keras.Model:
    pool = np.zeros((SIZE * SIZE * 3, 8), np.float32)
    for j, (r, c) in enumerate(CORNERS):
        pool[(r * SIZE + c) * 3 + 0, j] = 1.0 / 255  # red of corner j
        pool[(r * SIZE + c) * 3 + 1, 4 + j] = 1.0 / 255  # green of corner j
    head = np.zeros((8, 3), np.float32)
    head[4, 0] = 8.0  # green top-left: class 0 "left"
    head[7, 1] = 8.0  # green top-right: class 1 "right"; class 2 never wins
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(8, use_bias=False, name="pool")(x)
    out = keras.layers.Dense(3, activation="softmax", name="probabilities")(x)
    net = keras.Model(inputs, out)
    net.get_layer("pool").set_weights([pool])
    net.get_layer("probabilities").set_weights([head, np.zeros(3, np.float32)])
    return net


def orientation_head() -> tuple[np.ndarray, np.ndarray]:
    kernel = np.zeros((8, 4), np.float32)
    for k in range(4):
        kernel[k, k] = 10.0  # red in corner k means turned k quarter turns
    return kernel, np.zeros(4, np.float32)


def photos() -> np.ndarray:
    """Two upright photos: class 0 (green top-left) and class 1 (green top-right)."""
    photos = np.zeros((2, SIZE, SIZE, 3), np.float32)
    photos[:, 0, 0, 0] = 255.0
    photos[0, 0, 0, 1] = 255.0
    photos[1, 0, SIZE - 1, 1] = 255.0
    return photos


def write_oriented(folder, threshold: float = 0.9):
    """Saves the oriented tiny model and its labels as training does.

    Args:
        folder: an existing folder.
        threshold: the orientation step's threshold.

    Returns:
        ``(model path, labels path)``.
    """
    from training import orientation

    kernel, bias = orientation_head()
    oriented = orientation.build_oriented(classifier(), kernel, bias, threshold)
    oriented.save(folder / "model.keras")
    (folder / "labels.txt").write_text("".join(f"{label}\n" for label in LABELS))
    return folder / "model.keras", folder / "labels.txt"
