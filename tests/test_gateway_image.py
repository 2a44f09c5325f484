"""Dockerfile.gateway's claim, checked without Docker: the gateway runs on proto-only TensorFlow.

The test lays out what the image contains: the generated modules copied by
``gateway.collect_protos`` (the builder stage), the distributions of gateway/requirements.txt with
their dependencies (links into this venv, resolved from their metadata like pip would), and the
gateway's code. A fresh interpreter without site-packages then serves a prediction from the real
local model server. ``tensorflow`` there is a namespace of generated modules only.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from conftest import ROOT
from packaging.requirements import Requirement
from PIL import Image
from support import tiny_models

import preprocessing


def _closure(names: list[str]) -> set[str]:
    """Distribution names required by ``names``, transitively (markers evaluated, no extras)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        for text in metadata.distribution(name).requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def _link_distribution(name: str, site: Path) -> None:
    """Link a distribution's top-level packages and its dist-info into ``site``."""
    dist = metadata.distribution(name)
    for file in dist.files or []:
        parts = Path(str(file)).parts
        if ".." in parts or parts[0] in ("bin", "__pycache__"):
            continue
        # google/ is a namespace several distributions share: link google/<package> instead.
        rel = Path(*parts[:2]) if parts[0] == "google" and len(parts) > 2 else Path(parts[0])
        target = site / rel
        if not target.is_symlink() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(Path(dist.locate_file(rel)))


SCRIPT = """
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from gateway.app import create_app
from gateway.settings import Settings
app = create_app(Settings.from_env({}, grpc_address=sys.argv[3]))
response = app.test_client().post("/predict", data=open(sys.argv[4], "rb").read(),
                                  content_type="image/png")
print(json.dumps({
    "status": response.status_code, "label": response.json["prediction"]["label"],
    "tensorflow_file": getattr(sys.modules.get("tensorflow"), "__file__", None),
    "tensor_pb2": sys.modules["tensorflow.core.framework.tensor_pb2"].__file__,
    "site_packages": [p for p in sys.path if "site-packages" in p],
}))
"""


def test_gateway_runs_with_only_the_collected_protos(tiny_server, tmp_path):
    site, app = tmp_path / "site", tmp_path / "app"
    app.mkdir()
    subprocess.run(
        [sys.executable, "-m", "gateway.collect_protos", str(site)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    copied = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.py"))
    assert "tensorflow/core/framework/tensor_pb2.py" in copied
    assert "tensorflow_serving/apis/prediction_service_pb2_grpc.py" in copied
    assert "tensorflow/__init__.py" not in copied
    assert all(p.endswith(("_pb2.py", "_pb2_grpc.py", "__init__.py")) for p in copied)
    wanted = [
        Requirement(line).name
        for line in (ROOT / "gateway/requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    distributions = _closure(wanted)
    assert "tensorflow" not in distributions and "tensorflow-serving-api" not in distributions
    for name in sorted(distributions):
        _link_distribution(name, site)
    for package in ("buildinfo", "contract", "gateway", "preprocessing", "serving_api"):
        (app / package).symlink_to(ROOT / package)
    image = tmp_path / "red.png"
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (220, 20, 20)).save(buffer, "PNG")
    image.write_bytes(buffer.getvalue())

    result = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            SCRIPT,
            str(app),
            str(site),
            tiny_server.grpc_address,
            str(image),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == 200
    probabilities = tiny_models.expected(preprocessing.decode(image.read_bytes(), (8, 8))[None], 2)
    assert report["label"] == tiny_models.labels_for(2)[int(probabilities.argmax())]
    assert report["tensorflow_file"] is None  # a namespace, not the runtime's __init__
    assert report["tensor_pb2"].startswith(str(site))
    assert report["site_packages"] == []
