"""The crash-safety ledger: one SQLite row per input file, recording its state through the runs.

A file's life (each arrow is one committed transaction, written *before* the file system change
it announces, so a SIGKILL between any two steps leaves enough to finish or undo the step):

    discovered ──> classified ──> moving ──> filed | quarantined
        │  ▲                        │
        │  └── (rolled back) ───────┘     (recovery, when the file never left incoming)
        └──> vanished                     (the file disappeared from incoming before filing)

- ``discovered``: seen in incoming with this sha256; not (successfully) classified yet. A
  gateway/serving failure leaves the row here with ``error_code`` set: the next run re-sends it.
- ``classified``: the gateway's answer is stored (``outcome`` = ``category``, ``uncertain`` or
  ``quarantine``; for ``uncertain`` the ``abstain_reason``); it is never sent again.
- ``moving``: ``destination`` is chosen and recorded; the move may or may not have happened.
- ``filed`` / ``quarantined`` / ``vanished``: terminal.

At most one *active* (non-terminal) row exists per source path (a partial unique index). A file
that later appears at the same path is a new input and gets a new row. Reports are exactly-once
through ``reported_run``: a terminal row is reported by the first run whose reports complete
after it reached its terminal state.

Paths (``source``, ``destination``) are stored as TEXT when they are valid UTF-8, else as the
raw file-name bytes (a BLOB, ``os.fsencode``); rows always hand them back as ``str`` (undecodable
bytes as surrogate escapes, like ``os.listdir``), so a non-UTF-8 file name is an input like any
other. Free text (notes, error messages) is stored with such bytes shown as ``\\xNN``.

The database runs in WAL mode with ``synchronous=FULL``: a committed transaction survives a
process kill and a power cut (SQLite's documented guarantees for WAL mode with FULL sync).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ACTIVE_STATES = ("discovered", "classified", "moving")
TERMINAL_STATES = ("filed", "quarantined", "vanished")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN
        ('discovered', 'classified', 'moving', 'filed', 'quarantined', 'vanished')),
    outcome TEXT CHECK (outcome IN ('category', 'uncertain', 'quarantine')),
    category TEXT,
    confidence REAL,
    top3 TEXT,
    model_version INTEGER,
    abstain_reason TEXT,
    known_probability REAL,
    error_code TEXT,
    error_message TEXT,
    destination TEXT,
    note TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    discovered_run TEXT NOT NULL,
    last_run TEXT NOT NULL,
    done_run TEXT,
    reported_run TEXT,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS files_one_active_per_source
    ON files(source) WHERE state IN ('discovered', 'classified', 'moving');
CREATE INDEX IF NOT EXISTS files_state ON files(state);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    exit_code INTEGER,
    reports_done INTEGER NOT NULL DEFAULT 0,
    report_csv TEXT
);
"""


_PATH_COLUMNS = ("source", "destination")
_ADDED_COLUMNS = (("abstain_reason", "TEXT"), ("known_probability", "REAL"))
"""Columns added after the first release: a ledger written before them gets them on open."""


def _db_path(path: str | None) -> str | bytes | None:
    """A path as SQLite can bind it: TEXT if it is valid UTF-8, else its raw bytes (BLOB)."""
    if path is None:
        return None
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


def _db_text(text: str | None) -> str | None:
    """Free text as SQLite can bind it: undecodable bytes (surrogates) shown as ``\\xNN``."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text


def _row(values: sqlite3.Row) -> FileRow:
    data = dict(values)
    for key in _PATH_COLUMNS:
        if isinstance(data[key], bytes):
            data[key] = os.fsdecode(data[key])
    return FileRow(**data)


def utc_now() -> str:
    """Current time, ISO 8601 UTC with milliseconds, e.g. ``2026-11-29T02:00:00.123+00:00``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class FileRow:
    """One ledger row (see the module docstring for the states)."""

    id: int
    source: str
    sha256: str
    size_bytes: int
    state: str
    outcome: str | None
    category: str | None
    confidence: float | None
    top3: str | None
    model_version: int | None
    abstain_reason: str | None
    known_probability: float | None
    error_code: str | None
    error_message: str | None
    destination: str | None
    note: str | None
    attempts: int
    discovered_run: str
    last_run: str
    done_run: str | None
    reported_run: str | None
    updated_at: str


