"""``python -m bench.ceiling VERSION_DIR PHOTO...``: the machine's CPU ceiling for the nightly job.

Prints one JSON object: CPU seconds (user + system of this process, ``os.times``) per image of
``preprocessing.decode`` and of the model at batch 32, and the ceiling
``cpu_count / (decode + model)`` in images/s: no job can classify faster on this machine, whatever
its design. TensorFlow runs with the model server's thread settings (``--threads INTRA INTER``),
so idle-thread spinning is not counted as work.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

import preprocessing
from serving_api.memory import keep_large_buffers_on_heap


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def measure(version_dir: Path, photos: list[Path], threads: tuple[int, int]) -> dict:
    """CPU seconds per image of decoding and of the model at batch 32.

    Args:
        version_dir: SavedModel version folder.
        photos: real photos (at least 32).
        threads: TensorFlow ``(intra_op, inter_op)``.

    Returns:
        ``{"decode_cpu_ms_per_image", "model_cpu_ms_per_image_b32", "cores",
        "ceiling_images_per_s"}``.
    """
    import tensorflow as tf

    from bench.floor import SignatureRunner

    tf.config.threading.set_intra_op_parallelism_threads(threads[0])
    tf.config.threading.set_inter_op_parallelism_threads(threads[1])
    runner = SignatureRunner(version_dir)
    files = [p.read_bytes() for p in photos]
    start = _cpu()
    images = [preprocessing.decode(data, runner.size) for data in files]
    decode = (_cpu() - start) / len(files)
    batches = [np.stack(images[i : i + 32]) for i in range(0, len(images) - 31, 32)]
    runner(batches[0])  # warm the batch shape
    start = _cpu()
    for batch in batches:
        runner(batch)
    model = (_cpu() - start) / (32 * len(batches))
    cores = os.cpu_count() or 1
    return {
        "decode_cpu_ms_per_image": round(decode * 1000, 3),
        "model_cpu_ms_per_image_b32": round(model * 1000, 3),
        "cores": cores,
        "ceiling_images_per_s": round(cores / (decode + model), 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure and print the JSON line; returns 0."""
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__)
    parser.add_argument("version_dir", type=Path)
    parser.add_argument("photos", type=Path, nargs="+")
    parser.add_argument("--threads", type=int, nargs=2, default=(1, 2))
    args = parser.parse_args(argv)
    keep_large_buffers_on_heap()
    print(json.dumps(measure(args.version_dir, args.photos, tuple(args.threads))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
