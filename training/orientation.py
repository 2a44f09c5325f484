"""An orientation step inside the model: turned photos are turned back before the class head.

The upright classifier's features feed a small 4-way softmax (the orientation head: upright,
turned 90, 180, 270 degrees counter-clockwise): its pooled features, or (``regions``) the
backbone's feature map averaged over its four overlapping quadrants, which keeps where in the
photo each feature is (pooled features hardly tell 90 from 270 degrees). Only the photos it
calls turned with probability at least ``threshold`` are turned back (pixels, per image) and pass
the backbone a second time; every other photo keeps its first-pass features, so a batch of upright
photos costs one backbone pass plus a small matrix product. The class head then reads the
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
            pooled features, or with ``regions`` to the ``(None, h, w, D)`` feature map that
            the classifier averages (square input).
        threshold: orientation probability from which a photo predicted turned is turned back
            (0..1).
        orientation: the 4-way softmax ``Dense`` on the cues; a new one when None.
        regions: the orientation head reads the feature map averaged over its 4 overlapping
            quadrants (``4 * D`` cues) instead of the pooled features (``D`` cues).
        **kwargs: Keras layer arguments (``name``, ...).

    Call:
        float32 ``(n, S, S, 3)`` in 0..255 to float32 ``(n, D)``.
    """

    def __init__(
        self,
        features: keras.Model,
        threshold: float = 0.5,
        orientation: keras.layers.Layer | None = None,
        regions: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.features = features
        self.threshold = float(threshold)
        self.orientation = orientation or keras.layers.Dense(
            QUARTER_TURNS, activation="softmax", name="orientation"
        )
        self.regions = bool(regions)
        self.width = int(features.output_shape[-1])
        self.cues_width = self.width * (4 if self.regions else 1)

    def build(self, input_shape) -> None:  # noqa: D102 - Keras protocol
        if not self.orientation.built:
            self.orientation.build((None, self.cues_width))
        self.built = True

    def compute_output_shape(self, input_shape):  # noqa: D102 - Keras protocol
        return (input_shape[0], self.width)

    def describe(self, output: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``(pooled (n, D), cues (n, D or 4D))`` from the features model's output."""
        if not self.regions:
            return output, output
        pooled = tf.reduce_mean(output, axis=[1, 2])
        side = output.shape[1]
        window = (side + 1) // 2
        quadrants = tf.nn.avg_pool2d(output, window, side - window, "VALID")  # (n, 2, 2, D)
        return pooled, tf.reshape(quadrants, [-1, self.cues_width])

    def turns(self, cues: tf.Tensor) -> tf.Tensor:
        """Quarter turns to undo per photo: the head's argmax if its probability reaches the
        threshold, else 0. ``(n, D)`` cues (see :meth:`describe`) to int32 ``(n,)``."""
        p = self.orientation(cues)
        k = tf.argmax(p, axis=1, output_type=tf.int32)
        return tf.where(tf.reduce_max(p, axis=1) >= self.threshold, k, tf.zeros_like(k))

    def call(self, pixels):  # noqa: D102 - documented on the class
        first, cues = self.describe(self.features(pixels, training=False))
        k = self.turns(cues)
        rows = tf.where(k > 0)  # (m, 1) int64

        def second_pass() -> tf.Tensor:
            turned = turn_back(tf.gather_nd(pixels, rows), tf.gather_nd(k, rows))
            again = self.describe(self.features(turned, training=False))[0]
            return tf.tensor_scatter_nd_update(first, rows, again)

        return tf.cond(tf.size(rows) > 0, second_pass, lambda: first)

    def get_config(self) -> dict:  # noqa: D102 - Keras protocol
        return {
            **super().get_config(),
            "features": keras.saving.serialize_keras_object(self.features),
            "orientation": keras.saving.serialize_keras_object(self.orientation),
            "threshold": self.threshold,
            "regions": self.regions,
        }

    @classmethod
    def from_config(cls, config: dict) -> OrientationStep:  # noqa: D102 - Keras protocol
        config = dict(config)
        config["features"] = keras.saving.deserialize_keras_object(config["features"])
        config["orientation"] = keras.saving.deserialize_keras_object(config["orientation"])
        return cls(**config)


def features_model(classifier: keras.Model, regions: bool = False) -> keras.Model:
    """The classifier up to its pooled features (scaling, backbone, pooling; no dropout).

    Args:
        classifier: from :func:`training.model.build_classifier`.
        regions: stop before the pooling (its ``GlobalAveragePooling2D`` is then recomputed by
            :meth:`OrientationStep.describe`).

    Returns:
        float32 ``(None, S, S, 3)`` 0..255 to float32 ``(None, D)``, or with ``regions`` the
        ``(None, h, w, D)`` feature map.
    """
    pool = classifier.get_layer(POOL_LAYER)
    return keras.Model(classifier.inputs, pool.input if regions else pool.output, name="features")


def build_oriented(
    classifier: keras.Model,
    kernel: np.ndarray,
    bias: np.ndarray,
    threshold: float,
    regions: bool = False,
) -> keras.Model:
    """The classifier with the orientation step between its pixels and its class head.

    Args:
        classifier: the upright classifier (its layers are shared, not copied).
        kernel: float ``(D, 4)`` orientation head weights.
        bias: float ``(4,)``.
        threshold: see :class:`OrientationStep`.
        regions: see :class:`OrientationStep`.

    Returns:
        float32 ``(None, S, S, 3)`` 0..255 to the classifier's softmax ``(None, C)``.
    """
    step = OrientationStep(
        features_model(classifier, regions), threshold, regions=regions, name="orientation_step"
    )
    inputs = keras.Input(shape=classifier.input_shape[1:], dtype="float32", name="pixels")
    outputs = classifier.get_layer(HEAD_LAYER)(step(inputs))
    step.orientation.set_weights([np.asarray(kernel, np.float32), np.asarray(bias, np.float32)])
    return keras.Model(inputs, outputs, name="fashion_mobilenetv2_oriented")


def turned_features(
    step: OrientationStep, images: np.ndarray, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features and orientation cues of every image at every quarter turn.

    One backbone pass per image per turn.

    Args:
        step: the orientation step (its features model and :meth:`OrientationStep.describe`).
        images: uint8 ``(n, S, S, 3)`` upright.
        batch_size: images per forward pass.

    Returns:
        ``(pooled (4, n, D), cues (4, n, D'))`` float32; ``[k]`` is the images turned ``k``
        quarter turns counter-clockwise (``np.rot90``).
    """
    run = tf.function(
        lambda x: step.describe(step.features(x, training=False)), reduce_retracing=True
    )
    pooled, cues = [], []
    for k in range(QUARTER_TURNS):
        rows = [
            run(tf.constant(np.rot90(images[i : i + batch_size], k, axes=(1, 2)), tf.float32))
            for i in range(0, len(images), batch_size)
        ]
        pooled.append(np.concatenate([np.asarray(r[0]) for r in rows]))
        cues.append(np.concatenate([np.asarray(r[1]) for r in rows]))
    return np.stack(pooled), np.stack(cues)


def fit_head(train_features: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fits the orientation head: multinomial logistic regression on cached features.

    Args:
        train_features: float ``(4, n, D')`` orientation cues from :func:`turned_features`.
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
    cues: np.ndarray,
    kernel: np.ndarray,
    bias: np.ndarray,
    head: tuple[np.ndarray, np.ndarray],
    threshold: float,
) -> Simulated:
    """What :class:`OrientationStep` plus the class head answer, from cached features.

    Quarter turns are exact pixel permutations, so turning photo ``t`` back by ``k`` gives the
    features of the photo at turn ``(t - k) mod 4``, already cached.

    Args:
        features: float ``(4, n, D)`` pooled features from :func:`turned_features`.
        cues: float ``(4, n, D')`` orientation cues from :func:`turned_features`.
        kernel: ``(D', 4)`` orientation head.
        bias: ``(4,)``.
        head: ``(kernel (D, C), bias (C,))`` of the class head.
        threshold: see :class:`OrientationStep`.

    Returns:
        The :class:`Simulated` answers.
    """
    n = features.shape[1]
    p = _softmax(cues @ kernel + bias)  # (4, n, 4)
    k = np.where(p.max(-1) >= threshold, p.argmax(-1), 0)
    source = (np.arange(QUARTER_TURNS)[:, None] - k) % QUARTER_TURNS
    corrected = features[source, np.arange(n)[None, :]]
    return Simulated(_softmax(corrected @ head[0] + head[1]), k > 0)


def choose_threshold(
    features: np.ndarray,
    cues: np.ndarray,
    labels: np.ndarray,
    kernel: np.ndarray,
    bias: np.ndarray,
    head: tuple[np.ndarray, np.ndarray],
    candidates: np.ndarray | None = None,
) -> tuple[float, list[dict]]:
    """The threshold with the best mean accuracy over the four turns (ties: upright accuracy,
    then the higher threshold, i.e. fewer second passes).

    Args:
        features: float ``(4, n, D)`` validation pooled features.
        cues: float ``(4, n, D')`` their orientation cues.
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
        s = simulate(features, cues, kernel, bias, head, float(t))
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
