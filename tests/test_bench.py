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
    assert set(report["ratios"]) == {
        "predict_p50_over_floor",
        "predict_batch_over_pipeline",
        "nightly_over_pipeline",
        "grpc_batch1_over_model",
        "grpc_batch32_over_model",
    }
    assert all(value > 0 and math.isfinite(value) for value in report["ratios"].values())
    assert "ratio predict_p50_over_floor" in result.stdout
