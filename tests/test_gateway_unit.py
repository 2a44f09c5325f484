"""Gateway parts that need no model server: settings, error mapping, request checks, top-k.

Requests here are refused before any gRPC call, so the app points at a closed port.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import flask
import numpy as np
import pytest
from conftest import ROOT
from flask import Request
from werkzeug.exceptions import (
    MethodNotAllowed,
    RequestEntityTooLarge,
    RequestHeaderFieldsTooLarge,
)
from werkzeug.test import EnvironBuilder

from gateway import uploads
from gateway.app import create_app
from gateway.errors import (
    STATUS_BY_CODE,
    ErrorCode,
    GatewayError,
    from_http_exception,
    from_image_error,
)
from gateway.launcher import free_port
from gateway.predictor import classify_rows
from gateway.settings import Settings, SettingsError
from preprocessing import UnsupportedFormatError


@pytest.fixture()
def closed_address() -> str:
    return f"127.0.0.1:{free_port()}"


def _client(address: str, **overrides):
    settings = Settings.from_env({}, grpc_address=address, retries=0, **overrides)
    return create_app(settings, warm_up=False).test_client()


def test_settings_defaults_and_environment():
    assert Settings.from_env({}) == Settings()
    assert Settings().grpc_address == "localhost:8500"
    assert Settings().model_name == "fashion"
    settings = Settings.from_env(
        {
            "SERVING_GRPC_ADDRESS": "serving:9000",
            "TOP_K": "5",
            "SERVING_DEADLINE_SECONDS": "2.5",
            "GATEWAY_API_KEY": "s3cret",
            "MAX_IMAGE_PIXELS": "",
        }
    )
    assert (
        settings.grpc_address,
        settings.top_k,
        settings.deadline_seconds,
        settings.api_key,
        settings.max_image_pixels,
    ) == ("serving:9000", 5, 2.5, "s3cret", 40_000_000)
    assert {row["env"] for row in Settings.describe()} >= {
        "SERVING_GRPC_ADDRESS",
        "MODEL_NAME",
        "MAX_BODY_BYTES",
        "GATEWAY_API_KEY",
    }


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TOP_K": "three"}, "TOP_K='three' is not a valid int"),
        ({"MAX_BATCH_IMAGES": "0"}, "MAX_BATCH_IMAGES must be > 0"),
        ({"SERVING_RETRIES": "9"}, "SERVING_RETRIES must be in 0..4"),
        ({"SERVING_DEADLINE_SECONDS": "nan"}, "SERVING_DEADLINE_SECONDS must be > 0, got nan"),
        (
            {"SERVING_RETRY_BACKOFF_SECONDS": "0"},
            "SERVING_RETRY_BACKOFF_SECONDS must be > 0, got 0",
        ),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL must be one of DEBUG, INFO"),
    ],
)
def test_settings_reject_bad_values(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


_REPO = ROOT
_GUNICORN = [
    sys.executable,
    "-m",
    "gunicorn",
    "-c",
    str(_REPO / "gateway/gunicorn.conf.py"),
    "--bind",
    "127.0.0.1:0",
    "gateway.app:create_app()",
]


@pytest.mark.parametrize(
    ("command", "env", "line"),
    [
        (
            [sys.executable, "-m", "gateway", "--port", "0"],
            {"TOP_K": "0"},
            "gateway: bad setting: TOP_K must be > 0, got 0",
        ),
        (
            [sys.executable, "-m", "gateway", "--port", "0"],
            {"MAX_BATCH_IMAGES": "abc"},
            "gateway: bad setting: MAX_BATCH_IMAGES='abc' is not a valid int",
        ),
        (
            [sys.executable, "-m", "gateway", "--port", "0"],
            {"LOG_LEVEL": "loud"},
            "gateway: bad setting: LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, "
            "got 'loud'",
        ),
        (_GUNICORN, {"TOP_K": "0"}, "gateway: bad setting: TOP_K must be > 0, got 0"),
        (
            _GUNICORN,
            {"GUNICORN_WORKERS": "two"},
            "gateway: bad setting: GUNICORN_WORKERS='two' is not a valid int",
        ),
    ],
    ids=["dev-top_k-0", "dev-batch-abc", "dev-log-level", "gunicorn-top_k-0", "gunicorn-workers"],
)
def test_a_bad_setting_stops_start_up_with_one_line_and_status_2(command, env, line, tmp_path):
    environ = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), **env}
    result = subprocess.run(
        command, env=environ, cwd=_REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [line]
    assert result.stdout == ""


def test_error_table_matches_the_contract():
    assert GatewayError(ErrorCode.TOO_MANY_IMAGES, "x").status == 413
    assert GatewayError(ErrorCode.SERVING_UNAVAILABLE, "x").status == 503
    assert GatewayError(ErrorCode.SERVING_ERROR, "x").body() == {
        "code": "serving_error",
        "message": "x",
    }
    with pytest.raises(TypeError, match="needs an ErrorCode member"):
        GatewayError("serving_error", "x")  # a plain string, even a valid one, is refused
    assert sorted(set(STATUS_BY_CODE.values())) == [
        400,
        401,
        404,
        405,
        413,
        415,
        429,
        500,
        502,
        503,
        504,
    ]
    error = from_image_error(UnsupportedFormatError("HEIC"))
    assert (error.code, error.status) == ("unsupported_format", 415)
    assert "HEIC" in error.message
    assert from_http_exception(RequestEntityTooLarge()).body()["code"] == "payload_too_large"
    not_allowed = from_http_exception(MethodNotAllowed(valid_methods=["GET"]))
    assert (not_allowed.status, not_allowed.headers) == (405, {"Allow": "GET"})
    unlisted = from_http_exception(RequestHeaderFieldsTooLarge())  # 431: not in our table
    assert (unlisted.code, unlisted.status) == ("invalid_parameter", 400)


def test_classify_rows_orders_top_k_and_caps_k():
    probabilities = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]], dtype=np.float32)
    classes = np.array([[b"hat", b"dress", b"shoes"]] * 2, dtype=object)
    first, second = classify_rows(probabilities, classes, top_k=10)
    assert (first.label, first.class_id) == ("dress", 1)
    assert [t["label"] for t in first.top_k] == ["dress", "shoes", "hat"]
    assert (second.label, second.class_id, len(second.top_k)) == ("hat", 0, 3)
    assert second.confidence == pytest.approx(0.5)
    with pytest.raises(GatewayError, match="outputs disagree"):
        classify_rows(probabilities, classes[:, :2], top_k=1)


@pytest.mark.parametrize(
    "query",
    [
        {"top_k": "0"},
        {"top_k": "x"},
        {"version": "-1"},
        {"version": "1.5"},
        {"version_label": "bad label!"},
        {"version": "1", "version_label": "stable"},
    ],
)
def test_invalid_query_parameters_are_400(closed_address, query):
    response = _client(closed_address).post(
        "/predict", data=b"x", content_type="image/png", query_string=query
    )
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_parameter"


def test_request_shape_errors(closed_address):
    client = _client(closed_address, max_batch_images=2, max_body_bytes=1000)
    cases = [
        (
            client.post(
                "/predict",
                data={"other": (io.BytesIO(b"x"), "a.jpg")},
                content_type="multipart/form-data",
            ),
            400,
            "missing_field",
        ),
        (client.post("/predict"), 400, "missing_field"),
        (
            client.post("/predict", data=b"{}", content_type="application/json"),
            400,
            "missing_field",
        ),
        (
            client.post("/predict", data=b"{}", content_type="text/plain"),
            415,
            "unsupported_media_type",
        ),
        (
            client.post("/predict_batch", data=b"x", content_type="image/png"),
            415,
            "unsupported_media_type",
        ),
        (
            client.post(
                "/predict_batch",
                data={"image": (io.BytesIO(b"x"), "a.jpg")},
                content_type="multipart/form-data",
            ),
            400,
            "missing_field",
        ),
        (
            client.post(
                "/predict_batch",
                data={"images": [(io.BytesIO(b"x"), f"{i}.jpg") for i in range(3)]},
                content_type="multipart/form-data",
            ),
            413,
            "too_many_images",
        ),
        (
            client.post("/predict", data=b"\0" * 1001, content_type="image/jpeg"),
            413,
            "payload_too_large",
        ),
        (
            client.post(
                "/predict",
                data={"image": (io.BytesIO(b"\0" * 1001), "big.jpg")},
                content_type="multipart/form-data",
            ),
            413,
            "payload_too_large",
        ),
        (client.get("/no/such/route"), 404, "not_found"),
        (client.get("/predict"), 405, "method_not_allowed"),
    ]
    for response, status, code in cases:
        assert (response.status_code, response.json["error"]["code"]) == (status, code)
        assert set(response.json["error"]) == {"code", "message"}


def _chunked_environ(body: bytes) -> dict:
    """A raw image/jpeg POST /predict without Content-Length, as a server sees a chunked body."""
    environ = EnvironBuilder(
        path="/predict", method="POST", input_stream=io.BytesIO(body), content_type="image/jpeg"
    ).get_environ()
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True  # the server de-chunks and ends the stream
    return environ


@pytest.mark.parametrize(
    ("size", "status"), [(0, None), (1000, None), (1001, 413), (5_000_000, 413)]
)
def test_a_raw_body_without_content_length_is_bounded_not_truncated(closed_address, size, status):
    settings = Settings.from_env({}, grpc_address=closed_address, max_body_bytes=1000)
    app = create_app(settings, warm_up=False)  # its MAX_CONTENT_LENGTH wraps request.stream
    environ = _chunked_environ(b"\xff" * size)
    with app.request_context(environ):
        if status is None:
            assert uploads.single_image(flask.request, settings).data == b"\xff" * size
            return
        with pytest.raises(GatewayError) as raised:
            uploads.single_image(flask.request, settings)
    assert (raised.value.status, raised.value.code) == (413, "payload_too_large")
    assert environ["wsgi.input"].tell() == 1001  # read one byte past the limit, no more


def test_a_chunked_raw_body_over_the_limit_is_413_through_the_app(closed_address):
    client = _client(closed_address, max_body_bytes=1000)
    for size in (1001, 40_000):
        response = client.open(Request(_chunked_environ(b"\0" * size)))
        assert (response.status_code, response.json["error"]["code"]) == (413, "payload_too_large")


def test_a_body_over_the_limit_is_told_the_limit_and_its_setting(closed_address):
    client = _client(closed_address, max_body_bytes=1000)
    declared = client.post("/predict", data=b"\0" * 1001, content_type="image/jpeg")
    multipart = client.post(
        "/predict",
        data={"image": (io.BytesIO(b"\0" * 1001), "big.jpg")},
        content_type="multipart/form-data",
    )
    chunked = client.open(Request(_chunked_environ(b"\0" * 1001)))
    for response, size in (
        (declared, " (1001 bytes)"),
        (multipart, f" ({multipart.request.content_length} bytes)"),
        (chunked, ""),  # no Content-Length: read up to the limit, size unknown
    ):
        assert response.status_code == 413
        assert response.json["error"] == {
            "code": "payload_too_large",
            "message": f"the request body{size} is over the limit of 1000 bytes "
            "(the gateway's MAX_BODY_BYTES setting)",
        }
    # the default limit, from a declared length alone (werkzeug refuses before reading)
    environ = EnvironBuilder(
        path="/predict", method="POST", data=b"x", content_type="image/jpeg"
    ).get_environ()
    environ["CONTENT_LENGTH"] = str(40_000_000)
    response = _client(closed_address).open(Request(environ))
    assert response.status_code == 413
    assert response.json["error"] == {
        "code": "payload_too_large",
        "message": "the request body (40000000 bytes) is over the limit of 33554432 bytes = "
        "32 MiB (the gateway's MAX_BODY_BYTES setting)",
    }


@pytest.mark.parametrize(
    "fields",
    [
        {f"f{i}": "x" for i in range(1001)},  # over MAX_FORM_PARTS (1000)
        {"image": "x" * 500_001},  # a text field over Flask's MAX_FORM_MEMORY_SIZE
    ],
    ids=["parts", "text-field"],
)
def test_a_form_limit_within_the_body_limit_is_not_blamed_on_the_body(closed_address, fields):
    response = _client(closed_address).post(
        "/predict", data=fields, content_type="multipart/form-data"
    )
    assert response.status_code == 413
    assert response.json["error"] == {
        "code": "payload_too_large",
        "message": "the multipart form is over its limits: at most 1000 parts and 500000 bytes "
        "per text field; send images as file parts",
    }


def test_a_text_field_named_image_is_told_to_be_a_file(closed_address):
    client = _client(closed_address)
    for path, field in (("/predict", "image"), ("/predict_batch", "images")):
        response = client.post(path, data={field: "photo.jpg"}, content_type="multipart/form-data")
        assert (response.status_code, response.json["error"]["code"]) == (400, "missing_field")
        assert response.json["error"]["message"].startswith(
            f"multipart field '{field}' must be a file upload"
        )


TOP_K_RULE = (
    "top_k must be a whole number from 1 to the number of classes (larger values, up to 18 "
    "digits, list every class), got "
)
VERSION_RULE = (
    "version must be a non-negative whole number (a model version, up to 18 digits), got "
)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"top_k": "0"}, TOP_K_RULE + "'0'"),
        ({"top_k": "-3"}, TOP_K_RULE + "'-3'"),
        ({"top_k": "x"}, TOP_K_RULE + "'x'"),
        ({"top_k": "1" * 19}, TOP_K_RULE + "'1111111111111111111'"),
        # ASCII digits only: Python's int() would take these three
        ({"top_k": "\u0663"}, TOP_K_RULE + "'\u0663'"),  # ARABIC-INDIC DIGIT THREE
        ({"top_k": "+3"}, TOP_K_RULE + "'+3'"),
        ({"top_k": " 3"}, TOP_K_RULE + "' 3'"),
        ({"version": "2 "}, VERSION_RULE + "'2 '"),
        ({"version": "\uff12"}, VERSION_RULE + "'\uff12'"),  # FULLWIDTH DIGIT TWO
        ({"version": "-1"}, VERSION_RULE + "'-1'"),
        ({"version": "1.5"}, VERSION_RULE + "'1.5'"),
        ({"version": "v2"}, VERSION_RULE + "'v2'"),
        ({"version": "1" * 19}, VERSION_RULE + "'1111111111111111111'"),
    ],
)
def test_top_k_and_version_messages_state_their_bounds_in_words(closed_address, query, message):
    response = _client(closed_address).post(
        "/predict", data=b"x", content_type="image/png", query_string=query
    )
    assert (response.status_code, response.json["error"]["code"]) == (400, "invalid_parameter")
    assert response.json["error"]["message"] == message


OBJECT = 'must be an object {"b64": "<base64 image>"}'


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        # present but of the wrong JSON type: invalid_parameter naming the field and the type
        ("/predict", {"image": 12}, 400, ("invalid_parameter", f"image {OBJECT}, got a number")),
        ("/predict", {"image": 1.5}, 400, ("invalid_parameter", f"image {OBJECT}, got a number")),
        (
            "/predict",
            {"image": ["aGk="]},
            400,
            ("invalid_parameter", f"image {OBJECT}, got an array"),
        ),
        (
            "/predict",
            {"image": "aGk="},
            400,
            ("invalid_parameter", f"image {OBJECT}, got a string"),
        ),
        ("/predict", {"image": True}, 400, ("invalid_parameter", f"image {OBJECT}, got a boolean")),
        (
            "/predict_batch",
            {"instances": [{"b64": "aGk="}, "aGk="]},
            400,
            ("invalid_parameter", f"instances[1] {OBJECT}, got a string"),
        ),
        # truly absent (or null): still missing_field
        ("/predict", {}, 400, ("missing_field", 'send {"image": {"b64": "<base64 image>"}}')),
        ("/predict", {"image": None}, 400, ("missing_field", f"image {OBJECT}")),
        ("/predict", {"image": {}}, 400, ("missing_field", f"image {OBJECT}")),
        (
            "/predict_batch",
            {"instances": [{"b64": "aGk="}, {"data": "aGk="}]},
            400,
            ("missing_field", f"instances[1] {OBJECT}"),
        ),
    ],
)
def test_json_image_of_the_wrong_type_is_invalid_parameter_not_missing(
    closed_address, path, body, status, error
):
    response = _client(closed_address).post(path, json=body)
    assert response.status_code == status
    assert response.json["error"] == {"code": error[0], "message": error[1]}


def test_api_key_guards_everything_but_health_livez_and_metrics(closed_address):
    client = _client(closed_address, api_key="s3cret")
    refused = client.get("/openapi.json")
    assert refused.status_code == 401
    assert refused.json["error"]["code"] == "unauthorized"
    assert client.get("/openapi.json", headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get("/openapi.json", headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.post("/predict", data=b"x", content_type="image/png").status_code == 401
    assert client.get("/health").status_code == 503  # open, and serving is down
    assert client.get("/metrics").status_code == 200
    livez = client.get("/livez")  # open too, and alive although serving is down
    assert (livez.status_code, livez.json) == (200, {"status": "alive"})
    open_client = _client(closed_address)
    assert open_client.get("/openapi.json").status_code == 200


def test_openapi_lists_every_path_and_error_code(closed_address):
    response = _client(closed_address).get("/openapi.json")
    document = response.json
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {
        "/",
        "/health",
        "/livez",
        "/classes",
        "/metrics",
        "/openapi.json",
        "/predict",
        "/predict_batch",
        "/ui",
    }
    predict = document["paths"]["/predict"]["post"]
    assert set(predict["responses"]) == {
        "200",
        "400",
        "401",
        "404",
        "405",
        "413",
        "415",
        "500",
        "502",
        "503",
        "504",
    }
    assert "Retry-After" in predict["responses"]["503"]["headers"]
    assert document["components"]["schemas"]["ErrorBody"]["properties"]["code"]["enum"] == sorted(
        STATUS_BY_CODE
    )


def test_metrics_count_requests_and_rejections(closed_address):
    client = _client(closed_address)
    client.post("/predict", data=b"{}", content_type="text/plain")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'gateway_requests_total{endpoint="/predict",method="POST",status="415"} 1.0' in text
    assert 'gateway_rejected_inputs_total{reason="unsupported_media_type"} 1.0' in text
    for name in (
        "gateway_request_duration_seconds",
        "gateway_decode_duration_seconds",
        "gateway_serving_duration_seconds",
        "gateway_predicted_images_total",
        "gateway_model_version_responses_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text


def test_gunicorn_start_removes_only_old_metric_files(tmp_path, monkeypatch):
    import runpy

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    (tmp_path / "counter_123.db").write_bytes(b"old")
    (tmp_path / "operator-notes.txt").write_text("keep me")
    (tmp_path / "sub").mkdir()
    config = runpy.run_path(str(Path(__file__).resolve().parents[1] / "gateway/gunicorn.conf.py"))
    config["on_starting"](None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["operator-notes.txt", "sub"]


def test_every_gateway_error_is_raised_with_an_existing_code():
    """Reads every gateway module: a misspelt ErrorCode member fails here, not as a 500 later."""
    import ast

    members = set(ErrorCode.__members__)
    wrong = []
    for path in sorted((_REPO / "gateway").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{path.relative_to(_REPO)}:{getattr(node, 'lineno', 0)}"
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "ErrorCode"
                and node.attr not in members
            ):
                wrong.append(f"{where} ErrorCode.{node.attr}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "GatewayError"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                wrong.append(f"{where} GatewayError({node.args[0].value!r}) with a plain string")
    assert wrong == []
    assert {code.value: code.status for code in ErrorCode} == STATUS_BY_CODE


def test_metrics_include_process_python_and_build_info(closed_address):
    from buildinfo import git_commit, version

    text = _client(closed_address).get("/metrics").get_data(as_text=True)
    samples = {
        line.split(" ")[0]: line.split(" ")[1] for line in text.splitlines() if line[:1] != "#"
    }
    assert float(samples["process_resident_memory_bytes"]) > 10e6
    assert float(samples["process_open_fds"]) > 0
    assert any(name.startswith("python_info{") for name in samples)
    assert any(name.startswith("python_gc_collections_total{") for name in samples)
    build = (
        f'gateway_build_info{{git_commit="{git_commit()}",model_name="fashion",'
        f'version="{version()}"}}'
    )
    assert samples[build] == "1.0"
    assert version() == "0.1.0" and len(git_commit()) == 40


def test_browsers_get_the_page_and_api_clients_keep_json(closed_address):
    client = _client(closed_address, api_key="secret")
    browser_accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    for path, accept in (("/", browser_accept), ("/ui", "*/*"), ("/ui", browser_accept)):
        page = client.get(path, headers={"Accept": accept})  # no key: the page asks for it
        assert page.status_code == 200, path
        assert page.mimetype == "text/html"
        assert b'<script src="/static/app.js" defer></script>' in page.data
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    for asset, mimetype in (("app.js", "text/javascript"), ("style.css", "text/css")):
        response = client.get(f"/static/{asset}")
        assert (response.status_code, response.mimetype) == (200, mimetype)
        response.close()
    for accept in ("*/*", "application/json", None):
        headers = {"Accept": accept} if accept else {}
        response = client.get("/", headers=headers)
        assert (response.status_code, response.json["error"]["code"]) == (401, "unauthorized")
    info = client.get("/", headers={"Accept": "*/*", "X-API-Key": "secret"})
    assert info.status_code == 200
    assert info.json["service"] == "fashion-gateway"
    assert "GET /ui" in info.json["endpoints"]


@pytest.mark.parametrize(
    "text",
    [
        "aGk=",
        "aGk",
        "aGVsbG8-_w",
        "aGVs\nbG8=\n",
        " aGVsbG8= ",
        "aG\r\nk=",
        "aGk==",  # two = after three characters: a length base64 can have, padding ignored
        "a",
        "aGk=a",
        "ab=cd",
        "aGk===",
        "a$Gk",
        "aGk\u00a0=",  # a non-ASCII space is not skipped
        "",
    ],
)
def test_decode_b64_accepts_exactly_what_the_documented_pattern_allows(text):
    from gateway.json_input import B64_PATTERN, decode_b64

    documented = re.fullmatch(B64_PATTERN, text) is not None
    try:
        decode_b64(text, "image.b64")
        accepted = True
    except GatewayError as exc:
        assert exc.code is ErrorCode.INVALID_BASE64
        accepted = False
    assert accepted == documented


@pytest.mark.parametrize(
    ("query", "name", "times"),
    [
        ([("top_k", "3"), ("top_k", "5")], "top_k", 2),
        ([("version", "1"), ("version", "1"), ("version", "2")], "version", 3),
        ([("version_label", "stable"), ("version_label", "canary")], "version_label", 2),
    ],
)
def test_a_query_parameter_given_twice_is_refused_not_first_wins(
    closed_address, query, name, times
):
    client = _client(closed_address)
    for path in ("/predict", "/predict_batch"):
        response = client.post(path, data=b"x", content_type="image/png", query_string=query)
        assert (response.status_code, response.json["error"]) == (
            400,
            {
                "code": "invalid_parameter",
                "message": f"{name} is given {times} times in the query; give it once",
            },
        )


@pytest.mark.parametrize("name", ["top_k", "version", "version_label"])
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/predict", {"image": {"b64": "aGk="}}),
        ("/predict_batch", {"instances": [{"b64": "aGk="}]}),
    ],
)
def test_a_query_parameter_in_a_json_body_is_refused_not_ignored(closed_address, path, body, name):
    response = _client(closed_address).post(path, json={**body, name: 5})
    assert (response.status_code, response.json["error"]) == (
        400,
        {
            "code": "invalid_parameter",
            "message": f"{name} is a query parameter, not a body field: send {path}?{name}=...",
        },
    )


@pytest.mark.parametrize("name", ["top_k", "version", "version_label"])
@pytest.mark.parametrize(("path", "field"), [("/predict", "image"), ("/predict_batch", "images")])
def test_a_query_parameter_as_a_form_field_is_refused_not_ignored(
    closed_address, path, field, name
):
    response = _client(closed_address).post(
        path,
        data={field: (io.BytesIO(b"x"), "a.png"), name: "1"},
        content_type="multipart/form-data",
    )
    assert (response.status_code, response.json["error"]) == (
        400,
        {
            "code": "invalid_parameter",
            "message": f"{name} is a query parameter, not a form field: send {path}?{name}=...",
        },
    )


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        ("/predict", {"image": {"b64": "aGk=", "top_k": 3}}, "image"),
        (
            "/predict_batch",
            {"instances": [{"b64": "aGk="}, {"b64": "aGk=", "top_k": 3}]},
            "instances[1]",
        ),
    ],
)
def test_a_query_parameter_inside_an_image_object_is_refused(closed_address, path, body, where):
    response = _client(closed_address).post(path, json=body)
    assert (response.status_code, response.json["error"]) == (
        400,
        {
            "code": "invalid_parameter",
            "message": f"top_k is a query parameter, not a field of {where}: send {path}?top_k=...",
        },
    )
