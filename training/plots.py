"""PNG plots of the evaluation (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402


def confusion_matrix_png(metrics: dict, path: Path) -> None:
    """Draws the confusion matrix (rows true, columns predicted) with counts in the cells.

    Args:
        metrics: a ``metrics.json`` dict (``labels``, ``confusion_matrix``, ``accuracy``,
            ``split``).
        path: output PNG file.
    """
    matrix = np.asarray(metrics["confusion_matrix"])
    labels = metrics["labels"]
    fig, ax = plt.subplots(figsize=(8, 7), dpi=100)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(
        f"{metrics['split']} split: accuracy {metrics['accuracy']:.3f}, {int(matrix.sum())} images"
    )
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(value),
            ha="center",
            va="center",
            color="white" if value > threshold else "black",
        )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def training_curves_png(history: dict, path: Path) -> None:
    """Draws loss and accuracy per epoch, train and validation, both phases end to end.

    Args:
        history: a ``history.json`` dict: phase name -> {"loss", "accuracy", "val_loss",
            "val_accuracy": [float per epoch]}.
        path: output PNG file.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    offset = 0
    for phase, h in history.items():
        epochs = np.arange(offset + 1, offset + len(h["loss"]) + 1)
        for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
            ax.plot(epochs, h[key], marker=".", label=f"{phase} train")
            ax.plot(epochs, h[f"val_{key}"], marker=".", label=f"{phase} validation")
        offset += len(h["loss"])
        if phase != list(history)[-1]:
            for ax in axes:
                ax.axvline(offset + 0.5, color="grey", linestyle=":")
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
