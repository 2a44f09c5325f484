"""The serving graph: uint8 images in, probabilities and labels out (docs/CONTRACTS.md §2).

The Keras model already contains the MobileNetV2 scaling, so the signature only casts the uint8
pixels to float32 (0..255) and runs it. ``classes`` repeats the labels once per input row
(batch-major, ``[batch, num_classes]``): TF Serving's batching splits every output along dimension
0, so a per-model constant would be lost, and a tiled one travels with each response.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import keras
import tensorflow as tf

SIGNATURE_NAME: Final = "serving_default"
"""TF Serving's default signature key (``tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY``)."""
INPUT_NAME: Final = "images"
PROBABILITIES: Final = "probabilities"
CLASSES: Final = "classes"


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
    """A ``tf.Module`` holding the Keras model, its labels and the serving function.

    Args:
        model: Keras classifier: float32 input ``(None, H, W, 3)`` in 0..255, softmax output
            ``(None, C)``.
        labels: the ``C`` class names in class-id order.

    Raises:
        ValueError: the label count differs from the model's output width.
    """

    def __init__(self, model: keras.Model, labels: list[str]) -> None:
        super().__init__(name="fashion_serving")
        height, width = input_size(model)
        if len(labels) != num_outputs(model):
            raise ValueError(f"{len(labels)} labels for a model with {num_outputs(model)} outputs")
        self.model = model
        self.labels = tf.constant(labels, dtype=tf.string)
        spec = tf.TensorSpec([None, height, width, 3], tf.uint8, name=INPUT_NAME)
        self.serve = tf.function(self._serve, input_signature=[spec])

    def _serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = self.model(tf.cast(images, tf.float32), training=False)
        probabilities = tf.cast(probabilities, tf.float32)
        classes = tf.tile(self.labels[tf.newaxis, :], [tf.shape(images)[0], 1])
        return {PROBABILITIES: probabilities, CLASSES: classes}


def save(model: keras.Model, labels: list[str], directory: Path) -> None:
    """Write the SavedModel (``saved_model.pb``, ``variables/``) with the serving signature.

    Args:
        model: the Keras classifier (see :class:`ServingModule`).
        labels: class names in class-id order.
        directory: an empty or missing folder to write into.

    Raises:
        ValueError: the model or labels do not fit the contract.
    """
    module = ServingModule(model, labels)
    tf.saved_model.save(module, str(directory), signatures={SIGNATURE_NAME: module.serve})
