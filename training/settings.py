"""Typed training settings: defaults, overridden by environment variables, then by CLI flags.

Environment variables (all optional):
    FASHION_DATA_DIR: the image folder ``prepare`` reads (default ``../shared/data/
        clothing-dataset-small`` relative to the repository root).
    FASHION_ARTIFACTS_DIR: where every training output goes (default ``artifacts``).
    FASHION_WEIGHTS_DIR: the folder of the ImageNet MobileNetV2 ``.h5`` files (default
        ``../shared/weights`` relative to the repository root).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The repository root (the folder holding ``training/``)."""

SPLITS = ("train", "validation", "test")
"""The three data splits, in manifest order."""

WEIGHTS_TEMPLATE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_224_no_top.h5"
"""File name of the Keras Applications ImageNet weights for a given alpha (no classifier top)."""


def default_data_dir() -> Path:
    """Returns ``$FASHION_DATA_DIR`` or ``../shared/data/clothing-dataset-small``."""
    env = os.environ.get("FASHION_DATA_DIR")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "data" / "clothing-dataset-small"


def default_artifacts_dir() -> Path:
    """Returns ``$FASHION_ARTIFACTS_DIR`` or ``artifacts`` (relative to the cwd)."""
    return Path(os.environ.get("FASHION_ARTIFACTS_DIR", "artifacts"))


def default_weights_dir() -> Path:
    """Returns the weights folder: ``$FASHION_WEIGHTS_DIR`` or ``../shared/weights``."""
    env = os.environ.get("FASHION_WEIGHTS_DIR")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "weights"


def alpha_text(alpha: float) -> str:
    """Formats a MobileNetV2 width multiplier the way the Keras weight file names do.

    Args:
        alpha: width multiplier, e.g. ``0.5`` or ``0.35`` or ``1.0``.

    Returns:
        ``"0.5"``, ``"0.35"``, ``"1.0"``: Keras Applications' spelling.
    """
    return f"{alpha:g}" if alpha != int(alpha) else f"{alpha:.1f}"


def default_weights(alpha: float) -> str:
    """Returns the path of the shared ImageNet weights for ``alpha`` (the file may be missing).

    Args:
        alpha: MobileNetV2 width multiplier.

    Returns:
        ``$FASHION_WEIGHTS_DIR/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_<alpha>_224_no_top.h5``.
    """
    return str(default_weights_dir() / WEIGHTS_TEMPLATE.format(alpha=alpha_text(alpha)))


@dataclass(frozen=True)
class SplitConfig:
    """How ``prepare`` splits a folder-per-class set that has no ``train/validation/test`` folders.

    Attributes:
        train: fraction of each class put in ``train`` (0..1).
        validation: fraction of each class put in ``validation``; the rest goes to ``test``.
        seed: seed of the stratified shuffle, so the split is reproducible.
    """

    train: float = 0.70
    validation: float = 0.15
    seed: int = 42


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of the two-phase MobileNetV2 transfer-learning run.

    The defaults are the release model's, chosen on the validation split (best validation loss
    of five runs on clothing-dataset-small): 100 top layers fine-tuned at 2e-4, dropout 0.3,
    zoom 0.25. Input 288 scored lower on validation than 224, so 224 stays.

    Attributes:
        alpha: MobileNetV2 width multiplier (must match the weights file).
        input_size: square model input side in pixels; images are decoded to this size.
        weights: path of the no-top ``.h5`` weights, or ``"imagenet"`` to let Keras download.
        head_epochs: maximum epochs of phase 1 (frozen base, new head trained).
        finetune_epochs: maximum epochs of phase 2 (top of the base unfrozen); 0 skips it.
        batch_size: images per step.
        head_learning_rate: Adam learning rate of phase 1.
        finetune_learning_rate: Adam learning rate of phase 2 (cosine-decayed to 0 over the phase).
        finetune_layers: how many of the base's last layers are unfrozen in phase 2 (BatchNorm
            layers among them stay frozen and in inference mode).
        dropout: dropout rate before the classifier.
        label_smoothing: label smoothing of the categorical cross-entropy (0..1).
        zoom: maximum random zoom (crop) fraction of the training augmentation.
        translate: maximum random shift, as a fraction of the side, of the training augmentation.
        patience: early-stopping patience in epochs (on validation loss, best weights restored).
        class_weights: weight classes inversely to their frequency in the training split.
        turn_probability: chance that a training image is turned by 90, 180 or 270 degrees
            (pixels), so turned photos get the upright answer; 0 = never.
        validate_turned: early stopping reads each validation photo upright and once turned by
            a seeded random quarter turn.
        orientation_head: after training, fit an orientation step (a 4-way head on the pooled
            features; photos it calls turned are turned back for a second backbone pass) and
            save the model with it (:mod:`training.orientation`).
        target_precision: share of filed photos that must be right on the calibration split
            when the abstain rule's thresholds are fitted.
        max_off_category_filed: most share of the calibration split's off-category photos the
            rule may file (None = the precision target alone decides).
        seed: seed of every random generator (Python, NumPy, TensorFlow, Keras).
    """

    alpha: float = 0.5
    input_size: int = 224
    weights: str = ""
    head_epochs: int = 10
    finetune_epochs: int = 20
    batch_size: int = 32
    head_learning_rate: float = 1e-3
    finetune_learning_rate: float = 2e-4
    finetune_layers: int = 100
    dropout: float = 0.3
    label_smoothing: float = 0.1
    zoom: float = 0.25
    translate: float = 0.1
    patience: int = 4
    class_weights: bool = True
    turn_probability: float = 0.0
    validate_turned: bool = False
    orientation_head: bool = False
    target_precision: float = 0.97
    max_off_category_filed: float | None = None
    seed: int = 42

    def resolved_weights(self) -> str:
        """Returns ``weights``, or the shared weights file of ``alpha`` if ``weights`` is empty."""
        return self.weights or default_weights(self.alpha)

    def hyperparameters(self) -> dict[str, Any]:
        """Returns every field as a JSON-ready dict (recorded in ``training_run.json``)."""
        values = asdict(self)
        values["weights"] = self.resolved_weights()
        return values
