"""One source of pinned versions: the locks in requirements/, and the image lists derived from them.

``make lock`` writes them with uv from pyproject.toml; ``make install`` (so CI) installs with the
all-groups lock as constraints, and Dockerfile.gateway installs the gateway list (derived from the
gateway lock by one command, without tensorflow*) and the batch lock.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REQUIREMENTS = ROOT / "requirements"


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _makefile_command(target: str) -> str:
    """The uv command of a `make image-requirements` line writing ``target``."""
    text = (ROOT / "Makefile").read_text()
    options = re.search(r"^UV_COMPILE = \$\(BIN\)/uv pip compile (.*)$", text, re.M).group(1)
    line = next(
        line.strip()
        for line in text.splitlines()
        if line.strip().startswith("$(UV_COMPILE)") and line.strip().endswith(f"-o {target}")
    )
    return line.replace("$(UV_COMPILE)", options)


@pytest.mark.unit
def test_every_declared_dependency_is_pinned_in_the_lock_within_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"]]
    for items in project["optional-dependencies"].values():
        declared += [i for i in items if not i.startswith("fashion-classifier")]
    pins = _pins(REQUIREMENTS / "all.txt")
    for text in declared:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements/all.txt: run make lock"
        assert requirement.specifier.contains(pins[name]), (text, pins[name])
    for group in ("gateway.txt", "batch.txt"):
        for name, version in _pins(REQUIREMENTS / group).items():
            assert pins[name] == version, (group, name)  # the group locks agree with all.txt


@pytest.mark.unit
def test_images_install_from_the_locks_only():
    gateway = _pins(ROOT / "gateway" / "requirements.txt")
    assert not [name for name in gateway if name.startswith("tensorflow")]
    assert {"flask", "gunicorn", "grpcio", "protobuf", "pillow", "numpy"} <= set(gateway)
    lock = _pins(REQUIREMENTS / "gateway.txt")
    assert all(lock[name] == version for name, version in gateway.items())
    dockerfile = (ROOT / "Dockerfile.gateway").read_text()
    pip_lines = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert pip_lines and all(" -r " in line or " -c " in line for line in pip_lines), pip_lines
    assert not re.search(r"\b[a-z][\w-]*==\d", dockerfile)  # no version pinned inline
    assert "-c requirements/all.txt" in (ROOT / "Makefile").read_text()


@pytest.mark.integration
def test_gateway_image_list_is_the_one_command_derivation_of_the_gateway_lock(tmp_path):
    uv = Path(sys.executable).parent / "uv"
    command = _makefile_command("gateway/requirements.txt").split()
    out = tmp_path / "requirements.txt"
    command[command.index("-o") + 1] = str(out)
    result = subprocess.run(
        [str(uv), "pip", "compile", *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert _pins(out) == _pins(ROOT / "gateway" / "requirements.txt")
