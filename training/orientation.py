"""An orientation step inside the model: turned photos are turned back before the class head.

The upright classifier's pooled features feed a small 4-way softmax (the orientation head:
upright, turned 90, 180, 270 degrees counter-clockwise). Only the photos it calls turned with
probability at least ``threshold`` are turned back (pixels, per image) and pass the backbone a
second time; every other photo keeps its first-pass features, so a batch of upright photos costs
one backbone pass plus a ``features x 4`` matrix product. The class head then reads the
(corrected) features, so the model's output is the upright classifier's softmax.

:class:`OrientationStep` is a registered Keras layer: ``keras.models.load_model`` finds it once
this module is imported (training, evaluate and export import it).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

QUARTER_TURNS = 4
"""Orientation classes: 0 upright, ``k`` = turned ``k`` quarter turns counter-clockwise."""

POOL_LAYER = "pool"
"""Name of the classifier's pooled-features layer (:func:`training.model.build_classifier`)."""
HEAD_LAYER = "probabilities"
"""Name of the classifier's softmax class head."""


def turn_back(images: tf.Tensor, quarter_turns: tf.Tensor) -> tf.Tensor:
    """Undoes per-image counter-clockwise quarter turns of square images.

    Image ``i`` is turned ``-quarter_turns[i]`` quarter turns, so an image made with
    ``np.rot90(upright, k)`` (or ``tf.image.rot90(upright, k)``) comes back as ``upright``.

    Args:
        images: ``(n, S, S, C)`` any dtype, square (``H == W``).
        quarter_turns: int ``(n,)``, each in ``0..3``.

    Returns:
        ``(n, S, S, C)`` of the same dtype.
    """
    candidates = tf.stack([tf.image.rot90(images, k=(QUARTER_TURNS - k) % 4) for k in range(4)], 1)
    return tf.gather(candidates, tf.cast(quarter_turns, tf.int32), axis=1, batch_dims=1)


