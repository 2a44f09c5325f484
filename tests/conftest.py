"""Shared fixtures. Serving fixtures first (owner: serving); others add theirs below."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
"""The repository root; test files import it (``from conftest import ROOT``), never their own."""
if str(ROOT) not in sys.path:  # the repo's packages, also when pytest is run from elsewhere
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED = ROOT.parent / "shared"
"""``../shared`` beside the checkout (data set and weights, as CI lays them out)."""
DATA_DIR = Path(os.environ.get("FASHION_DATA_DIR") or SHARED / "data" / "clothing-dataset-small")
"""The real photos: ``$FASHION_DATA_DIR``, else ``../shared/data/clothing-dataset-small``."""

TIERS = ("unit", "integration", "e2e")
"""`make test-fast` runs unit and integration, `make test` all three (pyproject's markers)."""

TIER_OF_FILE = {
    "test_batch_abstain.py": "integration",
    "test_batch_integration.py": "integration",
    "test_batch_schedule.py": "unit",
    "test_batch_unit.py": "unit",
    "test_bench.py": "e2e",
    "test_bench_baseline.py": "e2e",
    "test_calibration.py": "unit",
    "test_contract.py": "unit",
    "test_deploy_files.py": "unit",
    "test_deploy_k8s.py": "integration",
    "test_export.py": "integration",
    "test_export_abstain.py": "integration",
    "test_gateway_abstain.py": "e2e",
    "test_gateway_faults.py": "integration",
    "test_gateway_image.py": "integration",
    "test_gateway_release.py": "e2e",
    "test_gateway_replicas.py": "integration",
    "test_gateway_served.py": "integration",
    "test_gateway_unit.py": "unit",
    "test_make_run.py": "e2e",
    "test_make_serve_ports.py": "integration",
    "test_preprocessing.py": "unit",
    "test_serving_api.py": "unit",
    "test_serving_contract.py": "integration",
    "test_serving_local.py": "integration",
    "test_serving_manager.py": "integration",
    "test_serving_release.py": "e2e",
    "test_serving_units.py": "unit",
    "test_sources.py": "unit",
    "test_training.py": "e2e",
    "test_training_layouts.py": "unit",
}
"""The tier of a test file's tests that carry none themselves (a ``pytestmark`` or a decorator
wins). A test file in neither place fails collection: every test has a tier."""


def pytest_collection_modifyitems(config, items):
    """Give every test its tier marker, so ``-m "unit or integration"`` selects exactly.

    Raises:
        pytest.UsageError: a test has no tier marker and its file is not in TIER_OF_FILE.
    """
    missing = set()
    for item in items:
        if any(item.get_closest_marker(tier) for tier in TIERS):
            continue
        tier = TIER_OF_FILE.get(item.path.name)
        if tier is None:
            missing.add(item.path.name)
        else:
            item.add_marker(getattr(pytest.mark, tier))
    if missing:
        raise pytest.UsageError(
            f"tests without a tier (unit, integration or e2e): {sorted(missing)}; add "
            "`pytestmark = pytest.mark.<tier>` or an entry in TIER_OF_FILE in tests/conftest.py"
        )


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
