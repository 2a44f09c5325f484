"""Unit tests of the batch job's modules, and runner fault injection against a fake gateway.

The fake gateway (a werkzeug WSGI app on a free 127.0.0.1 port) exists for fault injection only:
5xx, Retry-After, 413 limits, 401, a gateway that dies after N requests. It labels an image by
its file name prefix ``<label>__...`` and answers the documented JSON shapes
(docs/CONTRACTS.md section 4). Real-model behaviour is tested in test_batch_integration.py.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from filelock import FileLock
from PIL import Image
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from batch import filing, reports, scan
from batch.decide import decide, folder_name
from batch.gateway_client import (
    GatewayClient,
    GatewayUnavailableError,
    RejectedRequestError,
    TransientGatewayError,
)
from batch.ledger import Ledger
from batch.runner import LEDGER_NAME, run
from batch.settings import EXIT_CONFIG, EXIT_TEMPFAIL, BatchSettings, ConfigError, parse_settings

LABELS = ["dress", "hat", "shoes"]


def jpeg_bytes(color=(200, 30, 30), size=(32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def write(path: Path, data: bytes, age: float = 60.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    t = time.time() - age
    os.utime(path, (t, t))
    return path


class FakeGateway:
    """Answers /health and /predict_batch; faults are switched by attributes."""

    def __init__(self) -> None:
        self.requests = 0  # /predict_batch calls
        self.answers: list[tuple[int, int]] = []  # (images sent, HTTP status) per call
        self.images_seen: list[str] = []
        self.healthy = True
        self.fail_after: int | None = None  # predict_batch calls that succeed before 503s
        self.status_override: int | None = None
        self.max_images = 64
        self.api_key: str | None = None
        self.lock = threading.Lock()
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def _json(self, body: dict, status: int = 200, headers=None) -> Response:
        return Response(
            json.dumps(body), status=status, headers=headers, content_type="application/json"
        )

    def _error(self, status: int, code: str, headers=None) -> Response:
        return self._json({"error": {"code": code, "message": code}}, status, headers)

    def app(self, environ, start_response):
        request = Request(environ)
        if request.path == "/health":
            resp = (
                self._json({"status": "ok"})
                if self.healthy
                else self._error(503, "serving_unavailable")
            )
            return resp(environ, start_response)
        if self.api_key and request.headers.get("X-API-Key") != self.api_key:
            return self._error(401, "unauthorized")(environ, start_response)
        files = request.files.getlist("images")
        with self.lock:
            self.requests += 1
            n = self.requests
        if self.status_override:
            resp = self._error(self.status_override, "serving_unavailable", {"Retry-After": "0"})
        elif self.fail_after is not None and n > self.fail_after:
            resp = self._error(503, "serving_unavailable", {"Retry-After": "0"})
        elif len(files) > self.max_images:
            resp = self._error(413, "too_many_images")
        else:
            with self.lock:
                self.images_seen.extend(f.filename for f in files)
            resp = self._json(
                {
                    "model": {"name": "fashion", "version": 7},
                    "predictions": [self._predict(i, f) for i, f in enumerate(files)],
                }
            )
        with self.lock:
            self.answers.append((len(files), resp.status_code))
        return resp(environ, start_response)

    @staticmethod
    def _predict(index: int, storage) -> dict:
        data = storage.read()
        name = storage.filename
        if not data:
            return {
                "index": index,
                "filename": name,
                "error": {"code": "empty_file", "message": "empty"},
            }
        if not data.startswith((b"\xff\xd8", b"\x89PNG")):
            return {
                "index": index,
                "filename": name,
                "error": {"code": "not_an_image", "message": "not an image"},
            }
        prefix = name.split("__")[0]
        conf = 0.3 if prefix == "low" else 0.9
        label = "hat" if prefix == "low" else prefix
        rest = [x for x in LABELS if x != label]
        return {
            "index": index,
            "filename": name,
            "label": label,
            "class_id": 0,
            "confidence": conf,
            "top_k": [
                {"label": label, "class_id": 0, "probability": conf},
                {"label": rest[0], "class_id": 1, "probability": (1 - conf) / 2},
                {"label": rest[1], "class_id": 2, "probability": (1 - conf) / 2},
            ],
        }

    def __enter__(self) -> FakeGateway:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.thread.join()


@pytest.fixture
def gateway():
    with FakeGateway() as gw:
        yield gw


def settings_for(dirs, gateway_url: str, **overrides) -> BatchSettings:
    values = dict(
        incoming=dirs["incoming"],
        processed=dirs["processed"],
        quarantine=dirs["quarantine"],
        results=dirs["results"],
        logs=dirs["logs"],
        gateway=gateway_url,
        settle_seconds=0.0,
        health_timeout=2.0,
        retries=1,
        retry_backoff=0.0,
        chunk_size=2,
        concurrency=2,
    )
    values.update(overrides)
    return BatchSettings(**values)


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def read_csv(result) -> pd.DataFrame:
    return pd.read_csv(result.report_dir / reports.CSV_NAME, keep_default_na=False)


# -- settings -----------------------------------------------------------------------------------
def test_settings_flags_override_env_and_defaults(tmp_path):
    env = {
        "FASHION_BATCH_MIN_CONFIDENCE": "0.7",
        "FASHION_BATCH_CHUNK_SIZE": "8",
        "FASHION_BATCH_API_KEY": "k1",
        "FASHION_BATCH_DRY_RUN": "true",
    }
    command, s = parse_settings(["run", "--chunk-size", "4", "--incoming", str(tmp_path)], env)
    assert command == "run"
    assert (s.min_confidence, s.chunk_size, s.api_key, s.dry_run) == (0.7, 4, "k1", True)
    assert s.incoming == tmp_path and s.processed == Path.cwd() / "data/processed_batches"
    assert s.concurrency == 2 and s.gateway == "http://localhost:8080"
    assert "k1" not in repr(s)
    assert parse_settings(["run"], {"GATEWAY_API_KEY": "shared"})[1].api_key == "shared"


def test_settings_reject_bad_values(tmp_path):
    with pytest.raises(ConfigError, match="FASHION_BATCH_CONCURRENCY"):
        parse_settings(["run"], {"FASHION_BATCH_CONCURRENCY": "two"})
    base = dict(
        incoming=tmp_path, processed=tmp_path.parent / "p", quarantine=tmp_path.parent / "q"
    )
    with pytest.raises(ConfigError, match="min-confidence"):
        BatchSettings(**base, min_confidence=1.5).validate()
    with pytest.raises(ConfigError, match="inside --incoming"):
        BatchSettings(**{**base, "processed": tmp_path / "out"}).validate()
    with pytest.raises(ConfigError, match="does not exist"):
        BatchSettings(**{**base, "incoming": tmp_path / "missing"}).validate()
    (tmp_path / "notes.txt").write_text("a file, not a folder\n")
    with pytest.raises(ConfigError) as info:
        BatchSettings(**{**base, "incoming": tmp_path / "notes.txt"}).validate()
    assert str(info.value) == f"incoming folder {tmp_path / 'notes.txt'} is not a folder"
    with pytest.raises(ConfigError, match="http"):
        BatchSettings(**base, gateway="localhost:8080").validate()


def test_help_documents_exit_codes(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_settings(["run", "--help"], {})
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for text in (
        "--min-confidence",
        "--dry-run",
        "exit codes:",
        "0   every file",
        "75  retry later (EX_TEMPFAIL): the gateway never became healthy, or another run holds",
        "78  fix the configuration (EX_CONFIG)",
        "FASHION_BATCH_FAILPOINT",
    ):
        assert text in out


# -- scan ---------------------------------------------------------------------------------------
def test_scan_filters_names_hidden_temp_and_recent(tmp_path):
    for rel in (
        "a.jpg",
        "b.JPEG",
        "sub/c.png",
        "sub/deep/d.WebP",
        "e.bmp",
        "f.gif",
        "g.TIF",
        "h.tiff",
    ):
        write(tmp_path / rel, b"x")
    for rel in (
        ".hidden.jpg",
        ".cache/i.jpg",
        "j.jpg.part",
        "k.jpg~",
        "l.tmp",
        "m.crdownload",
        "notes.txt",
        "~$n.jpg",
        "o.jpg.download",
    ):
        write(tmp_path / rel, b"x")
    write(tmp_path / "fresh.jpg", b"x", age=0.0)
    (tmp_path / "link.jpg").symlink_to(tmp_path / "a.jpg")
    found = scan.scan(tmp_path, settle_seconds=5)
    assert [str(f.path.relative_to(tmp_path)) for f in found.files] == [
        "a.jpg",
        "b.JPEG",
        "e.bmp",
        "f.gif",
        "g.TIF",
        "h.tiff",
        "sub/c.png",
        "sub/deep/d.WebP",
    ]
    assert found.too_recent == [tmp_path / "fresh.jpg"]
    assert tmp_path / "link.jpg" in found.ignored and tmp_path / ".cache" in found.ignored
    assert len(found.ignored) == 10  # 8 bad names + the hidden folder + the symlink
    assert scan.scan(tmp_path, settle_seconds=0).too_recent == []


# -- filing -------------------------------------------------------------------------------------
def test_unique_destination_suffixes(tmp_path):
    assert filing.unique_destination(tmp_path, "a.jpg") == tmp_path / "a.jpg"
    write(tmp_path / "a.jpg", b"1")
    write(tmp_path / "a_1.jpg", b"2")
    assert filing.unique_destination(tmp_path, "a.jpg") == tmp_path / "a_2.jpg"


@pytest.mark.parametrize("force_copy", ["0", "1"])
def test_move_file_never_overwrites(tmp_path, monkeypatch, force_copy):
    monkeypatch.setenv(filing.FORCE_COPY_ENV, force_copy)
    data = jpeg_bytes()
    src = write(tmp_path / "in/a.jpg", data)
    sha = filing.sha256_file(src)
    filing.move_file(src, tmp_path / "out/hat/a.jpg", sha)
    assert not src.exists() and (tmp_path / "out/hat/a.jpg").read_bytes() == data
    other = write(tmp_path / "in/b.jpg", b"other")
    with pytest.raises(FileExistsError):
        filing.move_file(other, tmp_path / "out/hat/a.jpg", filing.sha256_file(other))
    assert other.read_bytes() == b"other" and (tmp_path / "out/hat/a.jpg").read_bytes() == data
    assert all_files(tmp_path / "out") == ["hat/a.jpg"]


def test_copy_path_refuses_a_mismatching_hash(tmp_path, monkeypatch):
    monkeypatch.setenv(filing.FORCE_COPY_ENV, "1")
    src = write(tmp_path / "in/a.jpg", b"abc")
    with pytest.raises(filing.VerifyError):
        filing.move_file(src, tmp_path / "out/a.jpg", "0" * 64)
    assert src.read_bytes() == b"abc" and all_files(tmp_path / "out") == []


def test_recover_move_in_every_state(tmp_path):
    data = b"content"
    sha = __import__("hashlib").sha256(data).hexdigest()
    src, dest = tmp_path / "in/a.jpg", tmp_path / "out/a.jpg"
    # not started, with a half-written temporary copy
    write(src, data)
    write(filing.temp_name(dest), data[:3])
    assert filing.recover_move(src, dest, sha) is filing.MoveOutcome.NOT_MOVED
    assert src.exists() and all_files(tmp_path / "out") == []
    # linked, source not yet removed (same inode)
    os.link(src, dest)
    assert filing.recover_move(src, dest, sha) is filing.MoveOutcome.DONE
    assert not src.exists() and dest.read_bytes() == data
    # complete copy on another filesystem, source not yet removed
    write(src, data)
    assert filing.recover_move(src, dest, sha) is filing.MoveOutcome.DONE
    assert not src.exists()
    # destination taken by a different file: the source stays
    write(src, data)
    dest.write_bytes(b"someone else")
    assert filing.recover_move(src, dest, sha) is filing.MoveOutcome.NOT_MOVED
    assert src.exists()
    dest.unlink()
    src.unlink()
    assert filing.recover_move(src, dest, sha) is filing.MoveOutcome.LOST


def _refuse_unlink(monkeypatch, victim: Path) -> list[str]:
    """Makes ``os.unlink(victim)`` fail with EPERM, as for a ``chattr +i`` file."""
    real = os.unlink
    refused: list[str] = []

    def unlink(path, *args, **kwargs):
        if os.fspath(path) == os.fspath(victim):
            refused.append(os.fspath(path))
            raise PermissionError(1, "Operation not permitted", os.fspath(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    return refused


@pytest.mark.parametrize("force_copy", ["0", "1"])
def test_move_file_takes_the_copy_back_when_the_source_cannot_be_removed(
    tmp_path, monkeypatch, force_copy
):
    monkeypatch.setenv(filing.FORCE_COPY_ENV, force_copy)
    src = write(tmp_path / "in/a.jpg", b"abc")
    refused = _refuse_unlink(monkeypatch, src)
    with pytest.raises(filing.SourceNotRemovableError, match="cannot remove"):
        filing.move_file(src, tmp_path / "out/a.jpg", filing.sha256_file(src))
    assert refused == [str(src)]
    assert src.read_bytes() == b"abc" and all_files(tmp_path / "out") == []


def test_recover_move_keeps_the_source_it_cannot_remove(tmp_path, monkeypatch):
    src = write(tmp_path / "in/a.jpg", b"abc")
    dest = tmp_path / "out/a.jpg"
    dest.parent.mkdir()
    os.link(src, dest)  # killed between link and unlink, on a source that cannot be removed
    _refuse_unlink(monkeypatch, src)
    assert filing.recover_move(src, dest, filing.sha256_file(src)) is (filing.MoveOutcome.NOT_MOVED)
    assert src.read_bytes() == b"abc" and all_files(tmp_path / "out") == []


# -- decide, ledger -----------------------------------------------------------------------------
def test_decide_rules():
    ok = {
        "label": "hat",
        "confidence": 0.8,
        "top_k": [
            {"label": "hat", "probability": 0.8},
            {"label": "dress", "probability": 0.15},
            {"label": "shoes", "probability": 0.05},
            {"label": "x", "probability": 0},
        ],
    }
    d = decide(ok, 0.5)
    assert (d.outcome, d.category, d.confidence) == ("category", "hat", 0.8)
    assert d.top3 == "hat:0.8000;dress:0.1500;shoes:0.0500"
    assert decide(ok, 0.8).outcome == "category" and decide(ok, 0.81).outcome == "uncertain"
    for code in (
        "empty_file",
        "not_an_image",
        "corrupt_image",
        "unsupported_format",
        "image_too_large",
    ):
        assert decide({"error": {"code": code, "message": "m"}}, 0.5).outcome == "quarantine"
    assert decide({"error": {"code": "serving_error", "message": "m"}}, 0.5).outcome == "retry"
    assert decide({"index": 0}, 0.5).error_code == "bad_response"
    for top_k in (["hat"], [{"label": "hat", "probability": None}]):  # malformed, not a crash
        assert decide({**ok, "top_k": top_k}, 0.5).error_code == "bad_response"
    assert decide({**ok, "label": ""}, 0.5).error_code == "bad_response"
    assert folder_name("t-shirt") == "t-shirt" and folder_name("../etc") == "%2E.%2Fetc"
    assert folder_name("_uncertain") == "%5Funcertain"
    assert folder_name("Casual Shoes") == "Casual_Shoes"


def test_ledger_one_active_row_per_path_and_content_change(tmp_path):
    ledger = Ledger(tmp_path / LEDGER_NAME)
    a = ledger.discover("/in/a.jpg", "s1", 3, "r1")
    assert ledger.discover("/in/a.jpg", "s1", 3, "r2").id == a.id
    ledger.classify(
        a.id,
        outcome="category",
        category="hat",
        confidence=0.9,
        top3=None,
        model_version=1,
        error_code=None,
        error_message=None,
        run_id="r2",
    )
    assert ledger.discover("/in/a.jpg", "s1", 3, "r3").state == "classified"
    changed = ledger.discover("/in/a.jpg", "s2", 4, "r3")
    assert (changed.id, changed.state, changed.category) == (a.id, "discovered", None)
    ledger.start_move(a.id, "/out/a.jpg")
    with pytest.raises(ValueError, match="moving"):
        ledger.discover("/in/a.jpg", "s2", 4, "r3")
    ledger.finish(a.id, "filed", "r3")
    again = ledger.discover("/in/a.jpg", "s2", 4, "r4")  # a new file at the same path
    assert again.id != a.id
    assert ledger.journal_mode() == "wal"


def test_ledger_transaction_commits_together_or_not_at_all(tmp_path):
    path = tmp_path / LEDGER_NAME
    ledger = Ledger(path)
    with ledger.transaction():
        a = ledger.discover("/in/a.jpg", "s1", 3, "r1")
        ledger.discover("/in/b.jpg", "s2", 3, "r1")
    with pytest.raises(RuntimeError, match="killed"), ledger.transaction():
        ledger.discover("/in/c.jpg", "s3", 3, "r1")
        raise RuntimeError("killed mid-scan")
    ledger.close()
    # another connection sees the committed pair and nothing of the rolled-back block
    reopened = Ledger(path)
    assert reopened.active_for("/in/a.jpg").id == a.id
    assert reopened.active_for("/in/b.jpg").state == "discovered"
    assert reopened.active_for("/in/c.jpg") is None
    assert reopened.discover("/in/c.jpg", "s3", 3, "r2").state == "discovered"


def test_ledger_keeps_non_utf8_paths(tmp_path):
    ledger = Ledger(tmp_path / LEDGER_NAME)
    name = os.fsdecode(b"/in/bad\xffname.jpg")  # surrogate escape, as os.walk yields it
    row = ledger.discover(name, "s1", 3, "r1")
    assert row.source == name and ledger.active_for(name).id == row.id
    assert ledger.discover(name, "s1", 3, "r2").id == row.id
    ledger.classify(
        row.id,
        outcome="category",
        category="hat",
        confidence=0.9,
        top3=None,
        model_version=1,
        error_code=None,
        error_message=None,
        run_id="r2",
    )
    ledger.add_note(row.id, f"move_failed: {name}", "r2")
    ledger.start_move(row.id, os.fsdecode(b"/out/hat/bad\xffname.jpg"))
    got = ledger.get(row.id)
    assert os.fsencode(got.destination) == b"/out/hat/bad\xffname.jpg"
    assert got.note == "move_failed: /in/bad\\xffname.jpg"
    assert ledger.in_state("moving")[0].source == name


# -- gateway client -----------------------------------------------------------------------------
def test_client_health_timeout_and_retries(gateway):
    waits: list[float] = []
    client = GatewayClient(gateway.url, retries=2, backoff=0.5, sleep=waits.append)
    assert client.wait_healthy(1.0) == {"status": "ok"}
    gateway.healthy = False
    with pytest.raises(GatewayUnavailableError, match="HTTP 503"):
        client.wait_healthy(0.3, poll=0.1)
    gateway.status_override = 503
    with pytest.raises(TransientGatewayError) as exc:
        client.predict_batch([("hat__a.jpg", jpeg_bytes())])
    assert exc.value.code == "serving_unavailable"
    assert gateway.requests == 3 and waits[-2:] == [0.5, 1.0]
    gateway.status_override = None
    gateway.max_images = 1
    with pytest.raises(RejectedRequestError) as rej:
        client.predict_batch([("a.jpg", jpeg_bytes()), ("b.jpg", jpeg_bytes())])
    assert (rej.value.status, rej.value.code) == (413, "too_many_images")
    dead = GatewayClient("http://127.0.0.1:9", retries=1, backoff=0, sleep=waits.append)
    with pytest.raises(TransientGatewayError) as conn:
        dead.predict_batch([("a.jpg", b"x")])
    assert conn.value.code == "connection_error"


def test_client_sends_api_key(gateway):
    gateway.api_key = "secret"
    with pytest.raises(RejectedRequestError) as exc:
        GatewayClient(gateway.url).predict_batch([("hat__a.jpg", jpeg_bytes())])
    assert exc.value.status == 401
    answer = GatewayClient(gateway.url, api_key="secret").predict_batch(
        [("hat__a.jpg", jpeg_bytes())]
    )
    assert answer.model_version == 7 and answer.predictions[0]["label"] == "hat"


# -- runner against the fake --------------------------------------------------------------------
def test_run_files_quarantines_and_reports(gateway, dirs):
    inc = dirs["incoming"]
    photo = jpeg_bytes()
    write(inc / "hat__1.jpg", photo)
    write(inc / "sub/hat__1.jpg", jpeg_bytes((0, 0, 255)))  # same name, other folder
    write(inc / "dress__twin.jpg", photo)  # byte-identical to hat__1.jpg
    write(inc / "low__2.png", photo)
    write(inc / "notes.jpg", b"hello, I am text")
    write(inc / "empty.jpg", b"")
    write(inc / "fresh__3.jpg", photo, age=0.0)
    result = run(settings_for(dirs, gateway.url, settle_seconds=5.0))
    assert result.exit_code == 1  # two quarantined
    assert all_files(dirs["processed"]) == [
        "_uncertain/low__2.png",
        "dress/dress__twin.jpg",
        "hat/hat__1.jpg",
        "hat/hat__1_1.jpg",
    ]
    assert all_files(dirs["quarantine"]) == [
        "empty.jpg",
        "empty.jpg.reason.json",
        "notes.jpg",
        "notes.jpg.reason.json",
    ]
    assert (
        json.loads((dirs["quarantine"] / "notes.jpg.reason.json").read_text())["error_code"]
        == "not_an_image"
    )
    assert all_files(inc) == ["fresh__3.jpg"]
    table = read_csv(result)
    assert list(table.columns) == reports.COLUMNS
    assert len(table) == 6
    assert table["status"].value_counts().to_dict() == {
        "filed": 3,
        "quarantined": 2,
        "uncertain": 1,
    }
    twin = table[table["original_path"].str.endswith("dress__twin.jpg")].iloc[0]
    first = table[table["original_path"] == str(inc / "hat__1.jpg")].iloc[0]
    assert twin["sha256"] == first["sha256"] and twin["size_bytes"] == len(photo)
    assert first["top3"] == "hat:0.9000;dress:0.0500;shoes:0.0500"
    assert first["model_version"] == 7
    # The two hat__1.jpg are in different chunks, filed as their answers arrive (concurrency 2):
    # either may take the plain name. Each is filed once, under its own name, with its own bytes.
    hats = table[table["original_path"].str.endswith("hat__1.jpg")]
    assert sorted(hats["destination"]) == [
        str(dirs["processed"] / "hat/hat__1.jpg"),
        str(dirs["processed"] / "hat/hat__1_1.jpg"),
    ]
    for source, destination in zip(hats["original_path"], hats["destination"], strict=True):
        assert Path(destination).read_bytes() == (
            photo if source == str(inc / "hat__1.jpg") else jpeg_bytes((0, 0, 255))
        )
    notes = table[table["status"] == "quarantined"].sort_values("original_path")
    assert notes["error"].tolist() == ["empty_file: empty", "not_an_image: not an image"]
    summary = json.loads((result.report_dir / reports.SUMMARY_NAME).read_text())
    assert summary["counts_by_category"] == {"_uncertain": 1, "dress": 1, "hat": 2}
    assert summary["counts_by_status"] == {"filed": 3, "quarantined": 2, "uncertain": 1}
    assert summary["model_versions"] == [7] and summary["images_sent"] == 6
    assert summary["confidence"]["count"] == 4 and summary["confidence"]["min"] == 0.3
    page = (result.report_dir / reports.HTML_NAME).read_text()
    assert page.count("<figure>") == 3 and "data:image/jpeg;base64," in page
    assert (result.report_dir / reports.HISTOGRAM_NAME).read_bytes().startswith(b"\x89PNG")
    assert len(list(dirs["logs"].glob("batch-*.log"))) == 1

    # the next run takes the settled file; nothing already classified is re-sent
    sent_before = list(gateway.images_seen)
    second = run(settings_for(dirs, gateway.url))
    assert second.exit_code == 0
    assert gateway.images_seen[len(sent_before) :] == ["fresh__3.jpg"]
    assert read_csv(second)["status"].tolist() == ["filed"]
    assert all_files(inc) == []


def test_gateway_down_leaves_files_and_rerun_files_them(gateway, dirs):
    for i in range(6):
        write(dirs["incoming"] / f"shoes__{i}.jpg", jpeg_bytes((i * 40, 0, 0)))
    gateway.fail_after = 1  # first chunk (2 images) answered, then 503 for good
    first = run(settings_for(dirs, gateway.url, concurrency=1))
    assert first.exit_code == 1
    assert len(all_files(dirs["processed"])) == 2 and len(all_files(dirs["incoming"])) == 4
    table = read_csv(first)
    assert table["status"].value_counts().to_dict() == {"left_in_incoming": 4, "filed": 2}
    assert set(table[table["status"] == "left_in_incoming"]["error"].str.split(":").str[0]) <= {
        "serving_unavailable",
        "gateway_unavailable",
    }
    # circuit breaker: after the failing chunk (1 try + 1 retry) no further request was made
    assert gateway.requests == 3
    gateway.fail_after = None
    second = run(settings_for(dirs, gateway.url))
    assert second.exit_code == 0 and all_files(dirs["incoming"]) == []
    assert all_files(dirs["processed"]) == [f"shoes/shoes__{i}.jpg" for i in range(6)]
    assert read_csv(second)["status"].value_counts().to_dict() == {"filed": 4}


def test_unhealthy_gateway_exits_75_retry_later_touching_nothing(gateway, dirs):
    write(dirs["incoming"] / "hat__1.jpg", jpeg_bytes())
    gateway.healthy = False
    result = run(settings_for(dirs, gateway.url, health_timeout=0.5))
    assert result.exit_code == EXIT_TEMPFAIL == 75 and "not healthy" in result.message
    assert all_files(dirs["incoming"]) == ["hat__1.jpg"]
    assert not dirs["processed"].exists() and not dirs["quarantine"].exists()
    assert gateway.requests == 0


def test_too_many_images_splits_the_chunk(gateway, dirs):
    for i in range(5):
        write(dirs["incoming"] / f"hat__{i}.jpg", jpeg_bytes((0, i * 50, 0)))
    gateway.max_images = 2
    result = run(settings_for(dirs, gateway.url, chunk_size=5))
    assert result.exit_code == 0 and len(all_files(dirs["processed"] / "hat")) == 5
    refused = [n for n, status in gateway.answers if status == 413]
    answered = [n for n, status in gateway.answers if status == 200]
    assert refused and min(refused) > 2 and 5 in refused  # the 5-image chunk was refused
    assert max(answered) <= 2 and sum(answered) == 5  # then split; every photo sent once
    assert sorted(gateway.images_seen) == [f"hat__{i}.jpg" for i in range(5)]


def test_dry_run_moves_nothing(gateway, dirs):
    write(dirs["incoming"] / "hat__1.jpg", jpeg_bytes())
    write(dirs["incoming"] / "bad.jpg", b"text")
    result = run(settings_for(dirs, gateway.url, dry_run=True))
    assert result.exit_code == 1
    assert all_files(dirs["incoming"]) == ["bad.jpg", "hat__1.jpg"]
    assert not dirs["processed"].exists() and not dirs["quarantine"].exists()
    assert not (dirs["results"] / LEDGER_NAME).exists()
    table = read_csv(result).sort_values("original_path")
    assert table["status"].tolist() == ["would_quarantine", "would_file"]
    assert table["destination"].tolist() == [
        str(dirs["quarantine"] / "bad.jpg"),
        str(dirs["processed"] / "hat/hat__1.jpg"),
    ]


def test_failed_move_stays_and_is_filed_later_without_resending(gateway, dirs):
    write(dirs["incoming"] / "hat__1.jpg", jpeg_bytes())
    write(dirs["processed"] / "hat", b"a file where the category folder should be")
    first = run(settings_for(dirs, gateway.url))
    assert first.exit_code == 1 and all_files(dirs["incoming"]) == ["hat__1.jpg"]
    row = read_csv(first).iloc[0]
    assert row["status"] == "left_in_incoming" and row["error"].startswith("move_failed: ")
    (dirs["processed"] / "hat").unlink()
    second = run(settings_for(dirs, gateway.url))
    assert second.exit_code == 0 and all_files(dirs["processed"]) == ["hat/hat__1.jpg"]
    assert gateway.images_seen == ["hat__1.jpg"]  # sent once, filed by the second run


def test_non_utf8_file_names_are_filed_quarantined_and_reported(gateway, dirs):
    inc = os.fsencode(dirs["incoming"])
    for name, data in ((b"hat__bad\xffname.jpg", jpeg_bytes()), (b"bad\xfe.jpg", b"text")):
        fd = os.open(inc + b"/" + name, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, data)
        os.close(fd)
        os.utime(inc + b"/" + name, (time.time() - 60, time.time() - 60))
    write(dirs["incoming"] / "hat__ok.jpg", jpeg_bytes((0, 0, 9)))
    result = run(settings_for(dirs, gateway.url))
    assert result.exit_code == 1  # one quarantined
    assert os.listdir(inc) == []
    assert sorted(os.listdir(os.fsencode(dirs["processed"] / "hat"))) == [
        b"hat__bad\xffname.jpg",
        b"hat__ok.jpg",
    ]
    assert sorted(os.listdir(os.fsencode(dirs["quarantine"]))) == [
        b"bad\xfe.jpg",
        b"bad\xfe.jpg.reason.json",
    ]
    table = read_csv(result).sort_values("original_path")
    assert table["original_path"].tolist() == [
        str(dirs["incoming"] / "bad\\xfe.jpg"),
        str(dirs["incoming"] / "hat__bad\\xffname.jpg"),
        str(dirs["incoming"] / "hat__ok.jpg"),
    ]
    assert table["status"].tolist() == ["quarantined", "filed", "filed"]
    assert table["destination"].tolist()[1] == str(dirs["processed"] / "hat/hat__bad\\xffname.jpg")
    assert sorted(gateway.images_seen) == ["bad\ufffd.jpg", "hat__bad\ufffdname.jpg", "hat__ok.jpg"]
    sidecar = json.loads((dirs["quarantine"] / os.fsdecode(b"bad\xfe.jpg.reason.json")).read_text())
    assert sidecar["original_path"] == str(dirs["incoming"] / "bad\\xfe.jpg")
    log_text = next(dirs["logs"].glob("batch-*.log")).read_text()
    assert "hat__bad\\udcffname.jpg" in log_text and "Logging error" not in log_text
    again = run(settings_for(dirs, gateway.url))  # the rerun does not crash either
    assert again.exit_code == 0 and read_csv(again).empty and len(gateway.images_seen) == 3


def test_a_source_that_cannot_be_removed_is_left_once_not_copied_per_run(
    gateway, dirs, monkeypatch
):
    src = write(dirs["incoming"] / "hat__readonly.jpg", jpeg_bytes())
    write(dirs["incoming"] / "hat__ok.jpg", jpeg_bytes((0, 9, 0)))
    with monkeypatch.context() as m:
        _refuse_unlink(m, src)
        for _ in range(2):
            result = run(settings_for(dirs, gateway.url))
            assert result.exit_code == 1
            assert all_files(dirs["incoming"]) == ["hat__readonly.jpg"]
            assert all_files(dirs["processed"]) == ["hat/hat__ok.jpg"]  # no copy, no temp
            row = read_csv(result).set_index("original_path").loc[str(src)]
            assert row["status"] == "left_in_incoming" and row["destination"] == ""
            assert (
                row["error"].startswith("move_failed: ")
                and "cannot remove" in row["error"]
                and "Operation not permitted" in row["error"]
            )
    ledger = Ledger(dirs["results"] / LEDGER_NAME)
    assert [r.state for r in ledger.in_state("classified")] == ["classified"]
    ledger.close()
    third = run(settings_for(dirs, gateway.url))  # the operator lifted the protection
    assert third.exit_code == 0 and all_files(dirs["incoming"]) == []
    assert all_files(dirs["processed"]) == ["hat/hat__ok.jpg", "hat/hat__readonly.jpg"]
    assert sorted(gateway.images_seen) == ["hat__ok.jpg", "hat__readonly.jpg"]  # sent once


def test_progress_line_counts_what_happened(gateway, dirs, caplog):
    for i in range(6):
        write(dirs["incoming"] / f"shoes__{i}.jpg", jpeg_bytes((i * 40, 0, 0)))
    write(dirs["incoming"] / "junk.jpg", b"text")
    gateway.fail_after = 2  # two chunks answered, then 503 for good
    caplog.set_level("INFO", logger="batch")
    result = run(settings_for(dirs, gateway.url, concurrency=1, progress_every=3600.0))
    assert result.exit_code == 1
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    assert lines == ["progress: 7/7 handled: 3 filed, 1 quarantined, 3 left in incoming for retry"]
    assert len(all_files(dirs["processed"])) == 3 and len(all_files(dirs["incoming"])) == 3


def test_a_second_concurrent_run_exits_75_retry_later(gateway, dirs):
    write(dirs["incoming"] / "hat__1.jpg", jpeg_bytes())
    dirs["results"].mkdir()
    with FileLock(dirs["results"] / ".batch.lock", timeout=0):
        result = run(settings_for(dirs, gateway.url))
    assert result.exit_code == EXIT_TEMPFAIL == 75
    lock = dirs["results"] / ".batch.lock"
    assert result.message == f"another batch run holds {lock}; retry later"
    assert all_files(dirs["incoming"]) == ["hat__1.jpg"] and gateway.requests == 0
    # Released: the next run goes ahead.
    assert run(settings_for(dirs, gateway.url)).exit_code == 0


def test_bad_configuration_exits_78(gateway, dirs):
    result = run(settings_for(dirs, gateway.url, processed=dirs["incoming"] / "out"))
    assert result.exit_code == EXIT_CONFIG == 78 and "inside --incoming" in result.message


def test_report_preview_refuses_a_decompression_bomb_before_decoding(tmp_path):
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    bomb = tmp_path / "bomb.png"  # header declares 12000 x 12000 RGB, no pixel data
    bomb.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 12000, 12000, 8, 2, 0, 0, 0))
        + chunk(b"IEND", b"")
    )
    assert "no preview" in reports._thumbnail_tag(str(bomb), "bomb.png")
    good = tmp_path / "ok.png"
    Image.new("RGB", (300, 200), (200, 10, 10)).save(good)
    assert "data:image/jpeg;base64," in reports._thumbnail_tag(str(good), "ok.png")
