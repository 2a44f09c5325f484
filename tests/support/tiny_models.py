"""Tiny SavedModels that obey docs/CONTRACTS.md section 2, with outputs computable in NumPy.

Signature ``serving_default``: input ``images`` uint8 ``[-1, 8, 8, 3]``; outputs ``probabilities``
float32 ``[-1, K]`` = softmax(mean RGB / 255 @ W + b) and ``classes`` string ``[-1, K]`` (every row
the version's labels). Each version gets its own labels and weights (seeded by the version
number), so a response shows which version answered. :func:`expected` computes the same numbers.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

SIZE = 8
"""Height and width of the tiny models' input, pixels."""


def labels_for(version: int, num_classes: int = 3) -> list[str]:
    """The labels of a tiny version: ``["v<version>-c0", "v<version>-c1", ...]``."""
    return [f"v{version}-c{i}" for i in range(num_classes)]


def weights_for(version: int, num_classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Weights of a tiny version: W float32 (3, K) and b float32 (K,), seeded by the version."""
    rng = np.random.default_rng(version)
    w = rng.normal(0, 4, size=(3, num_classes)).astype(np.float32)
    b = rng.normal(0, 1, size=(num_classes,)).astype(np.float32)
    return w, b


def expected(images: np.ndarray, version: int, num_classes: int = 3) -> np.ndarray:
    """The probabilities a tiny version returns, computed in NumPy (float32 like the graph).

    Args:
        images: uint8 (N, 8, 8, 3).
        version: the version that answers.
        num_classes: K.

    Returns:
        float32 (N, K), rows sum to 1.
    """
    w, b = weights_for(version, num_classes)
    means = images.astype(np.float32).mean(axis=(1, 2)) / np.float32(255.0)
    logits = means @ w + b
    logits = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def images(n: int, seed: int = 0) -> np.ndarray:
    """n random uint8 images (n, 8, 8, 3) (distinct per seed)."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, SIZE, SIZE, 3), dtype=np.uint8)


def write_version(
    base_path: str | os.PathLike[str], version: int, num_classes: int = 3, warmup: bool = False
) -> Path:
    """Export one tiny version to ``<base_path>/<version>/`` with ``tf.saved_model.save``.

    Args:
        base_path: the model's base path (created if needed).
        version: version number (folder name).
        num_classes: K.
        warmup: also write ``assets.extra/tf_serving_warmup_requests`` (batch sizes 1 and 3).

    Returns:
        The version folder. Written under a ``.staging-`` name and renamed, so a server polling
        ``base_path`` never sees it half-written.
    """
    import tensorflow as tf

    w, b = weights_for(version, num_classes)
    labels = labels_for(version, num_classes)

    class Tiny(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(w)
            self.b = tf.Variable(b)
            self.labels = tf.constant(labels)

        @tf.function(
            input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.uint8, name="images")]
        )
        def serve(self, images):
            means = tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2]) / 255.0
            probabilities = tf.nn.softmax(tf.matmul(means, self.w) + self.b)
            classes = tf.tile(self.labels[tf.newaxis, :], [tf.shape(images)[0], 1])
            return {"probabilities": probabilities, "classes": classes}

    module = Tiny()
    base = Path(base_path)
    base.mkdir(parents=True, exist_ok=True)
    staging = base / f".staging-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    tf.saved_model.save(module, str(staging), signatures={"serving_default": module.serve})
    extra = staging / "assets.extra"
    extra.mkdir()
    (extra / "labels.txt").write_text("\n".join(labels) + "\n")
    (extra / "model_card.json").write_text(json.dumps({"version": version, "labels": labels}))
    if warmup:
        _write_warmup(extra / "tf_serving_warmup_requests")
    final = base / str(version)
    os.rename(staging, final)
    return final


def _write_warmup(path: Path) -> None:
    import tensorflow as tf

    from serving_api import protos, tensors

    with tf.io.TFRecordWriter(str(path)) as writer:
        for n in (1, 3):
            log = protos.prediction_log_pb2.PredictionLog()
            request = log.predict_log.request
            request.model_spec.name = "tiny"
            request.inputs["images"].CopyFrom(tensors.to_tensor_proto(images(n, seed=99)))
            writer.write(log.SerializeToString())


def copy_version(source: Path, base_path: str | os.PathLike[str], version: int) -> Path:
    """Publish a copy of an exported version folder under a new version number (atomic rename)."""
    base = Path(base_path)
    staging = base / f".staging-copy-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    final = base / str(version)
    os.rename(staging, final)
    return final


def write_half_written(source: Path, base_path: str | os.PathLike[str], version: int) -> Path:
    """A version folder as an interrupted copy leaves it: ``saved_model.pb`` but no ``variables/``.

    Args:
        source: a complete version folder to take ``saved_model.pb`` from.
        base_path: the model's base path.
        version: the folder name to create.

    Returns:
        The broken folder (complete it with :func:`complete_half_written`).
    """
    folder = Path(base_path) / str(version)
    folder.mkdir(parents=True)
    shutil.copy2(source / "saved_model.pb", folder / "saved_model.pb")
    return folder


def complete_half_written(source: Path, folder: Path) -> None:
    """Finish an interrupted copy: add the missing ``variables/`` and assets from ``source``."""
    for name in ("variables", "assets.extra"):
        if (source / name).exists():
            shutil.copytree(source / name, folder / name)


def export_in_subprocess(
    base_path: str | os.PathLike[str], versions: list[int], warmup: bool = False
) -> None:
    """Run :func:`write_version` for several versions of one model in a child process.

    See :func:`export_many_in_subprocess`.
    """
    export_many_in_subprocess([(base_path, versions)], warmup=warmup)


def export_many_in_subprocess(
    jobs: list[tuple[str | os.PathLike[str], list[int]]], warmup: bool = False
) -> None:
    """Run :func:`write_version` for (base path, versions) jobs in one child process.

    Keeps the TensorFlow runtime out of the test process (the gateway's tests check that it is
    never loaded there) and pays the TensorFlow import once for all jobs.

    Raises:
        subprocess.CalledProcessError: the export failed (its stderr is in the exception).
    """
    import subprocess
    import sys

    args = [sys.executable, __file__]
    args += [f"{base}={','.join(map(str, versions))}" for base, versions in jobs]
    if warmup:
        args.append("--warmup")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1"}
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    subprocess.run(args, check=True, capture_output=True, text=True, env=env, timeout=300)


if __name__ == "__main__":
    import sys

    _warmup = "--warmup" in sys.argv
    for _job in (a for a in sys.argv[1:] if a != "--warmup"):
        _base, _versions = _job.rsplit("=", 1)
        for _version in _versions.split(","):
            write_version(_base, int(_version), warmup=_warmup)
