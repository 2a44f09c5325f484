"""The gateway against the real local model server (``python -m serving``) on tiny SavedModels.

Two versions of a tiny model (tests/support/tiny_models.py; input uint8 [-1, 8, 8, 3], labels
``v<version>-c<i>``) are served with labels ``stable`` -> 1 and ``canary`` -> 2. Expected labels
and probabilities are computed in NumPy from the same shared decode, so every assertion is exact.
Every odd input is generated here with Pillow.
"""

from __future__ import annotations

import contextlib
import io
import json
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from PIL import Image
from support import tiny_models

import preprocessing
from gateway.app import create_app
from gateway.launcher import GatewayProcess
from gateway.settings import Settings
from serving.launcher import ModelServerProcess

LATEST = 2
CONFIG = """
model_config_list {
  config {
    name: "fashion"
    base_path: "%s"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
}
"""


@pytest.fixture(scope="module")
def server(tiny_model_base, tmp_path_factory):
    """Both tiny versions served at once, with labels (the shared tiny_server has only v2)."""
    folder = tmp_path_factory.mktemp("gateway-serving")
    config = folder / "models.config"
    config.write_text(CONFIG % tiny_model_base)
    with ModelServerProcess(
        ["--model_config_file", str(config)],
        wait_for_model="fashion",
        log_path=folder / "serving.log",
    ) as process:
        yield process


def _settings(server, **overrides) -> Settings:
    return Settings.from_env({}, grpc_address=server.grpc_address, **overrides)


@pytest.fixture(scope="module")
def client(server):
    return create_app(
        _settings(server, max_body_bytes=2_000_000, max_batch_images=6, max_image_pixels=1_000_000)
    ).test_client()


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _gradient(size=(40, 30), mode="RGB") -> Image.Image:
    x = np.linspace(0, 255, size[0], dtype=np.uint8)
    rgb = np.stack(
        [
            np.tile(x, (size[1], 1)),
            np.full((size[1], size[0]), 90, np.uint8),
            np.tile(x[::-1], (size[1], 1)),
        ],
        axis=-1,
    )
    return Image.fromarray(rgb).convert(mode)


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    return _encode(_gradient(), "JPEG", exif=exif.tobytes())


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (20, 20), c) for c in ((250, 10, 10), (10, 10, 250))]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def _rgba() -> bytes:
    image = _gradient().convert("RGBA")
    image.putalpha(Image.new("L", image.size, 60))
    return _encode(image, "PNG")


GOOD = {
    "cmyk.jpg": lambda: _encode(Image.new("CMYK", (30, 20), (0, 180, 40, 10)), "JPEG"),
    "gray.png": lambda: _encode(_gradient(mode="L"), "PNG"),
    "palette.png": lambda: _encode(_gradient(mode="P"), "PNG"),
    "rgba.png": _rgba,
    "exif.jpg": _exif_rotated,
    "anim.gif": _animated_gif,
    "photo.webp": lambda: _encode(_gradient(), "WEBP"),
    "photo.bmp": lambda: _encode(_gradient(), "BMP"),
    "photo.tif": lambda: _encode(_gradient(), "TIFF"),
    "tiny.png": lambda: _encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"),
}


