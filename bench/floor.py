"""Stages 1 and 2: the model alone, and decode + preprocess + model, in this process.

These are the floors every other layer is compared with. TensorFlow is imported here (and only here
in the benchmark); its own SavedModel loader calls the same ``serving_default`` signature the model
server serves.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np

import preprocessing
from bench.stats import latency_summary, time_calls
from contract import OUTPUT_PROBABILITIES, SIGNATURE_NAME


class SignatureRunner:
    """The ``serving_default`` signature of one SavedModel version, loaded in-process.

    Args:
        version_dir: a version folder, e.g. ``models/fashion/1``.

    Attributes:
        input_name: the signature's single input key (read from the signature, not assumed).
        size: ``(height, width)`` of the input images.
    """

    def __init__(self, version_dir: Path) -> None:
        import tensorflow as tf

        self._tf = tf
        self._loaded = tf.saved_model.load(str(version_dir))
        self._fn = self._loaded.signatures[SIGNATURE_NAME]
        _, kwargs = self._fn.structured_input_signature
        ((self.input_name, spec),) = kwargs.items()
        self.size = (int(spec.shape[1]), int(spec.shape[2]))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on a uint8 batch ``[n, H, W, 3]``; returns probabilities ``[n, C]``."""
        out = self._fn(**{self.input_name: self._tf.constant(batch)})
        return out[OUTPUT_PROBABILITIES].numpy()


def model_only(runner: SignatureRunner, images: np.ndarray, repeats: int) -> dict:
    """Stage 1: batch-1 latency and batch-32 throughput of the bare signature.

    Args:
        runner: the loaded signature.
        images: preprocessed uint8 images ``[n, H, W, 3]``, n >= 32.
        repeats: batch-1 calls to time.

    Returns:
        ``{"batch1": latency summary, "batch32_images_per_s": float}``.
    """
    singles = itertools.cycle(range(len(images)))
    batch1 = time_calls(lambda: runner(images[next(singles)][None]), repeats)
    batch32 = images[:32]
    runs = max(3, repeats // 10)
    durations = time_calls(lambda: runner(batch32), runs)
    return {
        "batch1": latency_summary(batch1),
        "batch32_images_per_s": round(32 * runs / sum(durations), 1),
    }


def preprocessing_latency(files: list[bytes], size: tuple[int, int]) -> dict:
    """Latency of one ``preprocessing.decode`` per file (the gateway's decode step)."""
    durations = []
    for data in files:
        start = time.perf_counter()
        preprocessing.decode(data, size)
        durations.append(time.perf_counter() - start)
    return latency_summary(durations)


def pipeline(runner: SignatureRunner, files: list[bytes], batch_size: int = 32) -> dict:
    """Stage 2: decode + preprocess + model in one process, ``batch_size`` images per call.

    Returns:
        ``{"images": n, "seconds": s, "images_per_s": n / s}``.
    """
    runner(np.zeros((batch_size, *runner.size, 3), np.uint8))  # warm the batch shape
    start = time.perf_counter()
    for i in range(0, len(files), batch_size):
        batch = np.stack([preprocessing.decode(d, runner.size) for d in files[i : i + batch_size]])
        runner(batch)
    seconds = time.perf_counter() - start
    return {
        "images": len(files),
        "seconds": round(seconds, 3),
        "images_per_s": round(len(files) / seconds, 1),
    }
