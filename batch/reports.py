"""A run's reports: CSV (one row per file), JSON summary, HTML page; and quarantine sidecars.

Files in ``results/<run_id>/``: ``report.html`` (with ``confidence.png``) and ``summary.json``
first, ``report.csv`` last: the CSV's atomic rename is the reports' commit point that
:mod:`batch.ledger` relies on for exactly-once reporting. Each file is written to a temporary
name, fsynced and renamed, so a report is never half written.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from batch import failpoints
from batch.filing import display_path, fsync_dir
from batch.ledger import FileRow

CSV_NAME = "report.csv"
SUMMARY_NAME = "summary.json"
HTML_NAME = "report.html"
HISTOGRAM_NAME = "confidence.png"
STAGING_PREFIX = ".staging-"
"""A run's reports are written in ``<results>/.staging-<run_id>`` and renamed to ``<run_id>``
when whole: a run killed while writing them leaves no half report that history would count."""


def stale_staging_dirs(results: Path) -> list[Path]:
    """The staging folders under ``results``; while the caller holds the run lock, each is the
    unfinished reports of a killed run (its files are reported again by the next real run).

    Args:
        results: the job's results folder.

    Returns:
        ``<results>/.staging-*`` folders, sorted; empty if ``results`` does not exist.
    """
    return sorted(p for p in Path(results).glob(STAGING_PREFIX + "*") if p.is_dir())


def staging_dir(report_dir: Path) -> Path:
    """Where the reports of ``report_dir`` (``<results>/<run_id>``) are written before renaming.

    Args:
        report_dir: the run's final report folder.

    Returns:
        ``<results>/.staging-<run_id>``.
    """
    return report_dir.with_name(STAGING_PREFIX + report_dir.name)


SIDECAR_SUFFIX = ".reason.json"
"""Quarantined ``x.jpg`` gets ``x.jpg.reason.json`` beside it."""

COLUMNS = [
    "run_id",
    "original_path",
    "destination",
    "status",
    "category",
    "confidence",
    "top3",
    "model_version",
    "sha256",
    "size_bytes",
    "timestamp",
    "error",
    "abstain_reason",
    "known_probability",
    "finished_run",
]
"""CSV columns, in order. ``error`` is ``code: message``; ``timestamp`` is the row's last
ledger change (ISO 8601 UTC); ``confidence`` is the top-1 probability in [0, 1];
``abstain_reason`` says why an ``uncertain`` file was not filed under its label
(``not_a_known_category``, ``low_confidence``; empty otherwise); ``known_probability`` is the
model version's probability that the photo is one of its labels (empty for a version without
an abstain rule); ``finished_run`` is the run that filed, quarantined or found vanished the file
(empty while it is left in incoming). ``run_id`` is the run whose report this is: it differs
from ``finished_run`` for the files of a run killed before its reports, which the next run
reports (exactly once)."""

STATUSES = (
    "filed",
    "uncertain",
    "quarantined",
    "left_in_incoming",
    "vanished",
    "would_file",
    "would_be_uncertain",
    "would_quarantine",
)
"""Values of the ``status`` column (``would_*`` only in a dry run)."""

THUMBNAIL_PX = 128
MAX_THUMBNAILS = 120


def _status(row: FileRow, dry_run: bool) -> str:
    if row.state == "filed":
        return "uncertain" if row.outcome == "uncertain" else "filed"
    if row.state in ("quarantined", "vanished"):
        return row.state
    if dry_run and row.state == "classified":
        return {"category": "would_file", "uncertain": "would_be_uncertain"}.get(
            row.outcome or "", "would_quarantine"
        )
    return "left_in_incoming"


def build_table(
    rows: Iterable[FileRow],
    run_id: str,
    *,
    dry_run: bool = False,
    planned: dict[int, str] | None = None,
) -> pd.DataFrame:
    """The CSV's rows.

    Args:
        rows: ledger rows of the report (see ``Ledger.claim_for_report``).
        run_id: this run.
        dry_run: rows still ``classified`` are shown as ``would_*``.
        planned: dry run: row id -> destination it would have got.

    Returns:
        A frame with :data:`COLUMNS`, one row per file, in ledger order. Paths are text: the
        bytes of a non-UTF-8 file name show as ``\\xNN`` (:func:`batch.filing.display_path`).
    """
    planned = planned or {}
    records = []
    for r in rows:
        status = _status(r, dry_run)
        dest = (
            planned.get(r.id, "")
            if dry_run
            else (r.destination or "" if status not in ("left_in_incoming", "vanished") else "")
        )
        error = f"{r.error_code}: {r.error_message}" if r.error_code else ""
        if r.note and r.state == "classified":
            error = r.note
        records.append(
            {
                "run_id": run_id,
                "original_path": display_path(r.source),
                "destination": display_path(dest),
                "status": status,
                "category": r.category or "",
                "confidence": r.confidence,
                "top3": r.top3 or "",
                "model_version": r.model_version,
                "sha256": r.sha256,
                "size_bytes": r.size_bytes,
                "timestamp": r.updated_at,
                "error": error.encode("utf-8", "surrogateescape").decode(
                    "utf-8", "backslashreplace"
                ),
                "abstain_reason": _reason(r, status),
                "known_probability": r.known_probability,
                "finished_run": r.done_run or "",
            }
        )
    table = pd.DataFrame.from_records(records, columns=COLUMNS)
    return table.astype(
        {
            "model_version": "Int64",
            "size_bytes": "Int64",
            "confidence": "float64",
            "known_probability": "float64",
        }
    )


UNRECORDED_REASON = "unrecorded"
"""Reason shown for an uncertain row classified before the ledger recorded reasons."""


def _reason(row: FileRow, status: str) -> str:
    if status not in ("uncertain", "would_be_uncertain"):
        return ""
    return row.abstain_reason or UNRECORDED_REASON


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


atomic_write = _atomic_write
"""Public name of the atomic writer: ``atomic_write(path, data)`` writes ``data`` (bytes) to a
hidden temporary name beside ``path``, fsyncs it and renames it over ``path``."""


def write_sidecar(quarantined: Path, info: dict[str, Any]) -> Path:
    """Writes ``<quarantined>.reason.json`` (why the file was quarantined), atomically.

    Args:
        quarantined: the quarantined file's path.
        info: JSON-serialisable reason, e.g. ``{"error_code": "not_an_image", ...}``.

    Returns:
        The sidecar's path.
    """
    path = quarantined.with_name(quarantined.name + SIDECAR_SUFFIX)
    _atomic_write(path, (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())
    return path


def summarise(
    table: pd.DataFrame,
    *,
    run_id: str,
    duration: float,
    images_sent: int,
    exit_code: int,
    dry_run: bool,
) -> dict[str, Any]:
    """The JSON summary.

    Args:
        table: from :func:`build_table`.
        run_id: this run.
        duration: wall time of the run, seconds.
        images_sent: images the gateway answered during this run.
        exit_code: the run's exit code.
        dry_run: whether nothing was moved.

    Returns:
        ``counts_by_status``, ``counts_by_category`` (filed rows by label; uncertain under
        ``_uncertain``), ``uncertain_by_reason`` (``_uncertain`` rows per abstain reason, e.g.
        ``{"low_confidence": 3, "not_a_known_category": 1}``), ``confidence`` statistics
        (count, mean, std, min, p25, median, p75, max, over rows with a prediction),
        ``model_versions``, ``duration_seconds``, ``images_sent`` and ``images_per_second``
        (images answered / duration; None when the gateway answered no image, e.g. a run that only
        finished the files of a run killed before it: its rate is not 0, there is none).
    """
    by_status = {k: int(v) for k, v in table["status"].value_counts().sort_index().items()}
    filed = table[table["status"].isin(["filed", "would_file"])]
    by_category = {k: int(v) for k, v in filed["category"].value_counts().sort_index().items()}
    unsure = table[table["status"].isin(["uncertain", "would_be_uncertain"])]
    if len(unsure):
        by_category["_uncertain"] = len(unsure)
    by_reason = {k: int(v) for k, v in unsure["abstain_reason"].value_counts().sort_index().items()}
    conf = table["confidence"].dropna()
    stats: dict[str, float | int | None] = {"count": int(conf.size)}
    for name, value in (
        ("mean", conf.mean()),
        ("std", conf.std()),
        ("min", conf.min()),
        ("p25", conf.quantile(0.25)),
        ("median", conf.median()),
        ("p75", conf.quantile(0.75)),
        ("max", conf.max()),
    ):
        stats[name] = None if conf.empty or math.isnan(value) else round(float(value), 6)
    versions = sorted({int(v) for v in table["model_version"].dropna()})
    return {
        "run_id": run_id,
        "dry_run": dry_run,
        "exit_code": exit_code,
        "files": len(table),
        "counts_by_status": by_status,
        "counts_by_category": by_category,
        "uncertain_by_reason": by_reason,
        "confidence": stats,
        "model_versions": versions,
        "duration_seconds": round(duration, 3),
        "images_sent": images_sent,
        "images_per_second": (
            round(images_sent / duration, 3) if duration > 0 and images_sent > 0 else None
        ),
    }


def _histogram_png(confidences: pd.Series) -> bytes:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(6, 3), dpi=100)
    ax = fig.subplots()
    ax.hist(confidences.to_numpy(), bins=20, range=(0.0, 1.0), color="#4878a8")
    ax.set_xlabel("top-1 confidence")
    ax.set_ylabel("images")
    ax.set_title(f"Confidence of {confidences.size} predictions")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


_MAX_PREVIEW_BYTES = 32 * 1024 * 1024


def _thumbnail_tag(path: str, caption: str) -> str:
    from PIL import ImageOps

    import preprocessing

    try:
        # Quarantined files are untrusted: the shared opener refuses oversized pixel counts
        # before anything is decoded, as the gateway does.
        data = Path(path).read_bytes() if os.path.getsize(path) <= _MAX_PREVIEW_BYTES else b""
        with preprocessing.open_image(data) as im:
            im.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            im = ImageOps.exif_transpose(im).convert("RGB")
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
        src = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
        img = f'<img src="{src}" alt="{html.escape(caption)}">'
    except Exception:  # noqa: BLE001 - quarantined files are unreadable by design
        img = '<div class="broken">no preview</div>'
    return f"<figure>{img}<figcaption>{html.escape(caption)}</figcaption></figure>"


def rate_text(images_per_second: float | None) -> str:
    """``summary.json``'s ``images_per_second`` in words: ``"12.5 images/s"``, or that the gateway
    answered no image (None)."""
    if images_per_second is None:
        return "no image answered by the gateway"
    return f"{images_per_second} images/s"


def _drift_section(summary: dict[str, Any]) -> str:
    if not isinstance(summary.get("drift"), dict):
        return ""
    from batch.drift import to_html

    return to_html(summary["drift"])


def _html(table: pd.DataFrame, summary: dict[str, Any], has_histogram: bool) -> str:
    counts = pd.DataFrame(
        sorted(summary["counts_by_category"].items()), columns=["category", "images"]
    )
    statuses = pd.DataFrame(
        sorted(summary["counts_by_status"].items()), columns=["status", "files"]
    )
    reasons = pd.DataFrame(
        sorted(summary.get("uncertain_by_reason", {}).items()), columns=["reason", "images"]
    )
    rule = summary.get("uncertain_rule")
    rule_line = f"<p>{html.escape(str(rule))}</p>" if rule else ""
    reason_table = reasons.to_html(index=False) if len(reasons) else "<p>None.</p>"
    thumbs = []
    for status in ("uncertain", "would_be_uncertain", "quarantined", "would_quarantine"):
        part = table[table["status"] == status]
        for _, r in part.iterrows():
            if len(thumbs) >= MAX_THUMBNAILS:
                break
            where = (
                r["destination"]
                if r["destination"] and os.path.exists(r["destination"])
                else r["original_path"]
            )
            detail = (
                f"{r['abstain_reason']}: {r['category']} {r['confidence']:.2f}"
                if status.endswith("uncertain")
                else r["error"].split(":")[0]
            )
            thumbs.append(_thumbnail_tag(where, f"{os.path.basename(where)} - {detail}"))
    hist = (
        f'<img src="{HISTOGRAM_NAME}" alt="confidence histogram">'
        if has_histogram
        else "<p>No predictions in this run.</p>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Batch run {html.escape(summary["run_id"])}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px}} figure{{display:inline-block;margin:4px;
width:{THUMBNAIL_PX + 12}px;font-size:11px;word-break:break-all}}
.broken{{width:{THUMBNAIL_PX}px;height:{THUMBNAIL_PX}px;background:#eee;line-height:{THUMBNAIL_PX}px;
text-align:center}}</style></head><body>
<h1>Batch run {html.escape(summary["run_id"])}{" (dry run)" if summary["dry_run"] else ""}</h1>
<p>{summary["files"]} files, exit code {summary["exit_code"]}, {summary["duration_seconds"]} s,
{rate_text(summary["images_per_second"])}, model versions {summary["model_versions"]}.</p>
<h2>Files by status</h2>{statuses.to_html(index=False)}
<h2>Images per category</h2>{counts.to_html(index=False)}
<h2>Uncertain images per reason</h2>{rule_line}{reason_table}
<h2>Confidence</h2>{hist}
{_drift_section(summary)}
<h2>Uncertain and quarantined files ({len(thumbs)} shown)</h2>
{"".join(thumbs) or "<p>None.</p>"}
</body></html>
"""


