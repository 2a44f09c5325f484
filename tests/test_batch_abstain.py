"""The nightly job files what the model version abstains on under ``_uncertain/``, with reasons.

Unit part: :func:`batch.decide.decide` on predictions with and without the rule's keys, the
ledger's new columns (also on a ledger written before them), the reports' counts per reason.

Integrated part: one real local model server serves ``fashion`` (tiny version 1 without a rule,
then the tiny off-category model exported with its rule as version 2, tests/support/
abstain_models.py) and ``plain`` (tiny version 1 only); a real gateway per model; the real job.
Solid-colour photos have known answers, so every folder and reason is asserted exactly.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pandas as pd
import pytest
from support import abstain_models as am
from support import tiny_models

from batch import reports
from batch.decide import decide
from batch.ledger import Ledger
from batch.runner import LEDGER_NAME, run
from batch.settings import BatchSettings
from gateway.launcher import GatewayProcess
from serving.launcher import ModelServerProcess

PREDICTION = {
    "label": "shoes",
    "class_id": 6,
    "confidence": 0.62,
    "top_k": [{"label": "shoes", "probability": 0.62}, {"label": "hat", "probability": 0.2}],
}


@pytest.mark.unit
def test_the_versions_rule_decides_by_default():
    filed = decide(
        {**PREDICTION, "abstain": False, "abstain_reason": None, "known_probability": 0.9}
    )
    assert (filed.outcome, filed.category, filed.abstain_reason) == ("category", "shoes", None)
    assert filed.known_probability == 0.9
    for reason in ("not_a_known_category", "low_confidence"):
        unsure = decide({**PREDICTION, "abstain": True, "abstain_reason": reason})
        assert (unsure.outcome, unsure.abstain_reason, unsure.category) == (
            "uncertain",
            reason,
            "shoes",
        )
    # a version that abstains without saying why still abstains
    assert decide({**PREDICTION, "abstain": True}).abstain_reason == "abstain"
    # the rule's decision stands even where a plain 0.5 threshold would say otherwise
    sure = decide({**PREDICTION, "confidence": 0.3, "abstain": False, "known_probability": 1.0})
    assert sure.outcome == "category"


@pytest.mark.unit
def test_min_confidence_replaces_the_rule_and_no_rule_means_half():
    abstained = {**PREDICTION, "abstain": True, "abstain_reason": "not_a_known_category"}
    assert decide(abstained, 0.6).outcome == "category"
    low = decide(abstained, 0.7)
    assert (low.outcome, low.abstain_reason) == ("uncertain", "low_confidence")
    filed = decide({**PREDICTION, "abstain": False}, 0.7)
    assert (filed.outcome, filed.abstain_reason) == ("uncertain", "low_confidence")
    # no rule keys (version 1): top-1 >= 0.5 files
    assert decide(PREDICTION).outcome == "category"
    half = decide({**PREDICTION, "confidence": 0.5})
    assert (half.outcome, half.abstain_reason) == ("category", None)
    below = decide({**PREDICTION, "confidence": 0.4999})
    assert (below.outcome, below.abstain_reason) == ("uncertain", "low_confidence")


@pytest.mark.unit
def test_malformed_rule_keys_are_a_bad_response():
    assert decide({**PREDICTION, "abstain": "yes"}).error_code == "bad_response"
    assert decide({**PREDICTION, "abstain": False, "known_probability": "x"}).outcome == "retry"


@pytest.mark.unit
def test_ledger_records_the_reason_and_upgrades_an_old_ledger(tmp_path):
    path = tmp_path / "ledger.sqlite"
    old = sqlite3.connect(path)  # the first release's table, one row classified uncertain
    old.executescript(
        """CREATE TABLE files (id INTEGER PRIMARY KEY, source TEXT NOT NULL, sha256 TEXT NOT NULL,
        size_bytes INTEGER NOT NULL, state TEXT NOT NULL, outcome TEXT, category TEXT,
        confidence REAL, top3 TEXT, model_version INTEGER, error_code TEXT, error_message TEXT,
        destination TEXT, note TEXT, attempts INTEGER NOT NULL DEFAULT 0,
        discovered_run TEXT NOT NULL, last_run TEXT NOT NULL, done_run TEXT, reported_run TEXT,
        updated_at TEXT NOT NULL);
        INSERT INTO files (source, sha256, size_bytes, state, outcome, category, confidence,
        discovered_run, last_run, done_run, updated_at) VALUES ('/in/a.jpg', 'aa', 1, 'filed',
        'uncertain', 'hat', 0.4, 'r0', 'r0', 'r0', 't');"""
    )
    old.close()
    ledger = Ledger(path)
    before = ledger.get(1)
    assert (before.abstain_reason, before.known_probability) == (None, None)
    row = ledger.discover("/in/b.jpg", "bb", 2, "r1")
    ledger.classify(
        row.id,
        outcome="uncertain",
        category="shoes",
        confidence=0.9,
        top3=None,
        model_version=2,
        error_code=None,
        error_message=None,
        run_id="r1",
        abstain_reason="not_a_known_category",
        known_probability=0.25,
    )
    ledger.start_move(row.id, "/out/_uncertain/b.jpg")
    ledger.finish(row.id, "filed", "r1")
    after = ledger.get(row.id)
    assert (after.abstain_reason, after.known_probability) == ("not_a_known_category", 0.25)
    table = reports.build_table([before, after], "r1")
    assert table["abstain_reason"].tolist() == ["unrecorded", "not_a_known_category"]
    summary = reports.summarise(
        table, run_id="r1", duration=1.0, images_sent=1, exit_code=0, dry_run=False
    )
    assert summary["uncertain_by_reason"] == {"not_a_known_category": 1, "unrecorded": 1}
    ledger.close()


# ------------------------------------------------------------------------------ integrated
CONFIG = """
model_config_list {
  config { name: "fashion" base_path: "%s" model_platform: "tensorflow" }
  config { name: "plain" base_path: "%s" model_platform: "tensorflow" }
}
"""


@pytest.fixture(scope="module")
def gateways(tmp_path_factory):
    """``{"rule": url, "plain": url}``: gateways of ``fashion`` (v2 has a rule) and ``plain``."""
    folder = tmp_path_factory.mktemp("abstain-batch")
    fashion, plain = folder / "fashion", folder / "plain"
    tiny_models.export_many_in_subprocess([(fashion, [1]), (plain, [1])])
    am.export_in_subprocess(fashion, 2, folder / "trained")
    (folder / "models.config").write_text(CONFIG % (fashion, plain))
    with ModelServerProcess(
        ["--model_config_file", str(folder / "models.config")],
        wait_for_model="plain",
        log_path=folder / "serving.log",
    ) as server:
        env = {"SERVING_GRPC_ADDRESS": server.grpc_address}
        with (
            GatewayProcess(env, log_path=folder / "gateway.log") as rule,
            GatewayProcess({**env, "MODEL_NAME": "plain"}, log_path=folder / "plain.log") as bare,
        ):
            yield {"rule": rule.url, "plain": bare.url}


def _place(dirs, names: list[str]) -> None:
    old = time.time() - 60
    for name in names:
        path = dirs["incoming"] / f"{name}.png"
        path.write_bytes(am.png(name))
        os.utime(path, (old, old))


def _run(dirs, url: str, **overrides):
    settings = BatchSettings(
        incoming=dirs["incoming"],
        processed=dirs["processed"],
        quarantine=dirs["quarantine"],
        results=dirs["results"],
        logs=dirs["logs"],
        gateway=url,
        settle_seconds=0,
        retry_backoff=0,
        **overrides,
    )
    result = run(settings)
    table = pd.read_csv(result.report_dir / reports.CSV_NAME, keep_default_na=False)
    summary = json.loads((result.report_dir / reports.SUMMARY_NAME).read_text())
    return result, table.set_index("original_path"), summary


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.e2e
def test_abstained_photos_go_to_uncertain_with_their_reasons(gateways, dirs):
    _place(dirs, list(am.COLOURS))
    result, table, summary = _run(dirs, gateways["rule"])
    assert result.exit_code == 0
    assert _tree(dirs["processed"]) == [
        "_uncertain/black.png",
        "_uncertain/blue.png",
        "_uncertain/yellow.png",
        "boot/red.png",
        "scarf/green.png",
    ]
    reasons = {Path(p).stem: r for p, r in table["abstain_reason"].items()}
    assert reasons == {c: am.EXPECTED[c][1] for c in am.COLOURS}
    assert summary["uncertain_by_reason"] == {"low_confidence": 2, "not_a_known_category": 1}
    assert summary["counts_by_category"] == {"_uncertain": 3, "boot": 1, "scarf": 1}
    assert summary["model_versions"] == [2]
    assert "each model version's own abstain rule" in summary["uncertain_rule"]
    known = {Path(p).stem: k for p, k in table["known_probability"].items()}
    expected = am.expected(am.images(list(am.COLOURS))).known_probability
    assert [known[c] for c in am.COLOURS] == pytest.approx(expected.tolist(), abs=1e-6)
    page = (result.report_dir / reports.HTML_NAME).read_text()
    assert "Uncertain images per reason" in page and "not_a_known_category" in page
    with sqlite3.connect(dirs["results"] / LEDGER_NAME) as db:
        rows = db.execute("SELECT abstain_reason, COUNT(*) FROM files GROUP BY 1 ORDER BY 1")
        assert rows.fetchall() == [
            (None, 2),
            ("low_confidence", 2),
            ("not_a_known_category", 1),
        ]


@pytest.mark.e2e
def test_min_confidence_replaces_the_versions_rule(gateways, dirs):
    _place(dirs, ["red", "blue", "yellow"])
    result, table, summary = _run(dirs, gateways["rule"], min_confidence=0.45)
    # red 0.91 and yellow 0.49 pass 0.45; blue's labels are 1/3 each: low confidence, and the
    # rule's not_a_known_category is not consulted
    assert _tree(dirs["processed"]) == ["_uncertain/blue.png", "boot/red.png", "boot/yellow.png"]
    assert summary["uncertain_by_reason"] == {"low_confidence": 1}
    assert "--min-confidence" in summary["uncertain_rule"] and "0.45" in summary["uncertain_rule"]


@pytest.mark.e2e
def test_a_version_without_a_rule_files_top1_from_half(gateways, dirs):
    colours = list(am.COLOURS)
    _place(dirs, colours)
    result, table, summary = _run(dirs, gateways["plain"])
    images = am.images(colours)
    # tiny version 1 averages the same pixels at 8x8; its probabilities are known in NumPy
    small = images[:, : tiny_models.SIZE, : tiny_models.SIZE]
    probabilities = tiny_models.expected(small, 1)
    labels = tiny_models.labels_for(1)
    expected = sorted(
        f"{labels[p.argmax()]}/{c}.png" if p.max() >= 0.5 else f"_uncertain/{c}.png"
        for c, p in zip(colours, probabilities, strict=True)
    )
    assert _tree(dirs["processed"]) == expected
    assert "_uncertain" in {e.split("/")[0] for e in expected}  # the threshold is exercised
    unsure = sum(p.max() < 0.5 for p in probabilities)
    assert summary["uncertain_by_reason"] == {"low_confidence": int(unsure)}
    assert set(table["known_probability"]) == {""}  # no rule, no known probability
    assert summary["model_versions"] == [1]
