"""The classifier: ImageNet MobileNetV2 feature extractor plus a new softmax head.

Input: float32 ``(batch, S, S, 3)`` RGB pixels in 0..255 (the uint8 output of
:func:`preprocessing.decode`, cast). The MobileNetV2 scaling ``x / 127.5 - 1`` (the rule of
``keras.applications.mobilenet_v2.preprocess_input``) is the model's first layer, so the exported
graph owns it. Output: softmax probabilities ``(batch, num_classes)`` float32.
"""

from __future__ import annotations

import keras

BASE_NAME = "mobilenetv2_base"
"""Name of the nested feature-extractor model inside the classifier."""


def build_base(alpha: float, input_size: int, weights: str) -> keras.Model:
    """Builds the MobileNetV2 feature extractor and loads its ImageNet weights.

    The shared ``.h5`` files were written by Keras 2.1.6 and load by layer order, so the base is
    built without weights with the same ``alpha`` and ``load_weights`` is called on it alone
    (``/work/shared/README.md``). MobileNetV2 is fully convolutional: the 224 weights fit any
    input size.

    Args:
        alpha: width multiplier (0.35, 0.5, 0.75, 1.0, ...), must match the weights.
        input_size: square input side in pixels.
        weights: path of a no-top ``.h5`` file, or ``"imagenet"`` (Keras downloads it).

    Returns:
        The base model, ``(batch, S, S, 3)`` in -1..1 to ``(batch, s, s, channels)``.

    Raises:
        FileNotFoundError: ``weights`` is a path that does not exist.
    """
    shape = (input_size, input_size, 3)
    if weights == "imagenet":
        base = keras.applications.MobileNetV2(
            input_shape=shape, alpha=alpha, include_top=False, weights="imagenet"
        )
    else:
        import os

        if not os.path.isfile(weights):
            raise FileNotFoundError(f"MobileNetV2 weights not found: {weights}")
        base = keras.applications.MobileNetV2(
            input_shape=shape, alpha=alpha, include_top=False, weights=None
        )
        base.load_weights(weights)
    base.name = BASE_NAME
    return base


def build_classifier(base: keras.Model, num_classes: int, dropout: float) -> keras.Model:
    """Wraps the base: rescaling, base in inference mode, pooling, dropout, softmax.

    The base is called with ``training=False`` so its BatchNorm layers keep their ImageNet
    statistics in both phases, even when unfrozen.

    Args:
        base: from :func:`build_base`.
        num_classes: number of output classes.
        dropout: dropout rate before the dense layer.

    Returns:
        ``keras.Model``: float32 ``(batch, S, S, 3)`` 0..255 to float32 ``(batch, num_classes)``
        softmax.
    """
    inputs = keras.Input(shape=base.input_shape[1:], dtype="float32", name="pixels")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="mobilenet_v2_scaling")(inputs)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="fashion_mobilenetv2")


def freeze_base(base: keras.Model) -> None:
    """Phase 1: freezes the whole base.

    Args:
        base: the feature extractor.
    """
    base.trainable = False


def unfreeze_top(base: keras.Model, n_layers: int) -> int:
    """Phase 2: unfreezes the last ``n_layers`` layers of the base, keeping BatchNorm frozen.

    Args:
        base: the feature extractor.
        n_layers: layers counted from the end of ``base.layers``; ``<= 0`` unfreezes none.

    Returns:
        How many layers with weights became trainable.
    """
    base.trainable = True
    cut = len(base.layers) - max(n_layers, 0)
    trainable = 0
    for i, layer in enumerate(base.layers):
        thaw = i >= cut and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = thaw
        trainable += int(thaw and bool(layer.weights))
    return trainable