def write_reports(
    table: pd.DataFrame,
    report_dir: Path,
    *,
    run_id: str,
    duration: float,
    images_sent: int,
    exit_code: int,
    dry_run: bool,
    extra: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Writes the HTML page, the JSON summary and, last, the CSV, then publishes them at once.

    They are written in :func:`staging_dir` (run ids are unique, and the runner removes a killed
    run's staging folder under the run lock before anything else) and the folder is renamed to
    ``report_dir``, so ``report_dir`` either holds every report or does not exist; the CSV under
    it is what tells a later run the reports were written (the exactly-once rule of
    :mod:`batch.ledger`).

    Args:
        table: from :func:`build_table`.
        report_dir: ``results/<run_id>`` (created).
        run_id: this run.
        duration: run wall time, seconds.
        images_sent: images the gateway answered this run.
        exit_code: the run's exit code.
        dry_run: whether nothing was moved.
        extra: more top-level keys of the summary (e.g. ``drift``, see :mod:`batch.drift`).

    Returns:
        Files per status.
    """
    staging = staging_dir(report_dir)
    staging.mkdir(parents=True)
    summary = summarise(
        table,
        run_id=run_id,
        duration=duration,
        images_sent=images_sent,
        exit_code=exit_code,
        dry_run=dry_run,
    )
    summary.update(extra or {})
    conf = table["confidence"].dropna()
    if not conf.empty:
        _atomic_write(staging / HISTOGRAM_NAME, _histogram_png(conf))
    _atomic_write(staging / HTML_NAME, _html(table, summary, not conf.empty).encode())
    _atomic_write(
        staging / SUMMARY_NAME, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode()
    )
    failpoints.reach("during_reports")
    _atomic_write(staging / CSV_NAME, table.to_csv(index=False).encode())
    fsync_dir(staging)
    os.rename(staging, report_dir)
    fsync_dir(report_dir.parent)
    return summary["counts_by_status"]
