"""Drift statistics, verdicts and thresholds (batch/drift.py), the metrics textfile
(batch/metrics_textfile.py) and the alerting rules over it (batch/schedule/fashion-batch.rules.yml),
both checked by the real ``promtool``, and the model card's extra-label count. No services."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import chi2_contingency
from support import drift_simulation

from batch import drift, metrics_textfile

pytestmark = pytest.mark.unit

# Release model v1 on the 372 test photos: filed folder counts at --min-confidence 0.5.
TEST_MIX = {k: sum(v) for k, v in drift_simulation.TEST_SPLIT.items()}
TEST_CONF = tuple(int(x) for x in np.sum(list(drift_simulation.TEST_SPLIT.values()), axis=0))


def night(run_id, mix, conf=TEST_CONF, version=1, predicted=None):
    return drift.Night(run_id, version, dict(mix), dict(predicted or mix), tuple(conf))


def scaled(mix, factor):
    return {k: round(v * factor) for k, v in mix.items()}


def test_psi_of_known_shares():
    assert drift.psi([50, 50], [50, 50]) == 0.0
    # (0.6-0.5) ln(0.6/0.5) + (0.4-0.5) ln(0.4/0.5)
    assert drift.psi([60, 40], [50, 50]) == pytest.approx(0.1 * math.log(1.2) - 0.1 * math.log(0.8))
    assert drift.psi([30, 20], [500, 500]) == pytest.approx(drift.psi([60, 40], [50, 50]))
    # a category absent tonight is floored at 1e-4, not infinite
    assert drift.psi([0, 100], [50, 50]) == pytest.approx(
        (1e-4 - 0.5) * math.log(1e-4 / 0.5) + 0.5 * math.log(2)
    )
    with pytest.raises(ValueError):
        drift.psi([1, 2], [1, 2, 3])


def test_homogeneity_p_is_scipys_on_dense_tables_and_pools_sparse_cells():
    a, e = [30, 40, 30], [100, 100, 100]
    assert drift.homogeneity_p(a, e) == pytest.approx(
        chi2_contingency(np.array([a, e]), correction=False).pvalue
    )
    # two tiny cells (tonight expects < 5 in each) are pooled into one before the test
    a, e = [50, 48, 1, 1], [500, 480, 3, 2]
    pooled = chi2_contingency(np.array([[50, 48], [500, 480]]), correction=False).pvalue
    assert drift.homogeneity_p(a, e) == pytest.approx(pooled)
    assert drift.homogeneity_p([5], [10]) == 1.0
    # a night of only a rare category: the whole night sits in the pooled cell, which is kept
    rare = chi2_contingency(np.array([[25, 0], [26, 315]]), correction=False).pvalue
    assert 0 < rare < 1e-20
    assert drift.homogeneity_p([25, 0], [26, 315]) == pytest.approx(rare)
    # a pooled cell tonight expects under one photo in is left out
    a, e = [30, 30, 0], [300, 300, 5]
    two = chi2_contingency(np.array([[30, 30], [300, 300]]), correction=False).pvalue
    assert drift.homogeneity_p(a, e) == pytest.approx(two)


def test_confidence_bins_and_night_from_rows():
    assert drift.confidence_bins([0.1, 0.5, 0.55, 0.97, 1.0]) == (1, 2, 0, 0, 0, 0, 0, 2)
    n = drift.make_night(
        "r1",
        [
            ("category", "hat", 0.9, 1),
            ("uncertain", "shirt", 0.3, 1),
            ("quarantine", None, None, None),
            ("category", "hat", 0.99, 1),
        ],
    )
    assert n.mix == {"hat": 2, "_uncertain": 1}
    assert n.predicted == {"hat": 2, "shirt": 1}
    assert n.photos == 3 and n.model_version == 1
    assert n.confidence == (1, 0, 0, 0, 0, 0, 1, 1)


def test_same_mix_is_ok_and_shoes_only_is_drift():
    earlier = [night("r2", scaled(TEST_MIX, 0.2)), night("r1", scaled(TEST_MIX, 0.2))]
    same = drift.assess(night("r3", scaled(TEST_MIX, 0.2)), earlier)
    assert same["status"] == "ok", same
    assert same["category_mix"]["psi"] == 0.0 and same["flagged"] == []
    assert same["baseline"] == {"nights": 2, "photos": 150, "run_ids": ["r2", "r1"]}

    shoes = drift.assess(night("r3", {"shoes": 25}, conf=(0, 0, 0, 2, 3, 5, 8, 7)), earlier)
    assert shoes["status"] == "drift"
    assert shoes["category_mix"]["flagged"] is True
    assert shoes["category_mix"]["p_value"] < 1e-6 and shoes["category_mix"]["psi"] > 1
    assert "category_mix" in shoes["flagged"]


def test_insufficient_data_below_minimum_photos_or_nights():
    two = [night("r2", scaled(TEST_MIX, 0.2)), night("r1", scaled(TEST_MIX, 0.2))]
    small = drift.assess(night("r3", {"shoes": 19}), two)
    assert small["status"] == "insufficient_data"
    assert small["reason"] == "19 photos tonight (< 20)"
    assert small["category_mix"]["flagged"] is False  # computed, never flagged
    one = drift.assess(night("r2", {"shoes": 40}), two[1:])
    assert one["status"] == "insufficient_data"
    assert one["reason"] == "1 comparable earlier nights (< 2)"
    first = drift.assess(night("r1", TEST_MIX), [])
    assert first["status"] == "insufficient_data" and first["category_mix"] is None
    # nights without predictions are not nights of the baseline
    empty = drift.Night("r0", None)
    assert drift.assess(night("r3", TEST_MIX), [empty, *two])["baseline"]["nights"] == 2


def test_model_version_change_starts_a_new_baseline():
    v1 = [night(f"r{i}", scaled(TEST_MIX, 0.2), version=1) for i in (3, 2, 1)]
    changed = drift.assess(night("r4", {"shoes": 40}, version=2), v1)
    assert changed["status"] == "new_baseline"
    assert changed["reason"] == "model version 1 -> 2: this night starts a new baseline"
    assert changed["baseline"]["nights"] == 0
    # the next version-2 night sees one version-2 night only
    after = drift.assess(night("r5", TEST_MIX, version=2), [night("r4", TEST_MIX, version=2), *v1])
    assert after["status"] == "insufficient_data" and after["baseline"]["run_ids"] == ["r4"]


def test_model_card_validation_mix_is_reported_not_flagged():
    card = {
        "dataset": {"splits": {"validation": {"shoes": 26, "hat": 14, "t-shirt": 81}}},
        "metrics": {"accuracy": 0.906},
    }
    earlier = [night("r2", scaled(TEST_MIX, 0.2)), night("r1", scaled(TEST_MIX, 0.2))]
    result = drift.assess(night("r3", scaled(TEST_MIX, 0.2)), earlier, model_card=card)
    assert result["status"] == "ok"
    cmp = result["model_card"]
    assert cmp["test_accuracy"] == 0.906
    assert cmp["validation_mix_psi"] > 1  # 10 predicted labels vs 3 in this card
    assert cmp["validation_mix_p_value"] < 1e-6
    assert "flagged" not in cmp


def test_committed_thresholds_flag_at_most_one_percent_of_same_mix_nights():
    """A smaller run of tests/support/drift_simulation.py (the full run chose alpha 0.002)."""
    assert drift.THRESHOLDS.alpha == 0.002 and drift.THRESHOLDS.psi_min == 0.1
    result = drift_simulation.simulate(
        reps=400, seed=7, sizes=(20, 40, 100), baselines=(2, 14), alphas=(0.002,)
    )
    rates = [cell["rates"]["0.002"] for cell in result["same_mix"]]
    assert len(rates) == 6 and max(rates) <= 0.01, result["same_mix"]
    assert result["power_at_chosen_alpha_2_night_baseline"]["shoes_only_20_photos"] == 1.0


SUMMARY = {
    "run_id": "20261202T020000Z-abcdef",
    "files": 42,
    "counts_by_status": {"filed": 30, "uncertain": 8, "quarantined": 4},
    "counts_by_category": {"hat": 10, "shoes": 20, "_uncertain": 8},
    "uncertain_by_reason": {"low_confidence": 6, "not_a_known_category": 2},
    "duration_seconds": 3.5,
    "images_per_second": 11.0,
    "model_versions": [1],
    "drift": {
        "status": "drift",
        "model_version": 1,
        "category_mix": {"psi": 1.25, "p_value": 1e-9, "flagged": True},
        "confidence": {"psi": 0.05, "p_value": 0.4, "flagged": False},
    },
}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="Debian package prometheus")
def test_metrics_textfile_passes_promtool(tmp_path):
    path = metrics_textfile.write(
        tmp_path / "textfile" / "fashion_batch.prom",
        started=1764640800.0,
        ended=1764640803.5,
        exit_code=1,
        summary=SUMMARY,
        last_success_at=1764640803.5,
    )
    text = path.read_text()
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert [p.name for p in path.parent.iterdir()] == ["fashion_batch.prom"]  # no temp left
    lines = set(text.splitlines())
    for line in (
        "fashion_batch_last_success_timestamp_seconds 1.7646408035e+09",
        "fashion_batch_last_run_exit_code 1.0",
        'fashion_batch_last_run_photos{outcome="quarantined"} 4.0',
        'fashion_batch_last_run_photos{outcome="left_in_incoming"} 0.0',
        'fashion_batch_last_run_filed_photos{category="_uncertain"} 8.0',
        'fashion_batch_last_run_uncertain_photos{reason="not_a_known_category"} 2.0',
        'fashion_batch_last_run_drift_flagged{aspect="category_mix"} 1.0',
        'fashion_batch_last_run_drift_psi{aspect="category_mix"} 1.25',
        'fashion_batch_last_run_drift_status{status="drift"} 1.0',
        'fashion_batch_last_run_drift_status{status="ok"} 0.0',
        "fashion_batch_last_run_model_version 1.0",
        "fashion_batch_last_run_duration_seconds 3.5",
    ):
        assert line in lines, line


def test_model_card_records_extra_labels():
    from export import model_card
    from training.extra_labels import training_record

    record = training_record(
        {"extra_labels": {"source": "fb.csv", "rows": 4, "added": 3, "dropped": [{"x": 1}]}}
    )
    assert record == {"added": 3, "dropped": 1, "source": "fb.csv"}
    assert training_record({"data_dir": "/d"}) is None
    run = {"dataset": {"path": "/d", "splits": {"train": {"hat": 5}}, "extra_labels": record}}
    card = model_card.build(
        name="fashion",
        version=3,
        labels=["hat"],
        input_size=(224, 224),
        artifacts=model_card.TrainingArtifacts(run, None, ("metrics.json",)),
        export_info={},
    )
    assert card["dataset"]["extra_labels"] == {"added": 3, "dropped": 1, "source": "fb.csv"}


RULES = Path(__file__).resolve().parents[1] / "batch" / "schedule" / "fashion-batch.rules.yml"


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("promtool") is None, reason="Debian package prometheus")
def test_alert_rules_fire_on_the_textfile_series(tmp_path):
    """The shipped alerting rules, checked and unit-tested by promtool over the job's series."""
    check = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert check.returncode == 0 and "SUCCESS: 4 rules found" in check.stdout, check.stderr
    no_success = {
        "exp_labels": {"severity": "page"},
        "exp_annotations": {
            "summary": "The nightly job has not finished successfully for 1d 3h 0m 0s",
            "description": "Check `journalctl -u fashion-batch.service` and "
            "logs/batch-<run_id>.log.",
        },
    }
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # last success at t = 0, never again; a drift verdict from 10 min on
                    {"series": "fashion_batch_last_success_timestamp_seconds", "values": "0x1700"},
                    {
                        "series": 'fashion_batch_last_run_drift_status{status="drift"}',
                        "values": "0x9 1x20",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "25h",
                        "alertname": "FashionBatchNoRecentSuccess",
                        "exp_alerts": [],
                    },
                    {
                        "eval_time": "27h",
                        "alertname": "FashionBatchNoRecentSuccess",
                        "exp_alerts": [no_success],
                    },
                    {"eval_time": "5m", "alertname": "FashionBatchDrift", "exp_alerts": []},
                    {
                        "eval_time": "15m",
                        "alertname": "FashionBatchDrift",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "ticket", "status": "drift"},
                                "exp_annotations": {
                                    "summary": "Tonight's photos drifted from the trailing nights",
                                    "description": "See results/batch_results/index.html and the "
                                    "run's report.html (Drift section).",
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "rules_test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run(
        ["promtool", "test", "rules", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
