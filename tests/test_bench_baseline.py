"""The benchmark's rival is a fair one: on real photos it answers what the product answers.

The in-process Flask + TensorFlow app (``bench.baseline_app`` under gunicorn, 1 worker x 8 threads)
and the product (model server + gateway, as ``make serve`` starts them) serve the committed model
``latest``; every test photo of four classes gets the same top label from both, with confidences
equal to 4 decimals (same SavedModel, same decoding).
"""

from __future__ import annotations

import itertools
from contextlib import ExitStack

import pytest
import requests
from conftest import DATA_DIR, ROOT

from bench import processes
from bench.__main__ import _latest_version
from bench.side_by_side import THREADS

pytestmark = pytest.mark.e2e


def _photos(per_class: int = 4):
    test = DATA_DIR / "test"
    return list(
        itertools.chain.from_iterable(
            sorted(folder.glob("*.jpg"))[:per_class] for folder in sorted(test.iterdir())
        )
    )


def test_baseline_answers_the_products_labels_on_real_photos(tmp_path):
    photos = _photos()
    assert len(photos) >= 30  # 10 classes x 4
    first = photos[0].read_bytes()
    with ExitStack() as stack:
        _, gateway, product_start = processes.start_product(
            stack, {"CACHE_SIZE": "0"}, first, tmp_path
        )
        baseline, baseline_start = processes.start_baseline(
            stack, _latest_version(ROOT / "models/fashion"), THREADS, first, tmp_path
        )
        assert product_start > 0 and baseline_start > 0
        for photo in photos:
            files = {"image": (photo.name, photo.read_bytes(), "image/jpeg")}
            ours = requests.post(f"{gateway.url}/predict", files=files, timeout=30)
            theirs = requests.post(f"{baseline.url}/predict", files=files, timeout=30)
            assert ours.status_code == theirs.status_code == 200, (ours.text, theirs.text)
            best = ours.json()["prediction"]["top_k"][0]
            rival = theirs.json()["prediction"]
            assert rival["label"] == best["label"], photo
            assert rival["confidence"] == pytest.approx(best["probability"], abs=1e-4), photo
        batch = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in photos[:8]]
        theirs = requests.post(f"{baseline.url}/predict_batch", files=batch, timeout=60)
        ours = requests.post(f"{gateway.url}/predict_batch", files=batch, timeout=60)
        assert [row["label"] for row in theirs.json()["predictions"]] == [
            row["top_k"][0]["label"] for row in ours.json()["predictions"]
        ]
        bad = requests.post(
            f"{baseline.url}/predict", files={"image": ("x.jpg", b"not a jpeg")}, timeout=30
        )
        assert bad.status_code == 400
        memory = processes.tree_memory_mb([baseline.pid])
        assert memory["rss"] > 100  # TensorFlow is in there
        assert 100 < memory["pss"] <= memory["rss"]
