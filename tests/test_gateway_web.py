"""The gateway's edge for people and browsers, against the real local model server and real Redis.

JSON base64 input, CORS, rate limits (in memory and in Redis), the prediction cache (in-process and
Redis, a new version, Redis stopped), request ids (echoed, replaced, sent to the model server and
found in its log) and JSON logs. The model is the tiny SavedModel of tests/support/tiny_models.py,
whose answers NumPy computes exactly; Redis is Debian's redis-server on a free port.
"""

from __future__ import annotations

import base64
import io
import json
import re
import time

import numpy as np
import pytest
from PIL import Image
from support import tiny_models

import preprocessing
from gateway.app import create_app
from gateway.launcher import GatewayProcess
from gateway.settings import Settings
from serving.launcher import ModelServerProcess

pytestmark = pytest.mark.integration

LATEST = 2  # the shared tiny_server serves tiny version 2
ALL_VERSIONS = """
model_config_list {
  config {
    name: "fashion"
    base_path: "%s"
    model_platform: "tensorflow"
    model_version_policy { all {} }
  }
}
"""


def _photo(seed: int = 0, size=(48, 32)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _expected(data: bytes, version: int = LATEST) -> tuple[str, float]:
    array = preprocessing.decode(data, (tiny_models.SIZE, tiny_models.SIZE))
    probabilities = tiny_models.expected(array[None], version)[0]
    best = int(np.argmax(probabilities))
    return tiny_models.labels_for(version)[best], float(probabilities[best])


def _app(address: str, **overrides):
    settings = Settings.from_env({}, grpc_address=address, **overrides)
    return create_app(settings)


def _metric(client, line_prefix: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    for line in text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# ---- JSON input ---------------------------------------------------------------------------------


def test_json_base64_in_both_alphabets_with_and_without_padding(tiny_server):
    client = _app(tiny_server.grpc_address, cache_size=0).test_client()
    # 0xfb/0xff bytes make the two alphabets differ: '+/' in standard, '-_' in URL-safe text
    data = _photo(seed=3)
    standard = base64.b64encode(data).decode()
    urlsafe = base64.urlsafe_b64encode(data).decode()
    assert ("+" in standard or "/" in standard) and ("-" in urlsafe or "_" in urlsafe)
    label, confidence = _expected(data)
    multipart = client.post(
        "/predict", data={"image": (io.BytesIO(data), "a.png")}, content_type="multipart/form-data"
    )
    wrapped = base64.encodebytes(data).decode()  # MIME: a line break every 76 characters
    assert wrapped.count("\n") == -(-len(standard) // 76)
    for text in (standard, urlsafe, standard.rstrip("="), urlsafe.rstrip("="), wrapped):
        response = client.post("/predict?top_k=2", json={"image": {"b64": text}})
        assert response.status_code == 200, response.json
        assert response.json["model"] == {"name": "fashion", "version": LATEST}
        assert response.json["prediction"]["label"] == label
        assert response.json["prediction"]["confidence"] == pytest.approx(confidence, abs=1e-6)
        assert len(response.json["prediction"]["top_k"]) == 2
        assert response.json["prediction"]["top_k"] == multipart.json["prediction"]["top_k"][:2]
    photos = [_photo(seed=s) for s in (4, 5)]
    # an instance whose base64 does not decode fails alone, like an undecodable image
    mixed = client.post(
        "/predict_batch",
        json={"instances": [{"b64": "not base64!"}, {"b64": standard}, {"b64": "abcde"}]},
    )
    assert mixed.status_code == 200, mixed.json
    first, second, third = mixed.json["predictions"]
    assert (first["index"], first["error"]["code"]) == (0, "invalid_base64")
    assert first["error"]["message"].startswith("instances[0].b64 is not base64")
    assert (second["index"], second["label"]) == (1, label) and "error" not in second
    assert (third["index"], third["error"]["code"]) == (2, "invalid_base64")
    assert _metric(client, 'gateway_rejected_inputs_total{reason="invalid_base64"}') == 2
    # none readable: still 200, as a multipart batch of undecodable images, no version answered
    none = client.post("/predict_batch", json={"instances": [{"b64": "%%"}, {"b64": "a"}]})
    assert none.status_code == 200, none.json
    assert none.json["model"] == {"name": "fashion", "version": None}
    assert [(p["index"], p["error"]["code"]) for p in none.json["predictions"]] == [
        (0, "invalid_base64"),
        (1, "invalid_base64"),
    ]
    assert _metric(client, 'gateway_rejected_inputs_total{reason="invalid_base64"}') == 4
    batch = client.post(
        "/predict_batch",
        json={"instances": [{"b64": base64.urlsafe_b64encode(p).decode()} for p in photos]},
    )
    assert batch.status_code == 200
    assert [p["label"] for p in batch.json["predictions"]] == [_expected(p)[0] for p in photos]
    assert [p["index"] for p in batch.json["predictions"]] == [0, 1]
    assert [p["filename"] for p in batch.json["predictions"]] == [None, None]


def test_json_input_errors_have_exact_codes(tiny_server):
    client = _app(
        tiny_server.grpc_address, cache_size=0, max_batch_images=3, max_body_bytes=4000
    ).test_client()
    good = base64.b64encode(b"\x89PNG....").decode()
    cases = [
        ("/predict", {"image": {"b64": "ab$d"}}, 400, "invalid_base64", "image.b64"),
        ("/predict", {"image": {"b64": "abcde"}}, 400, "invalid_base64", "image.b64"),
        ("/predict", {"image": {"b64": "ab=cd"}}, 400, "invalid_base64", "image.b64"),
        ("/predict", {"image": {"b64": 12}}, 400, "invalid_base64", "image.b64"),
        ("/predict", {"image": "abcd"}, 400, "invalid_parameter", "got a string"),
        ("/predict", {"picture": {"b64": good}}, 400, "missing_field", '"image"'),
        ("/predict_batch", {"instances": []}, 400, "missing_field", "instances"),
        ("/predict_batch", {"instances": {"b64": good}}, 400, "invalid_parameter", "list"),
        ("/predict_batch", {"instances": [{"b64": good}] * 4}, 413, "too_many_images", "4 images"),
        # over MAX_BODY_BYTES: refused from the declared length, before any JSON is parsed
        ("/predict", {"image": {"b64": "A" * 4100}}, 413, "payload_too_large", "limit"),
    ]
    for path, body, status, code, named in cases:
        response = client.post(path, json=body)
        assert (response.status_code, response.json["error"]["code"]) == (status, code), body
        assert named in response.json["error"]["message"]
    broken = client.post("/predict", data=b"{not json", content_type="application/json")
    assert (broken.status_code, broken.json["error"]["code"]) == (400, "invalid_parameter")
    # nested deeper than the JSON parser's recursion limit (2 KB): a 400, not a 500
    for path, key in (("/predict", "image"), ("/predict_batch", "instances")):
        deep = f'{{"{key}":' + "[" * 1000 + "]" * 1000 + "}"
        response = client.post(path, data=deep.encode(), content_type="application/json")
        assert response.status_code == 400, path
        assert response.json["error"] == {
            "code": "invalid_parameter",
            "message": "the body's JSON is nested too deeply",
        }
    # whitespace is skipped, but a wrapped text must still be base64 once it is gone
    response = client.post("/predict", json={"image": {"b64": "ab\ncde"}})
    assert (response.status_code, response.json["error"]["code"]) == (400, "invalid_base64")
    # valid base64 of bytes that are no image: the image decoder's own code
    text = base64.b64encode(b"just text, no photo").decode()
    response = client.post("/predict", json={"image": {"b64": text}})
    assert (response.status_code, response.json["error"]["code"]) == (400, "not_an_image")


# ---- CORS ---------------------------------------------------------------------------------------


def test_cors_preflight_allowed_and_refused_origins(tiny_server):
    client = _app(
        tiny_server.grpc_address,
        cors_origins="https://shop.example, https://admin.example",
        api_key="k3y",
        rate_limit="100/minute",
    ).test_client()
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "X-API-Key, Content-Type",
    }
    allowed = client.options("/predict", headers={"Origin": "https://shop.example", **preflight})
    assert allowed.status_code == 200  # no key needed for a preflight, never rate limited
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert set(allowed.headers["Access-Control-Allow-Methods"].split(", ")) >= {"POST", "GET"}
    assert {
        h.strip().lower() for h in allowed.headers["Access-Control-Allow-Headers"].split(",")
    } == {
        "x-api-key",
        "content-type",
    }
    assert allowed.headers["Access-Control-Max-Age"] == "600"
    assert "Access-Control-Allow-Credentials" not in allowed.headers
    assert "X-RateLimit-Limit" not in allowed.headers

    refused = client.options("/predict", headers={"Origin": "https://evil.example", **preflight})
    assert refused.status_code == 200
    assert not [h for h, _ in refused.headers.items() if h.startswith("Access-Control-")]

    data = _photo(seed=1)
    real = client.post(
        "/predict",
        data=data,
        content_type="image/png",
        headers={"Origin": "https://admin.example", "X-API-Key": "k3y"},
    )
    assert real.status_code == 200
    assert real.headers["Access-Control-Allow-Origin"] == "https://admin.example"
    exposed = set(real.headers["Access-Control-Expose-Headers"].split(", "))
    assert exposed == {
        "X-Request-Id",
        "X-Model-Version",
        "X-Cache",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
        "Retry-After",
    }
    assert real.headers["X-Model-Version"] == str(LATEST)


def test_no_cors_headers_at_all_without_cors_origins(tiny_server):
    client = _app(tiny_server.grpc_address).test_client()
    headers = {"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"}
    for response in (client.options("/predict", headers=headers), client.get("/", headers=headers)):
        assert response.status_code == 200
        assert not [h for h, _ in response.headers.items() if h.startswith("Access-Control-")]


# ---- rate limits --------------------------------------------------------------------------------


def test_over_the_limit_is_429_with_retry_after_and_probes_are_never_limited(tiny_server):
    client = _app(tiny_server.grpc_address, rate_limit="3/minute").test_client()
    data = _photo(seed=2)
    statuses = []
    for _ in range(3):
        response = client.post("/predict", data=data, content_type="image/png")
        statuses.append(response.status_code)
        assert response.headers["X-RateLimit-Limit"] == "3"
        assert "Retry-After" not in response.headers
    assert statuses == [200, 200, 200]
    assert response.headers["X-RateLimit-Remaining"] == "0"
    limited = client.post("/predict", data=data, content_type="image/png")
    assert limited.status_code == 429
    assert limited.json["error"]["code"] == "rate_limited"
    assert "3 per 1 minute" in limited.json["error"]["message"]
    assert 1 <= int(limited.headers["Retry-After"]) <= 61  # the window end, rounded up
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert int(limited.headers["X-RateLimit-Reset"]) >= int(time.time())
    # the count is per caller, over every limited endpoint: /classes is refused too
    assert client.get("/classes").status_code == 429
    for _ in range(5):
        for path in ("/health", "/metrics", "/static/app.js"):
            response = client.get(path)
            assert response.status_code == 200, path
            assert "X-RateLimit-Limit" not in response.headers
    assert _metric(client, 'gateway_rejected_inputs_total{reason="rate_limited"}') == 2.0


def test_the_limit_counts_per_checked_key_else_per_address(tiny_server):
    client = _app(tiny_server.grpc_address, rate_limit="2/minute", api_key="right").test_client()
    wrong = [client.get("/classes", headers={"X-API-Key": "wrong"}).status_code for _ in range(3)]
    assert wrong == [401, 401, 429]  # refused keys are counted per address, then limited
    right = [client.get("/classes", headers={"X-API-Key": "right"}).status_code for _ in range(3)]
    assert right == [200, 200, 429]
    # keys are not checked: a made-up key does not buy a fresh count
    open_client = _app(tiny_server.grpc_address, rate_limit="2/minute").test_client()
    codes = [
        open_client.get("/classes", headers={"X-API-Key": f"k{i}"}).status_code for i in range(3)
    ]
    assert codes == [200, 200, 429]
    # behind a trusted proxy the forwarded address is the caller
    proxied = _app(tiny_server.grpc_address, rate_limit="1/minute", trusted_proxies=1)
    proxied_client = proxied.test_client()
    first = proxied_client.get("/classes", headers={"X-Forwarded-For": "203.0.113.7"})
    second = proxied_client.get("/classes", headers={"X-Forwarded-For": "203.0.113.8"})
    again = proxied_client.get("/classes", headers={"X-Forwarded-For": "203.0.113.7"})
    assert (first.status_code, second.status_code, again.status_code) == (200, 200, 429)


def test_redis_holds_one_count_for_every_process_and_a_down_redis_lets_requests_through(
    tiny_server, redis_server
):
    def settings():
        return dict(rate_limit="3/minute", redis_url=redis_server.url, cache_size=0)

    one = _app(tiny_server.grpc_address, **settings()).test_client()
    two = _app(tiny_server.grpc_address, **settings()).test_client()  # another worker / replica
    codes = [c.get("/classes").status_code for c in (one, two, one, two)]
    assert codes == [200, 200, 200, 429]
    redis_server.stop()
    fallback = [two.get("/classes").status_code for _ in range(2)]
    assert fallback == [200, 200]  # counted in the process until Redis is back, never a 5xx


# ---- prediction cache ---------------------------------------------------------------------------


def test_a_repeated_image_is_a_cache_hit_with_the_same_answer(tiny_server):
    client = _app(tiny_server.grpc_address, cache_size=8).test_client()
    data = _photo(seed=7)
    first = client.post("/predict?top_k=1", data=data, content_type="image/png")
    second = client.post(
        "/predict?top_k=3",
        data={"image": (io.BytesIO(data), "x.png")},
        content_type="multipart/form-data",
    )
    third = client.post(
        "/predict?top_k=1", json={"image": {"b64": base64.b64encode(data).decode()}}
    )
    assert (first.headers["X-Cache"], second.headers["X-Cache"], third.headers["X-Cache"]) == (
        "miss",
        "hit",
        "hit",
    )
    assert third.json == first.json  # the cached model output answers any top_k exactly
    assert second.json["prediction"]["top_k"][0] == first.json["prediction"]["top_k"][0]
    assert len(second.json["prediction"]["top_k"]) == 3
    assert second.json["model"] == {"name": "fashion", "version": LATEST}
    assert second.headers["X-Model-Version"] == str(LATEST)
    # a batch with one cached and one new image is a miss; the new one is then cached too
    other = _photo(seed=8)
    files = [(io.BytesIO(data), "a.png"), (io.BytesIO(other), "b.png")]
    batch = client.post(
        "/predict_batch", data={"images": files}, content_type="multipart/form-data"
    )
    assert batch.headers["X-Cache"] == "miss"
    assert [p["label"] for p in batch.json["predictions"]] == [
        _expected(data)[0],
        _expected(other)[0],
    ]
    files = [(io.BytesIO(other), "b.png"), (io.BytesIO(data), "a.png")]
    again = client.post(
        "/predict_batch", data={"images": files}, content_type="multipart/form-data"
    )
    assert again.headers["X-Cache"] == "hit"
    assert again.json["model"] == {"name": "fashion", "version": LATEST}
    assert _metric(client, 'gateway_cache_lookups_total{result="hit"}') == 5.0
    assert _metric(client, 'gateway_cache_lookups_total{result="miss"}') == 2.0
    # a version label skips the cache (the status API cannot resolve labels)
    off = _app(tiny_server.grpc_address, cache_size=0).test_client()
    assert "X-Cache" not in off.post("/predict", data=data, content_type="image/png").headers


def test_a_new_version_ends_cached_answers_of_the_old_one(tiny_model_base, tmp_path):
    base = tmp_path / "fashion"
    tiny_models.copy_version(tiny_model_base / "1", base, 1)
    config = tmp_path / "models.config"
    config.write_text(ALL_VERSIONS % base)  # the old version stays loaded, so it can be pinned
    with ModelServerProcess(
        ["--model_config_file", str(config), "--file_system_poll_wait_seconds=1"],
        wait_for_model="fashion",
        log_path=tmp_path / "serving.log",
    ) as process:
        client = _app(process.grpc_address, cache_version_check_seconds=1.0).test_client()
        data = _photo(seed=11)
        first = client.post("/predict", data=data, content_type="image/png")
        cached = client.post("/predict", data=data, content_type="image/png")
        assert (first.headers["X-Cache"], cached.headers["X-Cache"]) == ("miss", "hit")
        assert cached.json["model"]["version"] == 1
        assert cached.json["prediction"]["label"] == _expected(data, 1)[0]
        tiny_models.copy_version(tiny_model_base / "2", base, 2)
        published = time.monotonic()
        seen = []
        while time.monotonic() - published < 30:
            response = client.post("/predict", data=data, content_type="image/png")
            assert response.status_code == 200, response.json
            seen.append((response.json["model"]["version"], response.headers["X-Cache"]))
            if response.json["model"]["version"] == 2:
                break
            time.sleep(0.2)
        assert seen[-1] == (2, "miss")
        assert response.json["prediction"]["label"] == _expected(data, 2)[0]
        pinned = client.post("/predict?version=1", data=data, content_type="image/png")
        again = client.post("/predict", data=data, content_type="image/png")
    assert (pinned.json["model"]["version"], pinned.headers["X-Cache"]) == (1, "hit")
    assert (again.json["model"]["version"], again.headers["X-Cache"]) == (2, "hit")


def test_the_redis_cache_is_shared_and_a_stopped_redis_never_fails_a_request(
    tiny_server, redis_server, caplog
):
    def app():
        return _app(tiny_server.grpc_address, redis_url=redis_server.url, redis_timeout_seconds=0.2)

    one, two = app().test_client(), app().test_client()
    data = _photo(seed=21)
    first = one.post("/predict", data=data, content_type="image/png")
    shared = two.post("/predict", data=data, content_type="image/png")  # another replica
    assert (first.headers["X-Cache"], shared.headers["X-Cache"]) == ("miss", "hit")
    assert shared.json == first.json
    redis_server.stop()
    caplog.clear()
    answers = [two.post("/predict", data=data, content_type="image/png") for _ in range(3)]
    assert [(r.status_code, r.headers["X-Cache"]) for r in answers] == [(200, "miss")] * 3
    assert answers[0].json == first.json
    unavailable = [r for r in caplog.records if "prediction cache (redis) unavailable" in r.message]
    assert len(unavailable) == 1  # logged once per outage, not per request
    assert _metric(two, 'gateway_cache_errors_total{operation="get",store="redis"}') >= 1.0
    redis_server.start()
    time.sleep(5.1)  # the store is left alone for CACHE_VERSION_CHECK_SECONDS after a failure
    back = two.post("/predict", data=data, content_type="image/png")
    assert (back.status_code, back.headers["X-Cache"]) == (200, "miss")  # Redis restarted empty
    assert two.post("/predict", data=data, content_type="image/png").headers["X-Cache"] == "hit"


# ---- request ids and logs -----------------------------------------------------------------------


def test_request_ids_are_echoed_replaced_or_made(tiny_server):
    client = _app(tiny_server.grpc_address).test_client()
    plain = client.get("/health", headers={"X-Request-Id": "order-42.a:b_c"})
    assert plain.headers["X-Request-Id"] == "order-42.a:b_c"
    for bad in ("x" * 65, "two words", "ünïcode", "a\tb"):
        response = client.get("/health", headers={"X-Request-Id": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-Id"]), bad
    made = client.get("/nope")
    assert made.status_code == 404
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-Id"])


def test_a_request_id_reaches_the_model_server_log_and_every_json_log_line(tiny_server, tmp_path):
    import requests

    gateway_log = tmp_path / "gateway.log"
    env = {"SERVING_GRPC_ADDRESS": tiny_server.grpc_address, "LOG_FORMAT": "json"}
    # one image per Predict call, three in flight: calls made by the gateway's call threads
    env.update(CACHE_SIZE="0", PREDICT_CHUNK_SIZE="1", PREDICT_PARALLEL_CHUNKS="3")
    with GatewayProcess(env, log_path=gateway_log) as gateway:
        response = requests.post(
            gateway.url + "/predict",
            data=_photo(seed=5),
            headers={"Content-Type": "image/png", "X-Request-Id": "trace-me-123"},
            timeout=30,
        )
        assert response.status_code == 200
        assert response.headers["X-Request-Id"] == "trace-me-123"
        batch = requests.post(
            gateway.url + "/predict_batch",
            files=[("images", (f"{n}.png", _photo(seed=n))) for n in range(4)],
            headers={"X-Request-Id": "trace-batch-4"},
            timeout=30,
        )
        assert batch.status_code == 200
    serving_log = tiny_server.log_path.read_text().splitlines()
    serving_lines = [line for line in serving_log if "trace-me-123" in line]
    assert len(serving_lines) == 1  # one Predict call for one image
    assert "predict x-request-id=trace-me-123 status=OK" in serving_lines[0]
    batch_lines = [line for line in serving_log if "x-request-id=trace-batch-4 " in line]
    assert len(batch_lines) == 4  # four chunks of one image, three of them sent in parallel
    assert all("predict x-request-id=trace-batch-4 status=OK" in line for line in batch_lines)
    records = [
        json.loads(line) for line in gateway_log.read_text().splitlines() if line.startswith("{")
    ]
    access = [r for r in records if r["logger"] == "gateway.access"]
    mine = [r for r in access if r["request_id"] == "trace-me-123"]
    assert len(mine) == 1
    assert mine[0]["endpoint"] == "/predict"
    assert mine[0]["status"] == 200
    assert mine[0]["version"] == LATEST
    assert mine[0]["cache"] is None
    assert mine[0]["latency_ms"] > 0
    assert mine[0]["level"] == "INFO"
    assert set(mine[0]) >= {"time", "level", "logger", "message", "request_id"}
    # every log line is JSON (Flask's own " * Serving Flask app" banner is not a log record)
    lines = [x for x in gateway_log.read_text().splitlines() if x and not x.startswith(" * ")]
    assert all(line.startswith("{") for line in lines)


# ---- the nightly job's client and the limit -----------------------------------------------------


def test_the_nightly_jobs_client_waits_out_429_retry_after(tiny_server):
    from batch.gateway_client import GatewayClient

    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    env = {"SERVING_GRPC_ADDRESS": tiny_server.grpc_address, "RATE_LIMIT": "2 per 3 seconds"}
    with GatewayProcess(env) as gateway:
        client = GatewayClient(gateway.url, retries=0, backoff=0.1, sleep=sleep)
        photos = [(f"{i}.png", _photo(seed=30 + i)) for i in range(5)]
        answers = [client.predict_batch([photo]) for photo in photos]
    assert [a.predictions[0]["label"] for a in answers] == [_expected(p)[0] for _, p in photos]
    # 5 requests at 2 per 3-second window: at least two 429s, each waited out for its Retry-After
    assert len(waits) >= 2
    assert all(1 <= w <= 4 for w in waits)