class Ledger:
    """Thin typed access to the SQLite file. Use from one thread (the runner's main thread).

    Args:
        path: database file (created with its folder if missing), or ``":memory:"`` for a
            dry run.
    """

    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        present = {r["name"] for r in self._db.execute("PRAGMA table_info(files)")}
        for name, kind in _ADDED_COLUMNS:
            if name not in present:  # ADD COLUMN appends; rows are read by name
                self._db.execute(f"ALTER TABLE files ADD COLUMN {name} {kind}")

    def journal_mode(self) -> str:
        """SQLite's journal mode in use (``wal`` for a file, ``memory`` for ``:memory:``)."""
        return str(self._db.execute("PRAGMA journal_mode").fetchone()[0])

    def close(self) -> None:
        """Closes the connection."""
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Groups the statements inside into one transaction: one WAL sync instead of one each.

        For steps whose writes may be lost together, e.g. the scan's ``discover`` rows (no file
        has moved yet; a killed run's next scan registers them again). The transaction is rolled
        back if the block raises.
        """
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- runs ------------------------------------------------------------------------------
    def begin_run(self, run_id: str) -> None:
        """Records the start of a run."""
        self._db.execute("INSERT INTO runs(run_id, started_at) VALUES (?, ?)", (run_id, utc_now()))

    def finish_run(self, run_id: str, exit_code: int, report_csv: str | None) -> None:
        """Records the end of a run whose reports are written (the reports' commit point)."""
        self._db.execute(
            "UPDATE runs SET finished_at = ?, exit_code = ?, reports_done = 1, report_csv = ? "
            "WHERE run_id = ?",
            (utc_now(), exit_code, report_csv, run_id),
        )

    def unfinished_runs(self) -> list[tuple[str, str | None]]:
        """Runs whose reports were never confirmed: ``[(run_id, report_csv_or_None)]``."""
        rows = self._db.execute(
            "SELECT run_id, report_csv FROM runs WHERE reports_done = 0"
        ).fetchall()
        return [(r["run_id"], r["report_csv"]) for r in rows]

    def set_report_path(self, run_id: str, report_csv: str) -> None:
        """Records where a run's CSV will be renamed to (before the rename)."""
        self._db.execute("UPDATE runs SET report_csv = ? WHERE run_id = ?", (report_csv, run_id))

    def confirm_reports(self, run_id: str) -> None:
        """Marks a crashed run's reports as complete (its CSV was found on disk)."""
        self._db.execute("UPDATE runs SET reports_done = 1 WHERE run_id = ?", (run_id,))

    def release_reports(self, run_id: str) -> None:
        """Hands the rows a crashed run claimed but never reported back to the next report
        (:meth:`unreported_finished_by` then counts them with the rest of that run's files)."""
        self._db.execute("UPDATE files SET reported_run = NULL WHERE reported_run = ?", (run_id,))
        self._db.execute("UPDATE runs SET reports_done = 1 WHERE run_id = ?", (run_id,))

    def unreported_finished_by(self, run_id: str) -> int:
        """How many files ``run_id`` filed, quarantined or found vanished that no report lists
        yet (the next report claims them)."""
        (count,) = self._db.execute(
            "SELECT COUNT(*) FROM files WHERE done_run = ? AND reported_run IS NULL AND state IN "
            "('filed', 'quarantined', 'vanished')",
            (run_id,),
        ).fetchone()
        return int(count)

    # -- rows ------------------------------------------------------------------------------
    def get(self, row_id: int) -> FileRow:
        """The row with this id.

        Raises:
            KeyError: no such row.
        """
        row = self._db.execute("SELECT * FROM files WHERE id = ?", (row_id,)).fetchone()
        if row is None:
            raise KeyError(row_id)
        return _row(row)

    def _select(self, where: str, params: tuple = ()) -> list[FileRow]:
        rows = self._db.execute(f"SELECT * FROM files WHERE {where} ORDER BY id", params)
        return [_row(r) for r in rows]

    def in_state(self, *states: str) -> list[FileRow]:
        """Rows currently in any of ``states``, oldest first."""
        marks = ",".join("?" * len(states))
        return self._select(f"state IN ({marks})", tuple(states))

    def active_for(self, source: str) -> FileRow | None:
        """The active row for a source path, if any."""
        rows = self._select(
            "source = ? AND state IN ('discovered', 'classified', 'moving')", (_db_path(source),)
        )
        return rows[0] if rows else None

    def discover(self, source: str, sha256: str, size_bytes: int, run_id: str) -> FileRow:
        """Registers a file seen in incoming, or refreshes its active row.

        An active row with the same content is kept as it is (a classified file is not sent
        again); an active row whose content changed (the file was replaced in place) is reset
        to ``discovered`` with the new hash, dropping the old answer.

        Args:
            source: absolute path in incoming.
            sha256: hex digest of the content now.
            size_bytes: size now.
            run_id: the current run.

        Returns:
            The row.

        Raises:
            ValueError: the active row is ``moving`` (recovery must run first).
        """
        row = self.active_for(source)
        now = utc_now()
        if row is None:
            cur = self._db.execute(
                "INSERT INTO files(source, sha256, size_bytes, state, discovered_run, last_run, "
                "updated_at) VALUES (?, ?, ?, 'discovered', ?, ?, ?)",
                (_db_path(source), sha256, size_bytes, run_id, run_id, now),
            )
            return self.get(cur.lastrowid)
        if row.state == "moving":
            raise ValueError(f"row {row.id} is moving; recover before scanning")
        if row.sha256 == sha256:
            self._db.execute("UPDATE files SET last_run = ? WHERE id = ?", (run_id, row.id))
        else:
            self._db.execute(
                "UPDATE files SET sha256 = ?, size_bytes = ?, state = 'discovered', "
                "outcome = NULL, category = NULL, confidence = NULL, top3 = NULL, "
                "model_version = NULL, abstain_reason = NULL, known_probability = NULL, "
                "error_code = NULL, error_message = NULL, "
                "last_run = ?, updated_at = ? WHERE id = ?",
                (sha256, size_bytes, run_id, now, row.id),
            )
        return self.get(row.id)

    def classify(
        self,
        row_id: int,
        *,
        outcome: str,
        category: str | None,
        confidence: float | None,
        top3: str | None,
        model_version: int | None,
        error_code: str | None,
        error_message: str | None,
        run_id: str,
        abstain_reason: str | None = None,
        known_probability: float | None = None,
    ) -> None:
        """Stores the gateway's final answer for a file (state ``classified``).

        ``abstain_reason`` is why an ``uncertain`` file is not filed under its label;
        ``known_probability`` is the version's, when it has an abstain rule.
        """
        self._db.execute(
            "UPDATE files SET state = 'classified', outcome = ?, category = ?, confidence = ?, "
            "top3 = ?, model_version = ?, abstain_reason = ?, known_probability = ?, "
            "error_code = ?, error_message = ?, "
            "attempts = attempts + 1, last_run = ?, updated_at = ? WHERE id = ?",
            (
                outcome,
                category,
                confidence,
                top3,
                model_version,
                _db_text(abstain_reason),
                known_probability,
                error_code,
                _db_text(error_message),
                run_id,
                utc_now(),
                row_id,
            ),
        )

    def defer(self, row_id: int, error_code: str, error_message: str, run_id: str) -> None:
        """Records a transient failure: the file stays ``discovered`` for the next run."""
        self._db.execute(
            "UPDATE files SET error_code = ?, error_message = ?, attempts = attempts + 1, "
            "last_run = ?, updated_at = ? WHERE id = ?",
            (error_code, _db_text(error_message), run_id, utc_now(), row_id),
        )

    def add_note(self, row_id: int, note: str, run_id: str) -> None:
        """Records why a classified file could not be moved this run (it stays in incoming)."""
        self._db.execute(
            "UPDATE files SET note = ?, last_run = ?, updated_at = ? WHERE id = ?",
            (_db_text(note), run_id, utc_now(), row_id),
        )

    def start_move(self, row_id: int, destination: str) -> None:
        """Records the chosen destination *before* the move (state ``moving``)."""
        self._db.execute(
            "UPDATE files SET state = 'moving', destination = ?, updated_at = ? WHERE id = ?",
            (_db_path(destination), utc_now(), row_id),
        )

    def undo_move(self, row_id: int) -> None:
        """Back to ``classified``: the file is still (only) in incoming."""
        self._db.execute(
            "UPDATE files SET state = 'classified', destination = NULL, updated_at = ? "
            "WHERE id = ?",
            (utc_now(), row_id),
        )

    def finish(
        self,
        row_id: int,
        state: str,
        run_id: str,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> None:
        """Puts a row in a terminal state (``filed``, ``quarantined`` or ``vanished``).

        Raises:
            ValueError: ``state`` is not terminal.
        """
        if state not in TERMINAL_STATES:
            raise ValueError(state)
        self._db.execute(
            "UPDATE files SET state = ?, done_run = ?, last_run = ?, updated_at = ?, "
            "error_code = COALESCE(?, error_code), error_message = COALESCE(?, error_message) "
            "WHERE id = ?",
            (state, run_id, run_id, utc_now(), error_code, _db_text(error_message), row_id),
        )

    # -- reports ---------------------------------------------------------------------------
    def claim_for_report(self, run_id: str) -> list[FileRow]:
        """Rows this run's report must list, claiming the terminal ones (one transaction).

        Returns:
            Terminal rows not yet reported by any completed report (claimed now for
            ``run_id``), plus active rows this run touched (``last_run = run_id``: left in
            incoming), ordered by id.
        """
        self._db.execute(
            "UPDATE files SET reported_run = ? WHERE reported_run IS NULL AND state IN "
            "('filed', 'quarantined', 'vanished')",
            (run_id,),
        )
        return self._select(
            "reported_run = ? OR (last_run = ? AND state IN "
            "('discovered', 'classified', 'moving'))",
            (run_id, run_id),
        )
