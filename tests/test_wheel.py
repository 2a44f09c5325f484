"""The installable package: the built wheel, installed alone, runs its commands and holds its files.

The wheel is built from the tracked files, installed with ``--no-deps`` into a fresh venv that sees
the development venv's packages (so no download), and run from another folder, so nothing can
come from the checkout: a module or data file missing from the wheel fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.integration

PACKAGES = (
    "buildinfo",
    "contract",
    "preprocessing",
    "serving_api",
    "training",
    "export",
    "serving",
    "gateway",
    "batch",
    "bench",
)
COMMANDS = (
    "fashion-serving",
    "fashion-gateway",
    "fashion-batch",
    "fashion-train",
    "fashion-export",
)


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=600, check=False, **kwargs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    tracked = _run(["git", "ls-files", "-z"], cwd=ROOT).stdout.split("\0")
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    built = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp / "dist"),
            str(source),
        ]
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("fashion_classifier-*.whl")
    venv = tmp / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    # See the development venv's packages (Flask, TF ...) without copying or downloading them.
    (Path(site.stdout.strip()) / "dev-venv.pth").write_text(sysconfig.get_path("purelib") + "\n")
    install = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ]
    )
    assert install.returncode == 0, install.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {"wheel": wheel, "venv": venv, "env": env, "cwd": tmp}


def test_wheel_holds_every_file_the_programs_read(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    tracked = _run(["git", "ls-files"], cwd=ROOT).stdout.split()
    wanted = [
        name
        for name in tracked
        if name.split("/")[0] in PACKAGES and not name.endswith((".py", "README.md"))
    ]
    assert {"serving/models.config", "batch/schedule/crontab", "gateway/static/index.html"} <= set(
        wanted
    )
    assert [name for name in wanted if name not in names] == []
    assert not any(name.startswith(("tests/", "devtools/", "models/")) for name in names)
    assert any(name.endswith("licenses/LICENSE") for name in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(installed["wheel"]).read(entry_points).decode()
    assert all(f"{command} = " in text for command in COMMANDS)


def test_installed_commands_run_from_the_wheel(installed):
    bin_dir = installed["venv"] / "bin"
    run = {"env": installed["env"], "cwd": installed["cwd"]}
    where = _run(
        [
            str(bin_dir / "python"),
            "-c",
            "import gateway, batch, contract; "
            "print(gateway.__file__, batch.__file__, contract.__file__)",
        ],
        **run,
    )
    assert where.returncode == 0, where.stderr
    assert all(path.startswith(str(installed["venv"])) for path in where.stdout.split())
    version = _run([str(bin_dir / "fashion-gateway"), "--version"], **run)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("fashion-gateway 0.1.0 (commit ")
    batch_help = _run([str(bin_dir / "fashion-batch"), "run", "--help"], **run)
    assert batch_help.returncode == 0, batch_help.stderr
    assert "75  retry later" in batch_help.stdout
    for command in ("fashion-serving", "fashion-batch", "fashion-train", "fashion-export"):
        shown = _run([str(bin_dir / command), "--version"], **run)
        assert shown.returncode == 0, (command, shown.stderr[-2000:])
        assert shown.stdout.startswith(f"{command} 0.1.0"), shown.stdout
