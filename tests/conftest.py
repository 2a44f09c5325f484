"""Shared fixtures. Serving fixtures first (owner: serving); others add theirs below."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the repo's packages, also when pytest is run from elsewhere
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def tiny_model_base(tmp_path_factory) -> Path:
    """A model base path with tiny versions 1 and 2 (see tests/support/tiny_models.py).

    Exported in a child process: the test process never loads TensorFlow.
    """
    from support.tiny_models import export_in_subprocess

    base = tmp_path_factory.mktemp("tiny") / "fashion"
    export_in_subprocess(base, [1, 2], warmup=True)
    return base


@pytest.fixture(scope="session")
def tiny_server(tiny_model_base, tmp_path_factory):
    """A local ``python -m serving`` (gRPC + REST) serving ``fashion`` = tiny version 2."""
    from serving.launcher import ModelServerProcess

    log = tmp_path_factory.mktemp("logs") / "tiny_server.log"
    with ModelServerProcess(
        ["--model_name=fashion", f"--model_base_path={tiny_model_base}"], rest=True, log_path=log
    ) as server:
        yield server


@pytest.fixture
def dirs(tmp_path):
    """The nightly job's folders under ``tmp_path``: incoming (created), processed, quarantine,
    results, logs (created by the job)."""
    d = {
        name: tmp_path / name for name in ("incoming", "processed", "quarantine", "results", "logs")
    }
    d["incoming"].mkdir()
    return d


def _require(binary: str, package: str) -> None:
    """Skip outside CI when a Debian program is missing; in CI (CI=true) fail instead."""
    import shutil

    if shutil.which(binary) is None:
        message = f"{binary} is not installed (apt-get install -y {package}; make install does it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def redis_server(tmp_path):
    """A real Debian ``redis-server`` on a free port (owner: web). Tests may stop and restart it."""
    _require("redis-server", "redis-server")
    from support.redis_server import RedisServer

    with RedisServer(tmp_path) as server:
        yield server
