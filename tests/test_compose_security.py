"""The production stack as a network: TF Serving reachable only through the gateway, nobody root.

Read from `docker-compose config` (the file as Docker would run it, overrides merged), so a port or
network that the YAML sets indirectly is seen too.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

pytestmark = pytest.mark.unit


def _config(*files: str) -> dict:
    tool = shutil.which("docker-compose") or shutil.which(
        "docker-compose", path=str(Path(sys.executable).parent)
    )
    assert tool, "docker-compose is not installed: run `make install`"
    args = [tool]
    for name in files:
        args += ["-f", str(ROOT / name)]
    result = subprocess.run(
        [*args, "config"], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def _published(service: dict) -> list[tuple[str, int]]:
    """(host address, host port) of each published port; "" = every interface."""
    found = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            found.append((port.get("host_ip", ""), int(port["published"])))
            continue
        match = re.fullmatch(r"(?:(.+):)?(\d+):(\d+)(?:/\w+)?", str(port))
        assert match, f"unreadable port {port!r}"
        found.append((match.group(1) or "", int(match.group(2))))
    return found


def test_model_server_is_only_on_an_internal_network_shared_with_the_gateway():
    config = _config("docker-compose.yml")
    services, networks = config["services"], config["networks"]
    serving, gateway = services["serving"], services["gateway"]
    assert _published(serving) == []
    assert set(serving["networks"]) == {"model"}
    assert networks["model"]["internal"] is True
    assert "model" in gateway["networks"]
    # Nothing but the gateway can reach it.
    on_model = sorted(name for name, s in services.items() if "model" in s.get("networks", {}))
    assert on_model == ["gateway", "serving"]
    assert gateway["environment"]["SERVING_GRPC_ADDRESS"] == "serving:8500"
    # The gateway is the published entry point.
    assert _published(gateway) == [("", 8080)]


def test_debugging_override_publishes_the_model_server_on_loopback_only():
    text = (ROOT / "docker-compose.debug.yml").read_text()
    assert text.startswith("# DEBUGGING ONLY")
    serving = _config("docker-compose.yml", "docker-compose.debug.yml")["services"]["serving"]
    published = _published(serving)
    assert published == [("127.0.0.1", 8501)]
    assert all(ipaddress.ip_address(host).is_loopback for host, _ in published)


def test_no_container_runs_as_root():
    services = _config("docker-compose.yml")["services"]
    for name, service in services.items():
        user = str(service.get("user", ""))
        uid = user.split(":")[0]
        assert uid.isdigit() and int(uid) != 0, f"{name} runs as {user or 'the image default'}"
    for dockerfile in ("Dockerfile.serving", "Dockerfile.gateway"):
        users = re.findall(r"^USER\s+(\S+)", (ROOT / dockerfile).read_text(), re.MULTILINE)
        assert users and users[-1].split(":")[0] not in ("0", "root"), dockerfile


def test_build_context_leaves_out_local_state():
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", "data", "artifacts", "results", "logs", ".git"} <= ignored
    # ...but not what the Dockerfiles copy.
    for dockerfile in ("Dockerfile.serving", "Dockerfile.gateway"):
        for source in re.findall(r"^COPY\s+(?!--from)(\S+)", (ROOT / dockerfile).read_text(), re.M):
            assert source.split("/")[0] not in ignored, (dockerfile, source)


def test_licence_file_matches_the_declared_licence():
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text
    assert 'license = "Apache-2.0"' in (ROOT / "pyproject.toml").read_text()
