"""The benchmark keeps working: `python -m bench --quick` on the committed model and real photos.

Figures from a quick run mean nothing (few images, a loaded CI machine); this asserts only that
every stage ran, answered without errors and reported the figures the README table is built from.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

from conftest import ROOT


def test_quick_benchmark_reports_every_stage(tmp_path):
    out = tmp_path / "latest.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    stages = report["stages"]
    assert report["quick"] is True
    assert report["photos"] == 64
    assert stages["model_only"]["batch1"]["n"] == 20
    assert stages["pipeline"]["images"] == 64
    assert stages["predict"]["concurrency_1"]["errors"] == 0
    assert stages["predict"]["concurrency_8"]["errors"] == 0
    assert stages["predict_batch"]["errors"] == 0
    assert stages["predict_batch"]["images"] == 64
    assert stages["nightly"]["images"] == 64
    assert stages["nightly"]["exit_code"] in (0, 1)
    assert stages["gateway_process"]["tensorflow_runtime_loaded"] is False
    ratios = dict(report["ratios"])
    vs_inprocess = ratios.pop("vs_inprocess")
    assert set(ratios) == {
        "predict_p50_over_floor",
        "predict_batch_over_pipeline",
        "nightly_over_pipeline",
        "grpc_batch1_over_model",
        "grpc_batch32_over_model",
    }
    assert all(value > 0 and math.isfinite(value) for value in ratios.values())
    assert "ratio predict_p50_over_floor" in result.stdout

    # Issue 12: the product against the in-process Flask + TensorFlow design, every goal's ratio.
    goals = {
        "predict_p50_c1",
        "throughput_c8",
        "predict_batch",
        "nightly_over_seed_client",
        "memory",
        "start",
        "nightly_cpu_ceiling_fraction",
    }
    assert goals <= set(vs_inprocess)
    assert set(report["goals"]["vs_inprocess"]) == goals
    assert all(value > 0 and math.isfinite(value) for value in vs_inprocess.values())
    side = stages["side_by_side"]
    for name in ("product", "baseline"):
        assert side[name]["errors"] == 0
        assert side[name]["predict_c1"]["n"] == 20
        assert side[name]["phone_predict_c1"]["n"] >= 4
        assert side[name]["rss_mb_all_processes"] > 100
        # PSS counts shared pages once: never more than RSS, and TensorFlow is still in there
        assert 100 < side[name]["pss_mb_all_processes"] <= side[name]["rss_mb_all_processes"]
    assert side["nightly"][0]["images"] == side["seed_client"][0]["images"] == 64
    assert side["seed_client"][0]["errors"] == 0
    assert side["ceiling"]["ceiling_images_per_s"] > 0
    assert "vs in-process: /predict p50 c=1" in result.stdout
