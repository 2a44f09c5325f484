"""The serving graph: uint8 images in, probabilities and labels out (docs/CONTRACTS.md §2).

The Keras model already contains the MobileNetV2 scaling, so the signature only casts the uint8
pixels to float32 (0..255) and runs it. ``classes`` repeats the labels once per input row
(batch-major, ``[batch, num_classes]``): TF Serving's batching splits every output along dimension
0, so a per-model constant would be lost, and a tiled one travels with each response.

With an abstain rule (``export/rule.py``) the graph also calibrates: ``z = log(p + 1e-12) / T``,
the label columns of ``softmax(z)`` renormalised become ``probabilities``, their sum is
``known_probability``, and ``abstain`` / ``abstain_reason`` say whether the version files the
photo. The NumPy reference of the same computation is ``training.calibration.apply_rule``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import keras
import tensorflow as tf

from contract import (
    ABSTAIN_REASON_LOW_CONFIDENCE,
    ABSTAIN_REASON_NOT_A_KNOWN_CATEGORY,
    INPUT_IMAGES,
    OUTPUT_ABSTAIN,
    OUTPUT_ABSTAIN_REASON,
    OUTPUT_CLASSES,
    OUTPUT_KNOWN_PROBABILITY,
    OUTPUT_PROBABILITIES,
    SIGNATURE_NAME,
)
from export.rule import AbstainRule

LOG_EPSILON: Final = 1e-12
"""Added to the softmax before the log (the rule's contract; ``training.calibration.EPSILON``)."""


def input_size(model: keras.Model) -> tuple[int, int]:
    """The ``(height, width)`` a Keras image model takes.

    Args:
        model: a model with one input of shape ``(None, H, W, 3)``.

    Returns:
        ``(H, W)`` in pixels.

    Raises:
        ValueError: the input is not a fixed-size 3-channel image batch.
    """
    shape = tuple(model.inputs[0].shape) if len(model.inputs) == 1 else ()
    if len(shape) != 4 or shape[3] != 3 or not all(isinstance(d, int) for d in shape[1:3]):
        raise ValueError(f"expected one input of shape (None, H, W, 3), got {shape or 'several'}")
    return int(shape[1]), int(shape[2])


def num_outputs(model: keras.Model) -> int:
    """The number of classes a Keras classifier outputs.

    Args:
        model: a model with one output of shape ``(None, C)``.

    Returns:
        ``C``.

    Raises:
        ValueError: the output is not a ``(None, C)`` tensor.
    """
    shape = tuple(model.outputs[0].shape) if len(model.outputs) == 1 else ()
    if len(shape) != 2 or not isinstance(shape[1], int):
        raise ValueError(f"expected one output of shape (None, C), got {shape or 'several'}")
    return int(shape[1])


class ServingModule(tf.Module):
    """A ``tf.Module`` holding the Keras model, its labels, its rule and the serving function.

    Args:
        model: Keras classifier: float32 input ``(None, H, W, 3)`` in 0..255, softmax output
            ``(None, C)``; ``C = K + 1`` when the rule has an off-category column, else ``K``.
        labels: the ``K`` class names in class-id order.
        rule: the abstain rule, or ``None`` for the plain (version 1) signature.

    Raises:
        ValueError: the label count does not fit the model's output width (and the rule).
    """

    def __init__(
        self, model: keras.Model, labels: list[str], rule: AbstainRule | None = None
    ) -> None:
        super().__init__(name="fashion_serving")
        height, width = input_size(model)
        expected = len(labels) if rule is None else rule.model_width(len(labels))
        if expected != num_outputs(model):
            extra = "" if rule is None else " and the rule's off-category column"
            raise ValueError(
                f"{len(labels)} labels{extra} for a model with {num_outputs(model)} outputs"
            )
        self.model = model
        self.labels = tf.constant(labels, dtype=tf.string)
        spec = tf.TensorSpec([None, height, width, 3], tf.uint8, name=INPUT_IMAGES)
        if rule is None:
            self.serve = tf.function(self._serve, input_signature=[spec])
        else:
            self.rule = rule
            self.label_columns = tf.constant(rule.label_columns(len(labels)), tf.int32)
            self.serve = tf.function(self._serve_with_rule, input_signature=[spec])

    def _raw(self, images: tf.Tensor) -> tf.Tensor:
        probabilities = self.model(tf.cast(images, tf.float32), training=False)
        return tf.cast(probabilities, tf.float32)

    def _classes(self, images: tf.Tensor) -> tf.Tensor:
        return tf.tile(self.labels[tf.newaxis, :], [tf.shape(images)[0], 1])

    def _serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT_PROBABILITIES: self._raw(images), OUTPUT_CLASSES: self._classes(images)}

    def _serve_with_rule(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        rule = self.rule
        z = tf.math.log(self._raw(images) + LOG_EPSILON) / rule.temperature
        if rule.other_class_index is None:
            probabilities = tf.nn.softmax(z)
            known = tf.ones_like(probabilities[:, 0])
        else:
            # softmax over the label columns = those columns of softmax(z) renormalised; their
            # share of the whole, in log space, is the known probability (no 1 - q cancellation).
            z_labels = tf.gather(z, self.label_columns, axis=1)
            probabilities = tf.nn.softmax(z_labels)
            known = tf.exp(tf.reduce_logsumexp(z_labels, 1) - tf.reduce_logsumexp(z, 1))
        confidence = tf.reduce_max(probabilities, axis=1)
        reason = tf.where(confidence < rule.min_confidence, ABSTAIN_REASON_LOW_CONFIDENCE, "")
        if rule.min_known_probability is not None:
            reason = tf.where(
                known < rule.min_known_probability, ABSTAIN_REASON_NOT_A_KNOWN_CATEGORY, reason
            )
        return {
            OUTPUT_PROBABILITIES: probabilities,
            OUTPUT_CLASSES: self._classes(images),
            OUTPUT_KNOWN_PROBABILITY: known,
            OUTPUT_ABSTAIN: tf.not_equal(reason, ""),
            OUTPUT_ABSTAIN_REASON: reason,
        }


def save(
    model: keras.Model, labels: list[str], directory: Path, rule: AbstainRule | None = None
) -> None:
    """Write the SavedModel (``saved_model.pb``, ``variables/``) with the serving signature.

    Args:
        model: the Keras classifier (see :class:`ServingModule`).
        labels: class names in class-id order.
        directory: an empty or missing folder to write into.
        rule: the abstain rule to build into the signature, or ``None``.

    Raises:
        ValueError: the model, labels or rule do not fit the contract.
    """
    module = ServingModule(model, labels, rule)
    tf.saved_model.save(module, str(directory), signatures={SIGNATURE_NAME: module.serve})
