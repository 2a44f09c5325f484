"""``python -m export`` publishes a model with the orientation step, unchanged.

The tiny oriented model (tests/support/oriented_model.py) is exported in a child process through
the project's command; the SavedModel's ``serving_default`` then answers a photo turned 90, 180
or 270 degrees (uint8 pixels) exactly as the upright photo.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from support.oriented_model import LABELS, photos

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def test_export_serves_turned_photos_with_the_upright_answer(tmp_path):
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
        "from support.oriented_model import write_oriented;"
        "write_oriented(Path(sys.argv[2]))"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    run = {"check": True, "capture_output": True, "text": True, "env": env, "timeout": 300}
    subprocess.run([sys.executable, "-c", code, str(ROOT / "tests"), str(tmp_path)], **run)
    base = tmp_path / "fashion"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "export",
            "--model",
            str(tmp_path / "model.keras"),
            "--labels",
            str(tmp_path / "labels.txt"),
            "--artifacts",
            str(tmp_path),
            "--base-path",
            str(base),
            "--version",
            "1",
        ],
        cwd=ROOT,
        **run,
    )
    serve = tf.saved_model.load(str(base / "1")).signatures["serving_default"]
    upright = photos().astype(np.uint8)
    expected = serve(images=tf.constant(upright))["probabilities"].numpy()
    assert expected.argmax(1).tolist() == [0, 1]
    for k in (1, 2, 3):
        turned = np.ascontiguousarray(np.rot90(upright, k, axes=(1, 2)))
        out = serve(images=tf.constant(turned))
        np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-6)
        assert out["classes"].numpy()[0].astype(str).tolist() == LABELS
