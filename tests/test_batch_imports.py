"""The nightly job's package promise: HTTP only, so it never loads gRPC, TensorFlow or server code.

A fresh interpreter imports every module of ``batch`` and runs its command-line paths (``--help``,
``--version``, ``history``, a run that stops at the health check), then lists what got loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.integration

FORBIDDEN = ("grpc", "tensorflow", "keras", "serving", "serving_api", "gateway", "devtools")

_PROBE = r"""
import contextlib, io, json, pkgutil, sys, tempfile, importlib
from pathlib import Path
import batch
modules = [m.name for m in pkgutil.walk_packages(batch.__path__, "batch.")]
for name in modules:
    importlib.import_module(name)
from batch.__main__ import main
codes = {}
def call(key, argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            codes[key] = main(argv)
        except SystemExit as exc:
            codes[key] = exc.code
call("help", ["run", "--help"])
call("version", ["--version"])
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    (tmp / "in").mkdir()
    (tmp / "in" / "a.jpg").write_bytes(b"x")
    folders = [f"--{n}={tmp / n}" for n in ("processed", "quarantine", "results", "logs")]
    call("run", ["run", f"--incoming={tmp / 'in'}", *folders, "--gateway=http://127.0.0.1:9",
                 "--health-timeout=0.2", "--settle-seconds=0"])
    call("history", ["history", f"--results={tmp / 'results'}"])
    call("feedback_help", ["feedback", "--help"])
loaded = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps({"modules": modules, "codes": codes, "loaded": loaded}))
"""


def test_batch_imports_neither_grpc_nor_serving_code():
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(report["modules"]) >= 15  # every module was imported, not just the package
    assert report["codes"]["help"] == 0 and report["codes"]["version"] == 0
    assert report["codes"]["run"] == 75  # got as far as the health check, which nobody answers
    assert report["codes"]["feedback_help"] == 0
    assert [m for m in report["loaded"] if m in FORBIDDEN] == []


def test_no_batch_module_imports_them_even_lazily():
    """Imports inside functions count too: the probe above only runs the paths it knows."""
    import ast

    found = []
    for path in sorted((ROOT / "batch").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            found += [
                f"{path.relative_to(ROOT)}:{node.lineno} {name}"
                for name in names
                if name.split(".")[0] in FORBIDDEN
            ]
    assert found == []
