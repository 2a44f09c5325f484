"""The model manager's lifecycle rules, with a fake loader (no TensorFlow, no server): which
versions load, when old ones unload, how failed loads are retried, and how requests resolve.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import grpc
import pytest

from serving import manager as manager_module
from serving.config import ModelConfig, VersionPolicy
from serving.errors import LoadError, ServingError
from serving.manager import ModelManager, State


class FakeServable:
    def __init__(self, name: str, version: int, path: str) -> None:
        self.name, self.version, self.path = name, version, path


class FakeLoader:
    """Loads a folder unless it contains a file named BROKEN; records every attempt."""

    def __init__(self) -> None:
        self.attempts: list[int] = []

    def __call__(self, name: str, version: int, path: str) -> FakeServable:
        self.attempts.append(version)
        if (Path(path) / "BROKEN").exists():
            raise LoadError(f"version {version} is broken")
        if (Path(path) / "CRASH").exists():
            raise KeyError("an unexpected error type")
        return FakeServable(name, version, path)


def _publish(base: Path, version: int, broken: bool = False) -> Path:
    folder = base / str(version)
    folder.mkdir(parents=True)
    (folder / ("BROKEN" if broken else "saved_model.pb")).write_text("x")
    return folder


@pytest.fixture
def setup(tmp_path):
    loader = FakeLoader()
    # A long back-off: an unchanged broken folder is never retried within a test.
    manager = ModelManager(loader=loader, warmup=False, retry_backoff_seconds=3600)
    return tmp_path / "m", loader, manager


def test_latest_policy_swaps_only_after_the_new_version_is_available(setup):
    base, loader, manager = setup
    _publish(base, 1)
    manager.configure([ModelConfig("m", str(base))])
    manager.poll()
    assert manager.handle("m").servable.version == 1
    _publish(base, 2, broken=True)
    manager.poll()
    # Version 2 failed: never served, version 1 keeps serving.
    assert manager.handle("m").servable.version == 1
    assert [(v, s) for v, s, _ in manager.status("m")] == [(2, State.END), (1, State.AVAILABLE)]
    assert manager.status("m", 2)[0][2] == "version 2 is broken"
    manager.poll()
    assert loader.attempts == [1, 2]  # unchanged folder: not retried before its back-off
    (base / "2" / "BROKEN").unlink()
    (base / "2" / "saved_model.pb").write_text("x")
    manager.poll()  # folder changed: retried at once
    assert loader.attempts == [1, 2, 2]
    assert manager.handle("m").servable.version == 2
    assert manager.status("m") == [(2, State.AVAILABLE, ""), (1, State.END, "")]


def test_a_handle_taken_before_an_unload_stays_usable(setup):
    base, _loader, manager = setup
    _publish(base, 1)
    manager.configure([ModelConfig("m", str(base))])
    manager.poll()
    held = manager.handle("m")
    _publish(base, 2)
    manager.poll()
    assert held.servable.version == 1 and manager.handle("m").servable.version == 2


def test_specific_all_and_labels(setup):
    base, _loader, manager = setup
    for version in (1, 2, 3):
        _publish(base, version)
    specific = ModelConfig(
        "m",
        str(base),
        VersionPolicy("specific", versions=frozenset({1, 3})),
        labels={"stable": 1, "canary": 3, "gone": 2},
    )
    manager.configure([specific])
    manager.poll()
    assert manager.handle("m").servable.version == 3
    assert manager.handle("m", version=1).servable.version == 1
    assert manager.handle("m", label="stable").servable.version == 1
    assert manager.handle("m", label="canary").servable.version == 3
    for kwargs, code in (
        ({"version": 2}, grpc.StatusCode.NOT_FOUND),
        ({"label": "gone"}, grpc.StatusCode.NOT_FOUND),
        ({"label": "beta"}, grpc.StatusCode.INVALID_ARGUMENT),
    ):
        with pytest.raises(ServingError) as exc:
            manager.handle("m", **kwargs)
        assert exc.value.code == code
    manager.configure([ModelConfig("m", str(base), VersionPolicy("all"))])
    manager.poll()
    assert [v for v, s, _ in manager.status("m") if s == State.AVAILABLE] == [3, 2, 1]
    # Rollback: pin version 1; the others unload once it is available (it already is).
    manager.configure(
        [ModelConfig("m", str(base), VersionPolicy("specific", versions=frozenset({1})))]
    )
    manager.poll()
    assert manager.handle("m").servable.version == 1
    assert [v for v, s, _ in manager.status("m") if s == State.AVAILABLE] == [1]


def test_unknown_model_and_removed_model(setup):
    base, _loader, manager = setup
    _publish(base, 1)
    manager.configure([ModelConfig("m", str(base))])
    manager.poll()
    with pytest.raises(ServingError, match=r"Servable not found for request: Latest\(x\)"):
        manager.handle("x")
    with pytest.raises(ServingError, match="Could not find any versions of model x"):
        manager.status("x")
    manager.configure([])
    with pytest.raises(ServingError) as exc:
        manager.handle("m")
    assert exc.value.code == grpc.StatusCode.NOT_FOUND


def test_deleted_version_folder_is_unloaded(setup):
    base, _loader, manager = setup
    _publish(base, 1)
    _publish(base, 2)
    manager.configure([ModelConfig("m", str(base), VersionPolicy("all"))])
    manager.poll()
    for child in (base / "2").iterdir():
        child.unlink()
    (base / "2").rmdir()
    manager.poll()
    assert manager.handle("m").servable.version == 1
    assert manager.status("m", 2) == [(2, State.END, "")]


def test_an_unexpected_loader_error_is_a_failed_load_not_a_stuck_version(setup):
    base, _loader, manager = setup
    _publish(base, 1)
    folder = _publish(base, 2)
    (folder / "CRASH").write_text("x")
    manager.configure([ModelConfig("m", str(base), VersionPolicy("all"))])
    manager.poll()
    assert manager.status("m") == [
        (2, State.END, "KeyError: 'an unexpected error type'"),
        (1, State.AVAILABLE, ""),
    ]


def test_status_is_loading_while_a_version_loads(tmp_path):
    started, release = threading.Event(), threading.Event()

    def slow_loader(name: str, version: int, path: str) -> FakeServable:
        started.set()
        assert release.wait(timeout=30)
        return FakeServable(name, version, path)

    base = tmp_path / "m"
    _publish(base, 1)
    manager = ModelManager(loader=slow_loader, warmup=False)
    manager.configure([ModelConfig("m", str(base))])
    poller = threading.Thread(target=manager.poll)
    poller.start()
    assert started.wait(timeout=30)
    assert manager.status("m") == [(1, State.LOADING, "")]
    with pytest.raises(ServingError) as exc:
        manager.handle("m")
    assert exc.value.code == grpc.StatusCode.NOT_FOUND
    release.set()
    poller.join(timeout=30)
    assert manager.status("m") == [(1, State.AVAILABLE, "")]


def _no_versions_warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.getMessage().startswith("No versions")
    ]


def test_nothing_to_serve_is_warned_at_the_first_poll_then_rate_limited(setup, caplog, monkeypatch):
    base, _loader, manager = setup
    manager.configure([ModelConfig("m", str(base))])
    caplog.set_level(logging.WARNING, logger="serving.manager")
    manager.poll()
    manager.poll()
    [missing] = _no_versions_warnings(caplog)
    assert missing.startswith(f"No versions of servable m found under base path {base}: ")
    assert "does not exist" in missing

    caplog.clear()
    (base / "tmp").mkdir(parents=True)  # exists now, but no integer-named folder
    monkeypatch.setattr(manager_module, "NO_VERSIONS_WARNING_SECONDS", 0.0)
    manager.poll()
    [empty] = _no_versions_warnings(caplog)
    assert "no folder named by an integer" in empty and str(base / "1") in empty

    caplog.clear()
    monkeypatch.setattr(manager_module, "NO_VERSIONS_WARNING_SECONDS", 3600.0)
    _publish(base, 1)
    manager.poll()
    assert _no_versions_warnings(caplog) == []
    (base / "1" / "saved_model.pb").unlink()
    (base / "1").rmdir()
    manager.poll()  # versions seen since the last warning: warned again at once
    assert len(_no_versions_warnings(caplog)) == 1