@keras.saving.register_keras_serializable(package="fashion")
class OrientationStep(keras.layers.Layer):
    """Pixels in, orientation-corrected pooled features out.

    Args:
        features: Keras model, float32 ``(None, S, S, 3)`` pixels 0..255 to ``(None, D)``
            pooled features (square input).
        threshold: orientation probability from which a photo predicted turned is turned back
            (0..1).
        orientation: the 4-way softmax ``Dense`` on the features; a new one when None.
        **kwargs: Keras layer arguments (``name``, ...).

    Call:
        float32 ``(n, S, S, 3)`` in 0..255 to float32 ``(n, D)``.
    """

    def __init__(
        self,
        features: keras.Model,
        threshold: float = 0.5,
        orientation: keras.layers.Layer | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.features = features
        self.threshold = float(threshold)
        self.orientation = orientation or keras.layers.Dense(
            QUARTER_TURNS, activation="softmax", name="orientation"
        )
        self.width = int(features.output_shape[-1])

    def build(self, input_shape) -> None:  # noqa: D102 - Keras protocol
        if not self.orientation.built:
            self.orientation.build((None, self.width))
        self.built = True

    def compute_output_shape(self, input_shape):  # noqa: D102 - Keras protocol
        return (input_shape[0], self.width)

    def turns(self, features: tf.Tensor) -> tf.Tensor:
        """Quarter turns to undo per photo: the head's argmax if its probability reaches the
        threshold, else 0. ``(n, D)`` features to int32 ``(n,)``."""
        p = self.orientation(features)
        k = tf.argmax(p, axis=1, output_type=tf.int32)
        return tf.where(tf.reduce_max(p, axis=1) >= self.threshold, k, tf.zeros_like(k))

    def call(self, pixels):  # noqa: D102 - documented on the class
        first = self.features(pixels, training=False)
        k = self.turns(first)
        rows = tf.where(k > 0)  # (m, 1) int64

        def second_pass() -> tf.Tensor:
            turned = turn_back(tf.gather_nd(pixels, rows), tf.gather_nd(k, rows))
            return tf.tensor_scatter_nd_update(first, rows, self.features(turned, training=False))

        return tf.cond(tf.size(rows) > 0, second_pass, lambda: first)

    def get_config(self) -> dict:  # noqa: D102 - Keras protocol
        return {
            **super().get_config(),
            "features": keras.saving.serialize_keras_object(self.features),
            "orientation": keras.saving.serialize_keras_object(self.orientation),
            "threshold": self.threshold,
        }

    @classmethod
    def from_config(cls, config: dict) -> OrientationStep:  # noqa: D102 - Keras protocol
        config = dict(config)
        config["features"] = keras.saving.deserialize_keras_object(config["features"])
        config["orientation"] = keras.saving.deserialize_keras_object(config["orientation"])
        return cls(**config)


def features_model(classifier: keras.Model) -> keras.Model:
    """The classifier up to its pooled features (scaling, backbone, pooling; no dropout).

    Args:
        classifier: from :func:`training.model.build_classifier`.

    Returns:
        float32 ``(None, S, S, 3)`` 0..255 to float32 ``(None, D)``.
    """
    return keras.Model(classifier.inputs, classifier.get_layer(POOL_LAYER).output, name="features")


def build_oriented(
    classifier: keras.Model, kernel: np.ndarray, bias: np.ndarray, threshold: float
) -> keras.Model:
    """The classifier with the orientation step between its pixels and its class head.

    Args:
        classifier: the upright classifier (its layers are shared, not copied).
        kernel: float ``(D, 4)`` orientation head weights.
        bias: float ``(4,)``.
        threshold: see :class:`OrientationStep`.

    Returns:
        float32 ``(None, S, S, 3)`` 0..255 to the classifier's softmax ``(None, C)``.
    """
    step = OrientationStep(features_model(classifier), threshold, name="orientation_step")
    inputs = keras.Input(shape=classifier.input_shape[1:], dtype="float32", name="pixels")
    outputs = classifier.get_layer(HEAD_LAYER)(step(inputs))
    step.orientation.set_weights([np.asarray(kernel, np.float32), np.asarray(bias, np.float32)])
    return keras.Model(inputs, outputs, name="fashion_mobilenetv2_oriented")


def turned_features(features: keras.Model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Pooled features of every image at every quarter turn (one pass per image per turn).

    Args:
        features: from :func:`features_model`.
        images: uint8 ``(n, S, S, 3)`` upright.
        batch_size: images per forward pass.

    Returns:
        float32 ``(4, n, D)``; ``[k]`` is the images turned ``k`` quarter turns
        counter-clockwise (``np.rot90``).
    """
    run = tf.function(lambda x: features(x, training=False), reduce_retracing=True)
    out = []
    for k in range(QUARTER_TURNS):
        rows = [
            run(tf.constant(np.rot90(images[i : i + batch_size], k, axes=(1, 2)), tf.float32))
            for i in range(0, len(images), batch_size)
        ]
        out.append(np.concatenate([np.asarray(r) for r in rows]))
    return np.stack(out)


def fit_head(train_features: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fits the orientation head: multinomial logistic regression on cached features.

    Args:
        train_features: float ``(4, n, D)`` from :func:`turned_features`.
        seed: seed of the solver.

    Returns:
        ``(kernel (D, 4), bias (4,))`` float32 of a softmax ``Dense`` layer.
    """
    from sklearn.linear_model import LogisticRegression

    x = train_features.reshape(-1, train_features.shape[-1])
    y = np.repeat(np.arange(QUARTER_TURNS), train_features.shape[1])
    fit = LogisticRegression(C=1.0, max_iter=500, random_state=seed).fit(x, y)
    return fit.coef_.T.astype(np.float32), fit.intercept_.astype(np.float32)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Simulated:
    """The pipeline's answers on cached features at one threshold.

    Attributes:
        class_probabilities: float ``(4, n, C)`` class softmax per quarter turn of the input.
        turned_back: bool ``(4, n)`` photos the step turned back (second pass).
    """

    class_probabilities: np.ndarray
    turned_back: np.ndarray


def simulate(
    features: np.ndarray,
    kernel: np.ndarray,
    bias: np.ndarray,
    head: tuple[np.ndarray, np.ndarray],
    threshold: float,
) -> Simulated:
    """What :class:`OrientationStep` plus the class head answer, from cached features.

    Quarter turns are exact pixel permutations, so turning photo ``t`` back by ``k`` gives the
    features of the photo at turn ``(t - k) mod 4``, already cached.

    Args:
        features: float ``(4, n, D)`` from :func:`turned_features`.
        kernel: ``(D, 4)`` orientation head.
        bias: ``(4,)``.
        head: ``(kernel (D, C), bias (C,))`` of the class head.
        threshold: see :class:`OrientationStep`.

    Returns:
        The :class:`Simulated` answers.
    """
    n = features.shape[1]
    p = _softmax(features @ kernel + bias)  # (4, n, 4)
    k = np.where(p.max(-1) >= threshold, p.argmax(-1), 0)
    source = (np.arange(QUARTER_TURNS)[:, None] - k) % QUARTER_TURNS
    corrected = features[source, np.arange(n)[None, :]]
    return Simulated(_softmax(corrected @ head[0] + head[1]), k > 0)


def choose_threshold(
    features: np.ndarray,
    labels: np.ndarray,
    kernel: np.ndarray,
    bias: np.ndarray,
    head: tuple[np.ndarray, np.ndarray],
    candidates: np.ndarray | None = None,
) -> tuple[float, list[dict]]:
    """The threshold with the best mean accuracy over the four turns (ties: upright accuracy,
    then the higher threshold, i.e. fewer second passes).

    Args:
        features: float ``(4, n, D)`` validation features.
        labels: int ``(n,)`` true class columns.
        kernel: ``(D, 4)`` orientation head.
        bias: ``(4,)``.
        head: the class head's ``(kernel, bias)``.
        candidates: thresholds to try (default 0.25 to 0.99 by 0.01).

    Returns:
        ``(threshold, table)``: one row per candidate with ``threshold``,
        ``accuracy_by_turn`` (4 floats), ``mean_accuracy``, ``second_pass_upright`` (share of
        upright photos turned back).
    """
    if candidates is None:
        candidates = np.round(np.arange(0.25, 1.0, 0.01), 2)
    table = []
    for t in candidates:
        s = simulate(features, kernel, bias, head, float(t))
        acc = (s.class_probabilities.argmax(-1) == labels[None, :]).mean(axis=1)
        table.append(
            {
                "threshold": float(t),
                "accuracy_by_turn": [round(float(a), 4) for a in acc],
                "mean_accuracy": float(acc.mean()),
                "second_pass_upright": float(s.turned_back[0].mean()),
            }
        )
    best = max(
        table,
        key=lambda r: (round(r["mean_accuracy"], 6), r["accuracy_by_turn"][0], r["threshold"]),
    )
    return best["threshold"], table