def _huge_png_header() -> bytes:
    """A valid 1x1 PNG whose IHDR is rewritten to declare 50000 x 50000 pixels (CRC fixed)."""
    data = bytearray(_encode(Image.new("RGB", (1, 1)), "PNG"))
    ihdr = data[12:29]  # chunk type + 13 bytes of IHDR data
    ihdr[4:12] = struct.pack(">II", 50_000, 50_000)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def _truncated_jpeg() -> bytes:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _encode(Image.fromarray(noise), "JPEG", quality=95)
    return data[: len(data) // 2]


BAD = {  # filename: (bytes factory, HTTP status, error code)
    "truncated.jpg": (_truncated_jpeg, 400, "corrupt_image"),
    "empty.jpg": (lambda: b"", 400, "empty_file"),
    "notes.jpg": (lambda: b"this is a text file, not a photo\n" * 20, 400, "not_an_image"),
    "photo.heic": (
        lambda: b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64,
        415,
        "unsupported_format",
    ),
    "huge.png": (_huge_png_header, 413, "image_too_large"),
    # Pillow reads these, but the gateway opens only the six formats its 415 message names
    "icon.ico": (lambda: _encode(Image.new("RGB", (16, 16)), "ICO"), 415, "unsupported_format"),
    "scan.eps": (lambda: _encode(Image.new("RGB", (16, 16)), "EPS"), 415, "unsupported_format"),
}


def _expected(data: bytes, version: int = LATEST) -> tuple[str, float]:
    array = preprocessing.decode(data, (tiny_models.SIZE, tiny_models.SIZE))
    probabilities = tiny_models.expected(array[None], version)[0]
    best = int(np.argmax(probabilities))
    return tiny_models.labels_for(version)[best], float(probabilities[best])


@pytest.mark.parametrize("name", sorted(GOOD))
def test_every_readable_format_is_predicted(client, name):
    data = GOOD[name]()
    label, confidence = _expected(data)
    for response in (
        client.post(
            "/predict", data={"image": (io.BytesIO(data), name)}, content_type="multipart/form-data"
        ),
        client.post("/predict", data=data, content_type="image/x-anything"),
    ):
        assert response.status_code == 200, response.json
        assert response.json["model"] == {"name": "fashion", "version": LATEST}
        prediction = response.json["prediction"]
        assert prediction["label"] == label
        assert prediction["confidence"] == pytest.approx(confidence, abs=1e-5)
        assert prediction["top_k"][0] == {
            "label": label,
            "class_id": prediction["class_id"],
            "probability": prediction["confidence"],
        }
        assert len(prediction["top_k"]) == 3


@pytest.mark.parametrize("name", sorted(BAD))
def test_every_bad_input_gets_its_status_and_code(client, name):
    factory, status, code = BAD[name]
    response = client.post(
        "/predict",
        data={"image": (io.BytesIO(factory()), name)},
        content_type="multipart/form-data",
    )
    assert response.status_code == status
    assert response.json["error"]["code"] == code
    if code == "unsupported_format":
        named = {"photo.heic": "HEIC", "icon.ico": "ICO", "scan.eps": "EPS"}[name]
        assert response.json["error"]["message"] == (
            f"image format {named} is not supported; send JPEG, PNG, WebP, BMP, GIF or TIFF"
        )


def test_oversized_bodies_are_413_raw_and_multipart(client):
    big = b"\xff\xd8" + b"\0" * 2_000_000
    raw = client.post("/predict", data=big, content_type="image/jpeg")
    multipart = client.post(
        "/predict", data={"image": (io.BytesIO(big), "big.jpg")}, content_type="multipart/form-data"
    )
    batch = client.post(
        "/predict_batch",
        data={"images": (io.BytesIO(big), "big.jpg")},
        content_type="multipart/form-data",
    )
    for response in (raw, multipart, batch):
        assert response.status_code == 413
        assert response.json["error"]["code"] == "payload_too_large"


def test_batch_mixes_predictions_and_item_errors_in_input_order(client):
    names = ["rgba.png", "truncated.jpg", "photo.bmp", "empty.jpg", "photo.heic", "tiny.png"]
    blobs = [GOOD[n]() if n in GOOD else BAD[n][0]() for n in names]
    files = [(io.BytesIO(b), n) for n, b in zip(names, blobs, strict=True)]
    response = client.post(
        "/predict_batch",
        data={"images": files},
        content_type="multipart/form-data",
        query_string={"top_k": 1},
    )
    assert response.status_code == 200
    assert response.json["model"] == {"name": "fashion", "version": LATEST}
    items = response.json["predictions"]
    assert [(i["index"], i["filename"]) for i in items] == list(enumerate(names))
    assert [i.get("error", {}).get("code") for i in items] == [
        None,
        "corrupt_image",
        None,
        "empty_file",
        "unsupported_format",
        None,
    ]
    for item, data in zip(items, blobs, strict=True):
        if "error" not in item:
            assert item["label"] == _expected(data)[0]
            assert len(item["top_k"]) == 1


def test_batch_is_sent_in_chunks(server):
    app = create_app(_settings(server, predict_chunk_size=2))
    images = [(io.BytesIO(GOOD["photo.bmp"]()), f"{i}.bmp") for i in range(5)]
    response = app.test_client().post(
        "/predict_batch", data={"images": images}, content_type="multipart/form-data"
    )
    assert response.status_code == 200
    assert len(response.json["predictions"]) == 5
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'gateway_serving_duration_seconds_count{method="Predict",status="OK"} 3.0' in metrics


def test_parallel_chunks_answer_every_image_in_order(server):
    names = sorted(GOOD)[:7]
    blobs = [GOOD[name]() for name in names]
    answers = {}
    for parallel in (1, 3):
        app = create_app(_settings(server, predict_chunk_size=2, predict_parallel_chunks=parallel))
        files = [(io.BytesIO(data), name) for name, data in zip(names, blobs, strict=True)]
        response = app.test_client().post(
            "/predict_batch", data={"images": files}, content_type="multipart/form-data"
        )
        assert response.status_code == 200
        assert response.json["model"] == {"name": "fashion", "version": LATEST}
        items = response.json["predictions"]
        assert [i["filename"] for i in items] == names
        assert [(i["label"], i["confidence"]) for i in items] == [
            pytest.approx(_expected(data), abs=1e-5) for data in blobs
        ]
        answers[parallel] = items
        metrics = app.test_client().get("/metrics").get_data(as_text=True)
        # 7 images in chunks of 2: four Predict calls either way
        assert 'gateway_serving_duration_seconds_count{method="Predict",status="OK"} 4.0' in metrics
    assert answers[3] == answers[1]


def test_top_k_and_version_pinning(client):
    data = GOOD["photo.tif"]()
    cases = [
        ({"top_k": 2}, LATEST, 2),
        ({"top_k": 50}, LATEST, 3),
        ({"version": 1}, 1, 3),
        ({"version_label": "stable"}, 1, 3),
        ({"version_label": "canary"}, 2, 3),
    ]
    for query, version, k in cases:
        response = client.post("/predict", data=data, content_type="image/tiff", query_string=query)
        assert response.status_code == 200, (query, response.json)
        assert response.json["model"]["version"] == version
        assert response.json["prediction"]["label"] == _expected(data, version)[0]
        assert len(response.json["prediction"]["top_k"]) == k
    for query in ({"version": 7}, {"version_label": "nope"}):
        response = client.post("/predict", data=data, content_type="image/tiff", query_string=query)
        assert response.status_code == 404, query
        assert response.json["error"]["code"] == "not_found"


def test_health_classes_and_info(client):
    health = client.get("/health")
    assert health.status_code == 200
    assert sorted(health.json["available_versions"]) == [1, 2]
    classes = client.get("/classes")
    assert classes.json == {
        "model": {"name": "fashion", "version": 2},
        "classes": tiny_models.labels_for(2),
    }
    assert client.get("/classes?version=1").json["classes"] == tiny_models.labels_for(1)
    info = client.get("/").json
    assert info["serving"] == {"available": True}
    assert info["model"]["input"] == {"name": "images", "dtype": "DT_UINT8", "shape": [-1, 8, 8, 3]}
    assert info["model"]["num_classes"] == 3


def test_metrics_after_a_prediction(server):
    app = create_app(_settings(server))
    data = GOOD["photo.webp"]()
    assert (
        app.test_client().post("/predict", data=data, content_type="image/webp").status_code == 200
    )
    text = app.test_client().get("/metrics").get_data(as_text=True)
    label = _expected(data)[0]
    assert f'gateway_predicted_images_total{{label="{label}"}} 1.0' in text
    assert 'gateway_model_version_responses_total{version="2"} 1.0' in text
    assert 'gateway_requests_total{endpoint="/predict",method="POST",status="200"} 1.0' in text
    assert "gateway_decode_duration_seconds_count 1.0" in text
    # the signature is read once, not per request (the answering version did not change)
    assert (
        'gateway_serving_duration_seconds_count{method="GetModelMetadata",status="OK"} 1.0' in text
    )


THIN_CHECK = """
import json, sys, time
start = time.perf_counter()
from gateway.app import create_app
from gateway.settings import Settings
app = create_app(Settings.from_env({}, grpc_address=sys.argv[1]))
created = time.perf_counter() - start
response = app.test_client().post("/predict", data=open(sys.argv[2], "rb").read(),
                                  content_type="image/png")
rss_kb = next(int(line.split()[1]) for line in open("/proc/self/status")
              if line.startswith("VmRSS:"))
runtime = sorted(m for m in sys.modules if m == "keras" or m.startswith(("tensorflow.python",
                 "keras.")) or "pywrap_tensorflow" in m)
print(json.dumps({"status": response.status_code, "import_create_s": created,
                  "rss_mb": rss_kb / 1024, "runtime_modules": runtime}))
"""


def test_gateway_process_never_loads_the_tensorflow_runtime(server, tmp_path):
    image = tmp_path / "photo.png"
    image.write_bytes(GOOD["palette.png"]())
    result = subprocess.run(
        [sys.executable, "-c", THIN_CHECK, server.grpc_address, str(image)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(
        f"gateway import+create {report['import_create_s']:.2f} s, "
        f"RSS after a prediction {report['rss_mb']:.0f} MB"
    )
    assert report["status"] == 200
    assert report["runtime_modules"] == []
    assert report["rss_mb"] < 150


@pytest.mark.parametrize("kind", ["dev", "gunicorn"])
def test_gateway_process_serves_over_http(server, tmp_path, kind):
    import requests

    env = {
        "SERVING_GRPC_ADDRESS": server.grpc_address,
        "GATEWAY_API_KEY": "k",
        "GUNICORN_WORKERS": "2",
        "GUNICORN_THREADS": "2",
    }
    if kind == "gunicorn":
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "prometheus")
    data = GOOD["photo.bmp"]()
    with GatewayProcess(env, server=kind, log_path=tmp_path / "gateway.log") as gateway:
        for _ in range(4):
            response = requests.post(
                gateway.url + "/predict",
                data=data,
                timeout=30,
                headers={"Content-Type": "image/bmp", "X-API-Key": "k"},
            )
            assert response.status_code == 200
            assert response.json()["prediction"]["label"] == _expected(data)[0]
        metrics = requests.get(gateway.url + "/metrics", timeout=30).text
    # dev: one process; gunicorn: summed over both workers through the multiprocess folder
    assert 'gateway_requests_total{endpoint="/predict",method="POST",status="200"} 4.0' in metrics


def test_a_new_version_is_picked_up_with_its_own_labels(tiny_model_base, tmp_path):
    base = tmp_path / "fashion"
    tiny_models.copy_version(tiny_model_base / "1", base, 1)
    with ModelServerProcess(
        ["--model_name=fashion", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1"],
        log_path=tmp_path / "serving.log",
    ) as process:
        app = create_app(_settings(process))
        client = app.test_client()
        data = GOOD["photo.bmp"]()
        first = client.post("/predict", data=data, content_type="image/bmp")
        assert first.json["model"]["version"] == 1
        assert first.json["prediction"]["label"] == _expected(data, 1)[0]
        tiny_models.copy_version(tiny_model_base / "2", base, 2)
        for _ in range(300):  # the server polls the base path every second
            if client.get("/classes").json["model"]["version"] == 2:
                break
            time.sleep(0.1)
        second = client.post("/predict", data=data, content_type="image/bmp")
    assert second.json["model"]["version"] == 2
    assert second.json["prediction"]["label"] == _expected(data, 2)[0]
    # the cached signature was re-read when version 2 answered (no serving call here: it is down)
    assert app.extensions["gateway"]["model_info"].input_spec().version == 2


def _post_chunked(url: str, body: bytes, piece: int = 64 * 1024) -> tuple[int, dict]:
    """POST a raw image/jpeg body with Transfer-Encoding: chunked (no Content-Length)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        # the server may answer 413 and close before the whole body is sent
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.request(
                "POST",
                "/predict",
                encode_chunked=True,
                body=(body[i : i + piece] for i in range(0, len(body), piece)),
                headers={"Content-Type": "image/jpeg"},
            )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.parametrize("kind", ["dev", "gunicorn"])
def test_chunked_raw_bodies_are_held_to_the_body_limit(server, tmp_path, kind):
    limit = 300_000
    photo = _encode(_gradient(), "JPEG")
    env = {
        "SERVING_GRPC_ADDRESS": server.grpc_address,
        "MAX_BODY_BYTES": str(limit),
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": "2",
    }
    if kind == "gunicorn":
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "prometheus")
    with GatewayProcess(env, server=kind, log_path=tmp_path / "gateway.log") as gateway:
        status, body = _post_chunked(gateway.url, photo.ljust(limit, b"\0"))
        assert status == 200
        assert body["prediction"]["label"] == _expected(photo)[0]
        for size in (limit + 1, 4 * limit):
            status, body = _post_chunked(gateway.url, photo.ljust(size, b"\0"))
            assert status == 413, body
            assert body["error"]["code"] == "payload_too_large"
